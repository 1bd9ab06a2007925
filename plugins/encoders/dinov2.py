"""DINOv2 ViT-S/B/L/g/14 (facebookresearch/dinov2), with and without registers.

Files (backbone only, a raw state dict, as ``torch.hub`` loads them strictly into ``DinoVisionTransformer``):
  ``dinov2_vit{s,b,l,g}14_pretrain.pth`` and ``dinov2_vit{s,b,l,g}14_reg4_pretrain.pth``
  from ``https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s,b,l,g}14/``.
Keys: ``cls_token`` [1,1,D], ``pos_embed`` [1,1+37*37,D] (trained at 518 px), ``register_tokens`` [1,4,D]
(reg4 files), ``mask_token`` [1,D] (iBOT masking during training; unused here, reported as ignored),
``patch_embed.proj.*`` (patch 14), ``blocks.<i>.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}`` (ViT-g: SwiGLU ``mlp.w12``/``mlp.w3``), ``norm.*``. LayerNorm eps 1e-6, q/k/v bias,
layer scale, heads = width/64 (S 6, B 12, L 16, g 24).

Forward as ``prepare_tokens_with_masks``: patch embedding, CLS first, position embedding added to CLS and
patches, then the register tokens inserted right after CLS (they carry no position), blocks, final norm.
Registers are dropped from ``tokens`` and ``block.<i>`` (CLS first, then the patches) and never enter
``mean_patch``. Part crops at 224 give a 16x16 grid: the 37x37 table is resampled as DINOv2's own
``interpolate_pos_encoding`` with the hub's settings for each file: without registers
``interpolate_offset=0.1`` (bicubic with ``scale_factor=(rows+0.1)/37, (cols+0.1)/37``, no antialias, the
kludge kept from DINO for the released models), with registers ``interpolate_offset=0`` and
``interpolate_antialias=True`` (bicubic to the target size, antialiased). The options override both.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.api import Option, hookimpl
from harness.api import import_timm

from .checkpoint_reading import is_state_dict
from .encoder_bases import Split
from .vit_architecture import LayoutError, capture_blocks, drop_tokens
from .weight_files import (FamilyArch, ReleasedWeightsEncoder, check_heads, fixed_width_mlp, resample_grid,
                           vit_shapes)


class SwiGLUFFN(nn.Module):
    """DINOv2's packed SwiGLU (ViT-g): ``w12`` -> halves a, b -> ``w3(silu(a) * b)``."""

    def __init__(self, in_features: int, hidden: int, **_):
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden)
        self.w3 = nn.Linear(hidden, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class DinoV2Model(nn.Module):
    """The released parameters under their released names; blocks are timm ``Block``s (same key names)."""

    def __init__(self, arch: FamilyArch):
        super().__init__()
        import_timm()
        from timm.models.vision_transformer import Block

        d, p = arch.embed_dim, arch.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + arch.grid[0] * arch.grid[1], d))
        regs = arch.extra["registers"]
        self.register_tokens = nn.Parameter(torch.zeros(1, regs, d)) if regs else None
        hidden = arch.extra["mlp_hidden"]
        mlp = partial(SwiGLUFFN, hidden=hidden) if arch.extra["ffn"] == "swiglu" else fixed_width_mlp(hidden)
        self.blocks = nn.ModuleList([
            Block(d, arch.num_heads, qkv_bias=True, init_values=1.0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                  mlp_layer=mlp)
            for _ in range(arch.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)


class DINOv2(ReleasedWeightsEncoder):
    """DINOv2 backbone (ViT-S/B/L/g/14, with or without registers) from its released *_pretrain.pth."""

    method = "DINOv2"
    pretraining = "contrastive + masked image modelling"
    representations = ("cls", "mean_patch", "tokens", "blocks")
    expected = ("a DINOv2 backbone file dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth (a raw state dict with "
                "cls_token, pos_embed, mask_token, layer-scale blocks 'blocks.<i>.ls1.gamma', norm)")
    options = {
        "interpolate_offset": Option(float, None, "DINOv2's position-table resampling offset (default: 0.1 "
                                                  "without registers, 0 with, as the hub models)", nullable=True),
        "interpolate_antialias": Option(bool, None, "antialiased bicubic resampling (default: false without "
                                                    "registers, true with, as the hub models)", nullable=True),
    }

    def split(self, obj) -> Split:
        if not is_state_dict(obj):
            raise self.wrong_layout(obj, "not a raw state dict")
        if "mask_token" not in obj or "cls_token" not in obj:
            raise self.wrong_layout(obj, "no 'mask_token'/'cls_token'")
        sd = dict(obj)
        sd.pop("mask_token")
        return Split(backbone=sd, ignored={"mask_token": 1}, source="state dict (raw)")

    def infer(self, sd: dict) -> FamilyArch:
        if "blocks.0.0.norm1.weight" in sd:
            raise LayoutError("block-chunked blocks 'blocks.<chunk>.<i>.*' (a training file; the released "
                              "backbones are not chunked)")
        v = vit_shapes(sd, cls_slot=True)
        if "blocks.0.ls1.gamma" not in sd:
            raise LayoutError("no layer scale 'blocks.0.ls1.gamma'")
        if "blocks.0.mlp.w12.weight" in sd:
            ffn, hidden = "swiglu", int(sd["blocks.0.mlp.w3.weight"].shape[1])
        else:
            ffn, hidden = "mlp", v.mlp_hidden
        regs = int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0
        heads = check_heads(self.path, v.width, self.opts.get("num_heads"))
        offset = self.opts.get("interpolate_offset")
        antialias = self.opts.get("interpolate_antialias")
        extra = {"registers": regs, "ffn": ffn, "mlp_hidden": hidden,
                 "interpolate_offset": (0.0 if regs else 0.1) if offset is None else float(offset),
                 "interpolate_antialias": bool(regs) if antialias is None else bool(antialias)}
        return FamilyArch("dinov2", v.width, v.depth, heads, v.patch, (v.grid, v.grid), extra)

    def build(self, arch: FamilyArch) -> nn.Module:
        return DinoV2Model(arch)

    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pe, m = self.model.pos_embed, self.arch.grid[0]
        if (gh, gw) == (m, m):
            return pe
        offset, antialias = self.arch.extra["interpolate_offset"], self.arch.extra["interpolate_antialias"]

        def make():
            if offset:  # DINOv2's kludge: the scale factor, not the size, decides the sampling positions
                interp = dict(scale_factor=(float(gh + offset) / m, float(gw + offset) / m))
            else:
                interp = dict(size=(gh, gw))
            patch = resample_grid(pe[:, 1:], (m, m), (gh, gw), mode="bicubic", antialias=antialias, **interp)
            return torch.cat([pe[:, :1], patch], dim=1)
        return self.cached(("pos", gh, gw, pe.device, pe.dtype), make)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        m = self.model
        t = m.patch_embed.proj(x)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([m.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1) + self.pos_embed(gh, gw)
        r = 0 if m.register_tokens is None else m.register_tokens.shape[1]
        if r:
            t = torch.cat([t[:, :1], m.register_tokens.expand(t.shape[0], -1, -1).to(t.dtype), t[:, 1:]], dim=1)
        t, blocks = capture_blocks(m.blocks, t, indices, final)
        blocks = {i: drop_tokens(b, 1, r) for i, b in blocks.items()}  # registers dropped, CLS kept
        return (drop_tokens(m.norm(t), 1, r) if final else None), blocks


@hookimpl
def register_encoders(register):
    register("dinov2", DINOv2)
