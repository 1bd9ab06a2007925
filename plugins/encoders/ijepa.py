"""I-JEPA (facebookresearch/ijepa): ViT-H/14 at 224 trained 300 epochs on ImageNet-1k, and the other
released full checkpoints (ViT-H/16 at 448, ViT-H/14 and ViT-g/16 on ImageNet-22k).

File: ``IN1K-vit.h.14-300e.pth.tar`` from ``https://dl.fbaipublicfiles.com/ijepa/``, the training
checkpoint ``{'encoder', 'predictor', 'target_encoder', 'opt', 'scaler', 'epoch', 'loss', 'batch_size',
'world_size', 'lr'}``; each network a DistributedDataParallel state dict (``module.`` prefix).
``encoder`` (the context encoder) is read by default, as timm's I-JEPA models do; ``network:
target_encoder`` reads the EMA target encoder. Encoder keys: ``patch_embed.proj.*`` (patch 14),
``pos_embed`` [1,256,D] (fixed 2-D sin-cos, **no CLS slot**), ``blocks.<i>.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}``, ``norm.*``; LayerNorm eps 1e-6, q/k/v bias, GELU; heads as the released
models (ViT-H and ViT-g: 16, i.e. head width 80 and 88; ``num_heads`` overrides).

There is no CLS token: ``prefix_tokens`` is 0, ``tokens`` and ``block.<i>`` hold the patch tokens only,
``mean_patch`` is their mean after the final norm (the global pool of timm's I-JEPA models: average, no
extra norm) and there is no ``cls`` (probes need ``representation: mean_patch``).
Other input sizes: the authors' ``interpolate_pos_encoding`` assumes a CLS slot that this model does not
have and fails for any grid but the trained one, so the table is resampled here bicubically to the target
size (``align_corners=False``, no antialias; timm's I-JEPA models would antialias).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn

from harness.api import Option, hookimpl
from harness.api import import_timm

from .checkpoint_reading import is_state_dict
from .encoder_bases import Split
from .vit_architecture import capture_blocks
from .weight_files import (FamilyArch, ReleasedWeightsEncoder, check_heads, fixed_width_mlp, resample_grid,
                           vit_shapes)

_NETWORKS = ("encoder", "target_encoder")
# heads of the released encoders (src/models/vision_transformer.py): ViT-H 1280 and ViT-g 1408 use 16
RELEASED_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


class IJEPA(ReleasedWeightsEncoder):
    """I-JEPA context (default) or target encoder from the released training checkpoint; no CLS token."""

    method = "I-JEPA"
    pretraining = "masked image modelling"
    prefix_tokens = 0
    representations = ("mean_patch", "tokens", "blocks")
    expected = ("the I-JEPA file IN1K-vit.h.14-300e.pth.tar (a dict with 'encoder', 'predictor', "
                "'target_encoder' state dicts under 'module.', ViT keys without cls_token)")
    options = {
        "network": Option(str, "encoder", "which network of the file: encoder (context encoder, as timm) or "
                                          "target_encoder (EMA)", choices=list(_NETWORKS)),
    }

    def split(self, obj) -> Split:
        net = self.opts.get("network", "encoder")
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), dict) for k in _NETWORKS):
            raise self.wrong_layout(obj, "no 'encoder'/'target_encoder' state dicts")
        sd = obj[net]
        if not is_state_dict(sd):
            raise self.wrong_layout(obj, f"checkpoint['{net}'] is not a state dict")
        prefix = "module." if all(k.startswith("module.") for k in sd) else ""
        backbone = {k[len(prefix):]: v for k, v in sd.items()}
        ignored = {f"checkpoint['{k}']": 1 for k in obj if k != net}
        return Split(backbone=backbone, ignored=ignored, source=f"checkpoint['{net}'], prefix '{prefix}'")

    def infer(self, sd: dict) -> FamilyArch:
        v = vit_shapes(sd, cls_slot=False)
        heads = check_heads(self.path, v.width, self.opts.get("num_heads"), RELEASED_HEADS)
        return FamilyArch("ijepa", v.width, v.depth, heads, v.patch, (v.grid, v.grid), {"mlp_hidden": v.mlp_hidden})

    def build(self, arch: FamilyArch) -> nn.Module:
        import_timm()
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=arch.grid[0] * arch.patch_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
            depth=arch.depth, num_heads=arch.num_heads, mlp_layer=fixed_width_mlp(arch.extra["mlp_hidden"]),
            qkv_bias=True, class_token=False, global_pool="avg", fc_norm=False, num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=1e-6))

    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pe, g = self.model.pos_embed, self.arch.grid
        if (gh, gw) == g:
            return pe
        return self.cached(("pos", gh, gw, pe.device, pe.dtype),
                           lambda: resample_grid(pe, g, (gh, gw), size=(gh, gw), mode="bicubic",
                                                 align_corners=False))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        m = self.model
        t = m.patch_embed.proj(x)
        gh, gw = t.shape[-2:]
        t, blocks = capture_blocks(m.blocks, t.flatten(2).transpose(1, 2) + self.pos_embed(gh, gw), indices, final)
        return (m.norm(t) if final else None), blocks


@hookimpl
def register_encoders(register):
    register("ijepa", IJEPA)
