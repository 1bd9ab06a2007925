"""Shared by the encoder families beyond the paper's seven (DINOv2, I-JEPA, CLIP, SigLIP): reading their
released files in every format they are published in, and the encoder base they share.

``read_weights``: a PyTorch checkpoint (``torch.load``, memory-mapped, ``weights_only`` as the paper
encoders), a ``.safetensors`` file (Hugging Face / open_clip / timm hub files) or a TorchScript archive
(OpenAI's CLIP release: only its state dict is used; ``torch.jit.load`` runs no Python code).

``ReleasedWeightsEncoder``: a ``CheckpointEncoder`` whose model is the family's own module (not the timm
ViT that ``vit_architecture`` builds for the seven): subclasses map the file (``split``), read the
architecture off the tensors (``infer``), build the module (``build``) and run it (``run``), which returns
the tokens after the final norm and the raw block outputs with the family's ``prefix_tokens`` first and
register tokens already dropped. Loading is strict, with missing/unexpected keys reported, as the seven.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness import HarnessError

from .checkpoint_reading import is_torchscript, load_strict, read_checkpoint
from .encoder_bases import CheckpointEncoder, Split, seeded


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


def fixed_width_mlp(hidden: int):
    """An ``mlp_layer`` for timm blocks whose hidden width is the file's (``int(width * ratio)`` can round
    down, e.g. I-JEPA ViT-g's 48/11): timm's Mlp (fc1, GELU, fc2)."""
    from harness.compat import import_timm
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
    ``LayoutProblem(why)`` when the tensors are not the family's), ``build(arch) -> nn.Module`` and
    ``run(x, block_ids, final)``; with a projection ``project(tokens)``. ``self.model`` is the loaded module.
    """

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self.model: nn.Module | None = None
        self._cache: dict[tuple, torch.Tensor] = {}

    # -- subclass API ---------------------------------------------------------------------------
    def infer(self, backbone: dict) -> FamilyArch:
        raise NotImplementedError

    def build(self, arch: FamilyArch) -> nn.Module:
        raise NotImplementedError

    def run(self, x: torch.Tensor, block_ids: Sequence[int], final: bool):
        raise NotImplementedError

    # -- CheckpointEncoder hooks -------------------------------------------------------------------
    def _peek(self):
        if self._peeked is None:
            obj = read_weights(self.path, weights_only=self.opts.get("weights_only", True), expected=self.expected,
                               unpickle=self._unpickle)
            sp = self.split(obj)
            try:
                arch = self.infer(sp.backbone)
            except LayoutProblem as exc:
                raise self.wrong_layout(obj, str(exc)) from None
            self._peeked = (sp, arch)
            self.num_blocks, self.embed_dim, self.patch_size = arch.depth, arch.embed_dim, arch.patch_size
        return self._peeked

    def load(self, device: str = "cpu") -> None:
        if self.model is not None:
            self._place(device)
            return
        self._unpickle = True
        sp, arch = self._peek()
        strict = self.opts.get("strict", True)
        with seeded(0):  # a non-strict load leaves missing weights at a reproducible random init
            model = self.build(arch)
        rep = load_strict(model, sp.backbone, strict=strict, where=self.path,
                          what=f"{self.method} ({arch.describe()})")
        self.load_report = {"source": sp.source, "architecture": arch.describe(), "ignored": dict(sp.ignored),
                            "missing": rep["missing"], "unexpected": rep["unexpected"]}
        self.model = model.float()  # released fp16 tensors (OpenAI CLIP) run in float32, autocast aside
        self.arch = arch
        self._peeked = (Split(backbone={}, head=None, ignored=sp.ignored, source=sp.source), arch)
        self._place(device)

    def _place(self, device: str) -> None:
        self.device = device
        self._cache.clear()
        self.model.to(device).eval().requires_grad_(False)

    def supports(self, rep: str) -> bool:
        if not self.peek_or_defer():
            return super(CheckpointEncoder, self).supports(rep)
        if rep == "cls" and self.prefix_tokens == 0:
            return False
        if rep == "projected":
            return "projected" in self.representations
        return super(CheckpointEncoder, self).supports(rep)

    def forward(self, x: torch.Tensor, reps: Sequence[str]) -> dict:
        if self.model is None:
            raise HarnessError(f"encoder '{self.name}' is not loaded: call load(device) first "
                               "(harness.execution.Executor does it)")
        self._check_reps(reps)
        p = self.arch.patch_size
        if x.ndim != 4 or x.shape[-1] % p or x.shape[-2] % p:
            raise HarnessError(f"input of shape {tuple(x.shape)}: height and width must be multiples of the "
                               f"patch size {p}")
        block_ids = sorted(int(r.split(".", 1)[1]) for r in reps if r.startswith("block."))
        final = any(not r.startswith("block.") for r in reps)
        tokens, blocks = self.run(x, block_ids, final)
        n = self.prefix_tokens
        out = {}
        for r in reps:
            if r == "cls":
                out[r] = tokens[:, 0]
            elif r == "mean_patch":
                out[r] = tokens[:, n:].mean(dim=1)  # patch tokens only: no CLS, no registers
            elif r == "tokens":
                out[r] = tokens
            elif r == "projected":
                out[r] = self.project(tokens)
            else:
                out[r] = blocks[int(r.split(".", 1)[1])]
        return out

    def cached(self, key: tuple, make) -> torch.Tensor:
        """A per-input-size tensor (resampled position table) computed once per device."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


class LayoutProblem(Exception):
    """Raised by ``infer``: the tensors are not this family's (becomes 'not a <method> checkpoint (...)')."""
