"""Weight-free baseline encoders: a seeded random ViT and raw pixels (no download; they serve the demo).

``random_vit``: a timm ViT of any size with timm's default random initialisation under a fixed seed.
  Default is a tiny 4-block, 192-wide ViT/16 that runs fast on a CPU. Same outputs as the checkpoint
  encoders (cls / mean_patch / tokens after the final norm, raw block.i), position embedding
  interpolated for inputs other than ``img_size``.
``pixels``: the (normalised) pixels themselves.
  cls = mean_patch = the image area-averaged to ``grid`` x ``grid`` and flattened (3*grid^2 values,
  channel-major); tokens = one vector per ``patch_size`` x ``patch_size`` patch (3*patch_size^2 values,
  channel-major, row-major patch order) with the mean of the patch vectors first in the CLS slot. There is
  no CLS token and there are no blocks; note that tokens and cls have different widths.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from harness.api import Encoder, HarnessError, Option, hookimpl
from harness.api import import_timm

from .encoder_bases import TokenEncoder, seeded, with_defaults
from .vit_architecture import Arch, Backbone, build_model


def _positive(v):
    return None if v > 0 else "must be > 0"


class RandomViT(TokenEncoder):
    """Randomly initialised ViT (seeded, timm init): a weight-free lower bound."""

    options = {
        "patch_size": Option(int, 16, "patch size in pixels", check=_positive),
        "embed_dim": Option(int, 192, "token width", check=_positive),
        "depth": Option(int, 4, "number of transformer blocks", check=_positive),
        "num_heads": Option(int, 3, "attention heads (must divide embed_dim)", check=_positive),
        "mlp_ratio": Option(float, 4.0, "MLP hidden width / embed_dim", check=_positive),
        "img_size": Option(int, 224, "resolution of the learned position embedding (other input sizes "
                                     "interpolate it)", check=_positive),
        "seed": Option(int, 0, "seed of the random initialisation"),
    }

    def __init__(self, name: str, **opts):
        super().__init__(name, **opts)
        o = self.opts
        if o["embed_dim"] % o["num_heads"]:
            raise HarnessError(f"encoder '{name}': embed_dim {o['embed_dim']} is not divisible by "
                               f"num_heads {o['num_heads']}")
        if o["img_size"] % o["patch_size"]:
            raise HarnessError(f"encoder '{name}': img_size {o['img_size']} is not a multiple of "
                               f"patch_size {o['patch_size']}")
        self.num_blocks = o["depth"]
        self.embed_dim, self.patch_size = o["embed_dim"], o["patch_size"]
        self.arch = Arch(family="vit", embed_dim=o["embed_dim"], depth=o["depth"], num_heads=o["num_heads"],
                         patch_size=o["patch_size"], grid=o["img_size"] // o["patch_size"],
                         mlp_ratio=float(o["mlp_ratio"]), ln_eps=1e-6)

    def identity(self) -> dict:
        ident = super().identity()
        # the weights are a function of the seed *and* of timm's/torch's init code
        ident["timm"] = import_timm().__version__
        ident["torch"] = torch.__version__
        return ident

    def load(self, device: str = "cpu") -> None:
        if self.backbone is None:
            with seeded(self.opts["seed"]):
                self.backbone = Backbone(build_model(self.arch), self.arch)
        self._place(device)


class Pixels(Encoder):
    """Raw pixels: downsampled image (cls/mean_patch) and per-patch pixel vectors (tokens)."""

    representations = ("cls", "mean_patch", "tokens")
    num_blocks = 0
    options = {
        "grid": Option(int, 8, "cls/mean_patch: the image area-averaged to grid x grid (3*grid^2 values)",
                       check=_positive),
        "patch_size": Option(int, 16, "tokens: one 3*patch_size^2 pixel vector per patch", check=_positive),
    }

    def __init__(self, name: str, **opts):
        super().__init__(name, **with_defaults(type(self), opts))
        self.device = "cpu"
        self.patch_size = self.opts["patch_size"]

    def load(self, device: str = "cpu") -> None:
        self.device = device

    def forward(self, x: torch.Tensor, reps: Sequence[str]) -> dict:
        # forward, not forward_intermediates: cls/mean_patch pool the image at another resolution than the tokens
        out = {}
        if "cls" in reps or "mean_patch" in reps:
            g = self.opts["grid"]
            if x.shape[-1] < g or x.shape[-2] < g:
                raise HarnessError(f"encoder '{self.name}': input {tuple(x.shape[-2:])} smaller than grid {g}")
            small = F.adaptive_avg_pool2d(x, g).flatten(1)
            for r in ("cls", "mean_patch"):
                if r in reps:
                    out[r] = small
        if "tokens" in reps:
            p = self.opts["patch_size"]
            if x.shape[-1] % p or x.shape[-2] % p:
                raise HarnessError(f"encoder '{self.name}': input {tuple(x.shape[-2:])} is not a multiple of "
                                   f"patch_size {p}")
            patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # [B, N, 3*p*p]
            out["tokens"] = torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1)
        return out


@hookimpl
def register_encoders(register):
    register("random_vit", RandomViT)
    register("pixels", Pixels)
