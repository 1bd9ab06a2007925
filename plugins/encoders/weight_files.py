"""Shared by the encoder families beyond the paper's seven (DINOv2, I-JEPA, CLIP, SigLIP): reading their
released files in every format they are published in, and the encoder base they share.

``read_weights``: a PyTorch checkpoint (``torch.load``, memory-mapped, ``weights_only`` as the paper
encoders), a ``.safetensors`` file (Hugging Face / open_clip / timm hub files) or a TorchScript archive
(OpenAI's CLIP release: only its state dict is used; ``torch.jit.load`` runs no Python code).

``ReleasedWeightsEncoder``: a ``CheckpointEncoder`` whose model is the family's own module (not the timm
ViT that ``vit_architecture`` builds for the seven): subclasses map the file (``split``), read the
architecture off the tensors (``infer``), build the module (``build``) and run it
(``forward_intermediates``: the tokens after the final norm and the raw block outputs with the family's
``prefix_tokens`` first and register tokens already dropped). Loading is strict, with missing/unexpected
keys reported, as the seven.
"""
from __future__ import annotations

import math
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness.api import HarnessError

from .checkpoint_reading import is_torchscript, read_checkpoint
from .encoder_bases import CheckpointEncoder
from .vit_architecture import LayoutError


def read_weights(path: str, *, weights_only: bool = True, expected: str = "a checkpoint",
                 unpickle: bool = True) -> Any:
    """The object a released weight file holds: a dict (checkpoint or state dict) for torch and safetensors
    files, the state dict of a TorchScript archive. One-line errors naming the file."""
    path = str(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        except OSError as exc:
            raise HarnessError(f"{path}: cannot open checkpoint ({exc.strerror or exc})") from exc
        except Exception as exc:  # noqa: BLE001 - a corrupt header is one user-facing line
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise HarnessError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {msg}); "
                               f"expected {expected}") from exc
    if zipfile.is_zipfile(path) and is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; the release is still one
                warnings.simplefilter("ignore", DeprecationWarning)
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise HarnessError(f"{path}: not a readable TorchScript archive ({type(exc).__name__}: {msg}); "
                               f"expected {expected}") from exc
    return read_checkpoint(path, weights_only=weights_only, expected=expected, unpickle=unpickle)


@dataclass
class FamilyArch:
    """What a family's ``infer`` read off the tensors (the facts every family shares, plus ``extra``)."""

    family: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    grid: tuple[int, int]  # patches per side (rows, cols) of the position table
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        more = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (f"{self.family} d={self.embed_dim} depth={self.depth} heads={self.num_heads} "
                f"patch={self.patch_size} grid={self.grid[0]}x{self.grid[1]}" + (f" {more}" if more else ""))


def check_heads(where: str, dim: int, num_heads: int | None, released: dict[int, int] | None = None) -> int:
    """``num_heads`` (invisible in the weights): the option, else the family's released models' count for
    this width (``released``: width -> heads), else width // 64."""
    heads = num_heads or (released or {}).get(dim) or max(dim // 64, 1)
    if dim % heads:
        raise HarnessError(f"{where}: width {dim} is not divisible by num_heads={heads}")
    return heads


@dataclass
class VitShapes:
    """What the tensors of a timm-named ViT state dict say (``vit_shapes``)."""

    width: int
    patch: int
    depth: int
    grid: int  # patches per side of the position table
    mlp_hidden: int  # rows of blocks.0.mlp.fc1 (4 * width without one, e.g. DINOv2's SwiGLU)


def vit_shapes(sd: dict, *, cls_slot: bool) -> VitShapes:
    """Width, patch, depth, grid and MLP width of a state dict with ``patch_embed.proj.weight``,
    ``blocks.<i>.norm1.weight`` and a square ``pos_embed`` [1, (1 +) g*g, D] (``cls_slot``: a CLS row first;
    without one a ``cls_token`` is refused). LayoutError naming what is not so."""
    w, pos = sd.get("patch_embed.proj.weight"), sd.get("pos_embed")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise LayoutError("no patch embedding 'patch_embed.proj.weight'")
    if not cls_slot and "cls_token" in sd:
        raise LayoutError("it has a 'cls_token'")
    depth = 0
    while f"blocks.{depth}.norm1.weight" in sd:
        depth += 1
    if not depth:
        raise LayoutError("no transformer blocks 'blocks.<i>.norm1.weight'")
    slots = int(pos.shape[1]) - int(cls_slot) if isinstance(pos, torch.Tensor) and pos.ndim == 3 else 0
    g = math.isqrt(max(slots, 0))
    if not g or g * g != slots:
        raise LayoutError(f"'pos_embed' is not {'1 + ' if cls_slot else ''}a square grid of patch positions")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    width = int(w.shape[0])
    return VitShapes(width, int(w.shape[-1]), depth, g, int(fc1.shape[0]) if isinstance(fc1, torch.Tensor) else 4 * width)


def fixed_width_mlp(hidden: int):
    """An ``mlp_layer`` for timm blocks whose hidden width is the file's (``int(width * ratio)`` can round
    down, e.g. I-JEPA ViT-g's 48/11): timm's Mlp (fc1, GELU, fc2)."""
    from harness.api import import_timm
    import_timm()
    from timm.layers import Mlp

    def make(in_features: int, act_layer=nn.GELU, bias=True, **_):
        return Mlp(in_features, hidden_features=hidden, act_layer=act_layer, bias=bias)
    return make


def resample_grid(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int], **interp) -> torch.Tensor:
    """[1, old_h*old_w, D] position table -> [1, new_h*new_w, D] with ``F.interpolate(**interp)`` in float32
    (the caller names the family's rule: mode, size or scale_factor, antialias)."""
    d = table.shape[-1]
    grid = table.float().reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    out = nn.functional.interpolate(grid, **interp)
    if tuple(out.shape[-2:]) != tuple(new):
        raise HarnessError(f"position-embedding resampling gave a {tuple(out.shape[-2:])} grid, expected {new}")
    return out.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d).to(table.dtype)


class ReleasedWeightsEncoder(CheckpointEncoder):
    """Base of the DINOv2 / I-JEPA / CLIP / SigLIP plugins (see the module docstring).

    Subclasses implement ``split(obj) -> Split`` (keys already named as ``build``'s module expects them;
    raise ``self.wrong_layout(obj, why)`` for another layout), ``infer(backbone) -> FamilyArch`` (raise
    ``LayoutError(why)`` when the tensors are not the family's), ``build(arch) -> nn.Module`` and
    ``forward_intermediates(x, indices, final)``; with a projection ``project(tokens)``. ``self.model`` is
    the loaded module.
    """

    def read(self) -> Any:
        return read_weights(self.path, weights_only=self.opts.get("weights_only", True), expected=self.expected,
                            unpickle=self._unpickle)

    def infer(self, backbone: dict) -> FamilyArch:
        raise NotImplementedError

    def build(self, arch: FamilyArch) -> nn.Module:
        raise NotImplementedError

    def wrap(self, model: nn.Module, arch: FamilyArch) -> None:
        return None  # the family's forward_intermediates runs self.model

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        raise NotImplementedError
