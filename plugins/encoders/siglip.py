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

Activation (not in the weights): SigLIP was trained and published with GELU's tanh approximation (big_vision's
``nn.gelu``; transformers' SigLIP configs: ``hidden_act: gelu_pytorch_tanh``) in the blocks and the MAP head,
while timm's (and so open_clip's) SigLIP 1 definitions build exact GELU. It is taken from a ``config.json``
next to the file that states it (transformers' ``hidden_act`` / ``vision_config.hidden_act``, timm's
``model_args.act_layer``), else the published tanh approximation; option ``activation`` overrides. open_clip's
``open_clip_config.json`` names only the timm tower, not the trained activation, so it is not used.

There is no CLS token: ``prefix_tokens`` is 0, ``tokens``/``block.<i>`` are the patch tokens (after the
final norm / raw), ``mean_patch`` their mean, and ``projected`` = the attention-pool head's output on the
final-norm tokens, the image embedding SigLIP's sigmoid loss compares with text (open_clip's
``encode_image`` without normalisation). Other input sizes: timm's own ``dynamic_img_size`` resampling of the
position table (bicubic, antialiased). Default normalisation: mean = std = 0.5, as SigLIP's preprocessing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness.api import HarnessError, Option, hookimpl
from harness.api import import_timm

from .checkpoint_reading import count_by_prefix, is_state_dict
from .encoder_bases import Split
from .vit_architecture import timm_intermediates
from .weight_files import FamilyArch, ReleasedWeightsEncoder, check_heads, vit_shapes

OPEN_CLIP_PREFIX = "visual.trunk."
ACTIVATIONS = ("gelu_tanh", "gelu")  # timm act_layer names
#: a config's activation name -> timm's (transformers spells the tanh approximation three ways)
CONFIG_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
                      "gelu_tanh": "gelu_tanh", "gelu": "gelu"}
RELEASED_HEADS = {768: 12, 1024: 16, 1152: 16, 1536: 16}  # B, L, SO400M, giant-opt


def published_activation(path: str, option: str | None) -> tuple[str, str]:
    """(timm act_layer, where it came from): the option, else a ``config.json`` next to the weights that states
    it (transformers' ``hidden_act``, timm's ``model_args.act_layer``), else SigLIP's published tanh GELU."""
    if option is not None:
        return option, "option activation"
    cfg = Path(path).with_name("config.json")
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{cfg}: not a readable JSON config ({type(exc).__name__}: {exc})") from None
        key, value = None, None
        if isinstance(data, dict) and "model_type" in data:  # transformers: SiglipConfig or SiglipVisionConfig
            vision = data.get("vision_config")
            key, section = ("vision_config.hidden_act", vision) if isinstance(vision, dict) else ("hidden_act", data)
            value = section.get("hidden_act")
        elif isinstance(data, dict) and isinstance(data.get("model_args"), dict):  # timm hub config
            key, value = "model_args.act_layer", data["model_args"].get("act_layer")
        if value is not None:
            if value not in CONFIG_ACTIVATIONS:
                raise HarnessError(f"{cfg}: {key} is {value!r}; expected one of {', '.join(CONFIG_ACTIVATIONS)} "
                                   f"(or set the encoder option 'activation')")
            return CONFIG_ACTIVATIONS[value], f"{cfg.name} {key}"
    return "gelu_tanh", "published"


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
        "activation": Option(str, None, "GELU of the blocks and the MAP head: gelu_tanh (SigLIP as published) or gelu "
                                        "(exact: timm's/open_clip's SigLIP 1 definitions); default: a config.json "
                                        "next to the file that states it, else gelu_tanh",
                             nullable=True, choices=list(ACTIVATIONS)),
    }
    version = "2"  # the published tanh-approximated GELU (version 1 ran timm's exact GELU)

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self._activation: tuple[str, str] | None = None

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

    def activation(self) -> tuple[str, str]:
        """(timm act_layer of the blocks and the MAP head, where that came from), cached."""
        if self._activation is None:
            self._activation = published_activation(self.path, self.opts.get("activation"))
        return self._activation

    def infer(self, sd: dict) -> FamilyArch:
        v = vit_shapes(sd, cls_slot=False)
        heads = check_heads(self.path, v.width, self.opts.get("num_heads"), RELEASED_HEADS)
        act, why = self.activation()
        return FamilyArch("siglip", v.width, v.depth, heads, v.patch, (v.grid, v.grid),
                          {"mlp_hidden": v.mlp_hidden, "timm": self.opts["model"], "act": act, "act_from": why})

    def identity(self) -> dict:
        ident = super().identity()
        ident["activation"] = self.activation()[0]  # may come from a config file next to the weights
        return ident

    def build(self, arch: FamilyArch) -> nn.Module:
        timm = import_timm()
        name = self.opts["model"]
        if not timm.is_model(name):
            from harness.api import did_you_mean
            raise HarnessError(f"encoder '{self.name}': unknown timm model '{name}'"
                               f"{did_you_mean(name, timm.list_models('*siglip*'))}")
        model = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=arch.grid[0] * arch.patch_size,
            patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
            # timm builds int(width * ratio) hidden units (blocks and MAP head): +0.5 makes that the file's width
            mlp_ratio=(arch.extra["mlp_hidden"] + 0.5) / arch.embed_dim, act_layer=arch.extra["act"],
            dynamic_img_size=True)
        if getattr(model, "cls_token", None) is not None or getattr(model, "attn_pool", None) is None:
            raise HarnessError(f"encoder '{self.name}': timm model '{name}' is not a SigLIP tower "
                               f"(no CLS token, attention-pool head)")
        if int(model.blocks[0].mlp.fc1.out_features) != arch.extra["mlp_hidden"]:
            raise HarnessError(f"{self.path}: MLP width {arch.extra['mlp_hidden']} cannot be built by timm "
                               f"'{name}' with width {arch.embed_dim}")
        return model

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        return timm_intermediates(self.model, x, indices, final)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(tokens, pre_logits=True)


@hookimpl
def register_encoders(register):
    register("siglip", SigLIP)
