"""CLIP ViT-B/16 image tower (OpenAI and OpenCLIP weights), built and run with the ``open_clip`` library.

Files:
  OpenAI's released ``ViT-B-16.pt`` (``https://openaipublic.azureedge.net/clip/models/5806e77c.../ViT-B-16.pt``),
      a TorchScript archive: only its state dict is read (OpenAI key names, partly float16: run in float32
      as ``open_clip.load_openai_model(precision='fp32')``); QuickGELU.
  OpenCLIP ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors`` (Hugging Face repos such as
      ``laion/CLIP-ViT-B-16-laion2B-s34B-b88K``), the same key names; also open_clip training checkpoints
      (``{'state_dict': {'module.visual...'}}``). The activation is not in the weights: QuickGELU or GELU
      comes from the ``open_clip_config.json`` published next to the file (``model_cfg.quick_gelu``), else
      the ``quick_gelu`` option must say it (open_clip's ``ViT-B-16`` = false, ``ViT-B-16-quickgelu`` = true).
Read: ``visual.*`` (``class_embedding``, ``positional_embedding`` [1+g*g, D], ``conv1.weight``, ``ln_pre``,
``transformer.resblocks.<i>.*``, ``ln_post``, ``proj`` [D, E]); the text tower, ``logit_scale`` and the
archive's ``input_resolution``/``context_length``/``vocab_size`` are ignored and reported. The architecture
(width, depth, patch, grid, MLP ratio, layer scale, embedding width) is read off the tensors; heads =
width/64 (``num_heads`` overrides). Not supported: open_clip towers from timm (``visual.trunk.*``: see the
siglip encoder) and attention-pooled (CoCa) towers.

Forward as open_clip's ``VisionTransformer``: conv patch embedding, class embedding first, position
embedding, ``ln_pre``, residual blocks, ``ln_post`` on every token. ``cls`` = ``ln_post`` of the class
token, ``mean_patch`` = mean of ``ln_post`` of the patch tokens, ``projected`` = ``cls @ proj``, the image
embedding CLIP contrasts with text (not L2-normalised). Other input sizes: the position table is resampled as
open_clip's ``resize_pos_embed`` does when a model is built for another image size (bicubic, antialiased,
``align_corners=False``, class slot kept). Default normalisation: OpenAI's CLIP mean/std (also what
open_clip uses for these models).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness.api import HarnessError, Option, hookimpl

from .checkpoint_reading import count_by_prefix, is_state_dict, is_torchscript
from .encoder_bases import Split
from .vit_architecture import LayoutError, capture_blocks
from .weight_files import FamilyArch, ReleasedWeightsEncoder, check_heads, resample_grid

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
RELEASED_HEADS = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}  # B, L, H (80), g (88), bigG (104)


def import_open_clip():
    """open_clip (imports timm/torchvision: the compat fix runs first), or a one-line install hint."""
    from harness.api import import_timm

    import_timm()
    try:
        import open_clip
    except ImportError as exc:
        raise HarnessError("the clip encoder needs the open_clip library: "
                           "pip install -c constraints.txt open_clip_torch") from exc
    return open_clip


class CLIP(ReleasedWeightsEncoder):
    """CLIP ViT image tower (OpenAI archive or OpenCLIP file); projected = the image embedding."""

    method = "CLIP"
    pretraining = "language-image"
    representations = ("cls", "mean_patch", "tokens", "blocks", "projected")
    expected = ("a CLIP ViT file: OpenAI's ViT-B-16.pt (TorchScript archive) or OpenCLIP's "
                "open_clip_pytorch_model.bin / open_clip_model.safetensors (keys 'visual.class_embedding', "
                "'visual.conv1.weight', 'visual.transformer.resblocks.<i>.*', 'visual.proj')")
    options = {
        "mean": Option(list, list(OPENAI_MEAN), "per-channel normalisation mean (CLIP's)"),
        "std": Option(list, list(OPENAI_STD), "per-channel normalisation std (CLIP's)"),
        "quick_gelu": Option(bool, None, "QuickGELU (OpenAI-trained weights) or GELU; default: true for OpenAI's "
                                         "TorchScript archive, else open_clip_config.json's model_cfg.quick_gelu",
                             nullable=True),
    }

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self._activation: tuple[bool, str] | None = None

    # -- file --------------------------------------------------------------------------------------
    def activation(self) -> tuple[bool, str]:
        """(quick_gelu, where that came from)."""
        if self._activation is None:
            opt = self.opts.get("quick_gelu")
            cfg = Path(self.path).with_name("open_clip_config.json")
            if opt is not None:
                self._activation = (bool(opt), "option quick_gelu")
            elif is_torchscript(self.path):
                self._activation = (True, "OpenAI TorchScript archive")
            elif cfg.is_file():
                try:
                    model_cfg = json.loads(cfg.read_text())["model_cfg"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise HarnessError(f"{cfg}: not an open_clip config (no 'model_cfg' mapping: "
                                       f"{type(exc).__name__})") from exc
                self._activation = (bool(model_cfg.get("quick_gelu", False)), str(cfg))
            else:
                raise HarnessError(f"{self.path}: the activation is not stored in CLIP weights and no "
                                   f"open_clip_config.json lies next to the file: set the encoder option "
                                   f"'quick_gelu: true' (OpenAI-trained weights, open_clip's *-quickgelu "
                                   f"models) or 'quick_gelu: false' (e.g. open_clip's ViT-B-16 LAION-2B)")
        return self._activation

    def split(self, obj) -> Split:
        source = "state dict (raw)"
        other: list[str] = []
        sd = obj
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            sd, source, other = obj["state_dict"], "checkpoint['state_dict']", [k for k in obj if k != "state_dict"]
        if not is_state_dict(sd):
            raise self.wrong_layout(obj, "no state dict of a CLIP model")
        if all(k.startswith("module.") for k in sd):
            sd, source = {k[len("module."):]: v for k, v in sd.items()}, source + ", prefix 'module.'"
        if any(k.startswith("visual.trunk.") for k in sd):
            raise self.wrong_layout(obj, "its image tower is a timm model 'visual.trunk.*' (SigLIP-style: use the "
                                         "siglip encoder)")
        if not all(k in sd for k in ("visual.class_embedding", "visual.conv1.weight", "visual.proj")):
            raise self.wrong_layout(obj, "no 'visual.class_embedding'/'visual.conv1.weight'/'visual.proj'")
        visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
        ignored = count_by_prefix([k for k in sd if not k.startswith("visual.")])
        ignored.update({f"checkpoint['{k}']": 1 for k in other})
        return Split(backbone=visual, ignored=ignored, source=source + " -> 'visual.*'")

    def infer(self, sd: dict) -> FamilyArch:
        w, pos = sd["conv1.weight"], sd.get("positional_embedding")
        if w.ndim != 4 or not isinstance(pos, torch.Tensor) or pos.ndim != 2:
            raise LayoutError("'visual.conv1.weight' / 'visual.positional_embedding' have unexpected shapes")
        width, p = int(w.shape[0]), int(w.shape[-1])
        depth = 0
        while f"transformer.resblocks.{depth}.ln_1.weight" in sd:
            depth += 1
        g = math.isqrt(pos.shape[0] - 1)
        if not depth or g * g != pos.shape[0] - 1:
            raise LayoutError("no residual blocks or a position table that is not 1 + a square grid")
        fc = sd.get("transformer.resblocks.0.mlp.c_fc.weight")
        quick_gelu, why = self.activation()
        extra = {"output_dim": int(sd["proj"].shape[1]),
                 "mlp_ratio": (fc.shape[0] / width) if isinstance(fc, torch.Tensor) else 4.0,
                 "layer_scale": "transformer.resblocks.0.ls_1.gamma" in sd,
                 "ln_pre": "ln_pre.weight" in sd,
                 "act": "quick_gelu" if quick_gelu else "gelu", "act_from": why}
        heads = check_heads(self.path, width, self.opts.get("num_heads"), RELEASED_HEADS)
        return FamilyArch("clip", width, depth, heads, p, (g, g), extra)

    def identity(self) -> dict:
        ident = super().identity()
        ident["activation"] = "quick_gelu" if self.activation()[0] else "gelu"  # may come from a side file
        return ident

    # -- model -------------------------------------------------------------------------------------
    def build(self, arch: FamilyArch) -> nn.Module:
        open_clip = import_open_clip()
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        e = arch.extra
        cfg = CLIPVisionCfg(layers=arch.depth, width=arch.embed_dim, head_width=arch.embed_dim // arch.num_heads,
                            mlp_ratio=e["mlp_ratio"], patch_size=arch.patch_size,
                            image_size=arch.grid[0] * arch.patch_size, ls_init_value=1.0 if e["layer_scale"] else None,
                            no_ln_pre=not e["ln_pre"])
        visual = _build_vision_tower(e["output_dim"], cfg, quick_gelu=e["act"] == "quick_gelu", cast_dtype=None)
        if not isinstance(visual, open_clip.transformer.VisionTransformer) or visual.attn_pool is not None \
                or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise HarnessError(f"{self.path}: open_clip built an unsupported image tower ({type(visual).__name__})")
        return visual

    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pe, g = self.model.positional_embedding, self.arch.grid
        if (gh, gw) == g:
            return pe
        return self.cached(("pos", gh, gw, pe.device, pe.dtype), lambda: torch.cat(
            [pe[:1], resample_grid(pe[None, 1:], g, (gh, gw), size=(gh, gw), mode="bicubic", antialias=True,
                                   align_corners=False)[0]], dim=0))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        m = self.model
        t = m.conv1(x)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        cls = m.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
        t = m.ln_pre(torch.cat([cls, t], dim=1) + self.pos_embed(gh, gw).to(t.dtype))
        t, blocks = capture_blocks(m.transformer.resblocks, t, indices, final)
        return (m.ln_post(t) if final else None), blocks

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] @ self.model.proj.to(tokens.dtype)


@hookimpl
def register_encoders(register):
    register("clip", CLIP)
