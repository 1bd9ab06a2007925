"""SigLIP ViT-B/16 image tower (Zhai et al. 2023), timm's SigLIP architecture, from timm or open_clip files.

Files:
  timm layout: ``model.safetensors`` / ``pytorch_model.bin`` of ``timm/vit_base_patch16_siglip_224.webli``
      (or ``.v2_webli``): ``patch_embed.proj.*``, ``pos_embed`` [1,196,D] (no CLS token), ``blocks.<i>.*``,
      ``norm.*`` and the attention-pool head ``attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}``.
  open_clip layout: ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors`` of
      ``timm/ViT-B-16-SigLIP`` (open_clip's ``ViT-B-16-SigLIP`` = that timm model as ``visual.trunk``, no
      extra projection): ``visual.trunk.*`` is read; the text tower ``text.*``, ``logit_scale`` and
      ``logit_bias`` are ignored and reported.
The model is ``timm.create_model(model)`` (default ``vit_base_patch16_siglip_224``: no CLS token, MAP
attention-pool head, LayerNorm eps 1e-6) with width, depth, patch, grid and MLP width read off the tensors;
heads = width/64 (``num_heads`` overrides; SO400M's 1152 wide towers use 16).

There is no CLS token: ``prefix_tokens`` is 0, ``tokens``/``block.<i>`` are the patch tokens (after the
final norm / raw), ``mean_patch`` their mean, and ``projected`` = the attention-pool head's output on the
final-norm tokens, the image embedding SigLIP's sigmoid loss compares with text (open_clip's
``encode_image`` without normalisation). Other input sizes: timm's own ``dynamic_img_size`` resampling of the
position table (bicubic, antialiased). Default normalisation: mean = std = 0.5, as SigLIP's preprocessing.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from harness import HarnessError, Option, hookimpl
from harness.compat import import_timm

from .checkpoint_reading import count_by_prefix, is_state_dict
from .encoder_bases import Split
from .weight_files import FamilyArch, LayoutProblem, ReleasedWeightsEncoder, check_heads

OPEN_CLIP_PREFIX = "visual.trunk."
RELEASED_HEADS = {768: 12, 1024: 16, 1152: 16, 1536: 16}  # B, L, SO400M, giant-opt


class SigLIP(ReleasedWeightsEncoder):
    """SigLIP image tower (timm or open_clip file); projected = the attention-pool (MAP) head output."""

    method = "SigLIP"
    pretraining = "language-image"
    prefix_tokens = 0
    representations = ("mean_patch", "tokens", "blocks", "projected")
    expected = ("a SigLIP image tower: timm's vit_*_siglip_* weights (patch_embed, pos_embed, blocks, norm, "
                "attn_pool.latent; no cls_token) or open_clip's ViT-B-16-SigLIP file (the same keys under "
                "'visual.trunk.')")
    options = {
        "mean": Option(list, [0.5, 0.5, 0.5], "per-channel normalisation mean (SigLIP's)"),
        "std": Option(list, [0.5, 0.5, 0.5], "per-channel normalisation std (SigLIP's)"),
        "model": Option(str, "vit_base_patch16_siglip_224", "timm SigLIP architecture (its fixed choices: no CLS, "
                                                            "MAP head, ...); sizes are read off the weights"),
    }

    def split(self, obj) -> Split:
        if not is_state_dict(obj):
            raise self.wrong_layout(obj, "not a state dict")
        if any(k.startswith(OPEN_CLIP_PREFIX) for k in obj):
            backbone = {k[len(OPEN_CLIP_PREFIX):]: v for k, v in obj.items() if k.startswith(OPEN_CLIP_PREFIX)}
            rest = [k for k in obj if not k.startswith(OPEN_CLIP_PREFIX)]
            source = f"open_clip state dict, prefix '{OPEN_CLIP_PREFIX}'"
        else:
            backbone, rest, source = dict(obj), [], "timm state dict (raw)"
        if "attn_pool.latent" not in backbone:
            raise self.wrong_layout(obj, "no attention-pool head 'attn_pool.latent'")
        return Split(backbone=backbone, ignored=count_by_prefix(rest), source=source)

    def infer(self, sd: dict) -> FamilyArch:
        w, pos = sd.get("patch_embed.proj.weight"), sd.get("pos_embed")
        if not isinstance(w, torch.Tensor) or w.ndim != 4 or not isinstance(pos, torch.Tensor) or pos.ndim != 3:
            raise LayoutProblem("no 'patch_embed.proj.weight'/'pos_embed'")
        if "cls_token" in sd:
            raise LayoutProblem("it has a 'cls_token'")
        dim, p = int(w.shape[0]), int(w.shape[-1])
        depth = 0
        while f"blocks.{depth}.norm1.weight" in sd:
            depth += 1
        g = math.isqrt(pos.shape[1])
        if not depth or g * g != pos.shape[1]:
            raise LayoutProblem("no blocks or 'pos_embed' is not a square grid of patch positions")
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0]) if "blocks.0.mlp.fc1.weight" in sd else 4 * dim
        heads = check_heads(self.path, dim, self.opts.get("num_heads"), RELEASED_HEADS)
        return FamilyArch("siglip", dim, depth, heads, p, (g, g), {"mlp_hidden": hidden, "timm": self.opts["model"]})

    def build(self, arch: FamilyArch) -> nn.Module:
        timm = import_timm()
        name = self.opts["model"]
        if not timm.is_model(name):
            from harness.plugins import did_you_mean
            raise HarnessError(f"encoder '{self.name}': unknown timm model '{name}'"
                               f"{did_you_mean(name, timm.list_models('*siglip*'))}")
        model = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=arch.grid[0] * arch.patch_size,
            patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
            # timm builds int(width * ratio) hidden units (blocks and MAP head): +0.5 makes that the file's width
            mlp_ratio=(arch.extra["mlp_hidden"] + 0.5) / arch.embed_dim, dynamic_img_size=True)
        if getattr(model, "cls_token", None) is not None or getattr(model, "attn_pool", None) is None:
            raise HarnessError(f"encoder '{self.name}': timm model '{name}' is not a SigLIP tower "
                               f"(no CLS token, attention-pool head)")
        if int(model.blocks[0].mlp.fc1.out_features) != arch.extra["mlp_hidden"]:
            raise HarnessError(f"{self.path}: MLP width {arch.extra['mlp_hidden']} cannot be built by timm "
                               f"'{name}' with width {arch.embed_dim}")
        return model

    def run(self, x: torch.Tensor, block_ids: Sequence[int], final: bool):
        ids = sorted(block_ids)
        m = self.model
        if not ids:
            return m.forward_features(x), {}
        out = m.forward_intermediates(x, indices=ids, norm=False, output_fmt="NLC",
                                      intermediates_only=not final, stop_early=not final)
        tokens, inter = (None, out) if not final else out
        return tokens, dict(zip(ids, inter))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(tokens, pre_logits=True)


@hookimpl
def register_encoders(register):
    register("siglip", SigLIP)
