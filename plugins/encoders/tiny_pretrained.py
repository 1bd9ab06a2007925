"""Tiny pretrained ViTs (``tiny_pretrained``): three 4-block, 192-wide ViTs (patch 16, 64 x 64 input)
pretrained on CPU on ``synthetic_parts kind: objects`` images by ``pretrain/tiny.py``, whose weights ship
with partbench (``tiny_weights/``, fp16 safetensors, with the command that reproduces them bit for bit).

``method``: ``supervised`` (object-class cross-entropy), ``contrastive`` (two-crop InfoNCE with a projection
head, offered as ``projected``) or ``mim`` (MAE pixel reconstruction). They let the demo ask the paper's
question without GPUs or downloads: what each pretraining objective does to object- vs part-level features.
They are toys (a few minutes of CPU on 4k synthetic images), not stand-ins for the paper's models.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from harness.api import HarnessError, Option, hookimpl

from .checkpoint_reading import check_state_dict, list_keys
from .encoder_bases import FileWeights, TokenEncoder, seeded
from .vit_architecture import Arch, Backbone, build_model

IMAGE_SIZE = 64
ARCH = Arch(family="vit", embed_dim=192, depth=4, num_heads=3, patch_size=16, grid=IMAGE_SIZE // 16, mlp_ratio=4.0,
            ln_eps=1e-6)
#: method -> how the paper groups it (``Encoder.pretraining``)
METHODS = {"supervised": "supervised", "contrastive": "contrastive", "mim": "masked image modelling"}
WEIGHTS_DIR = Path(__file__).parent / "tiny_weights"
PROJECTION_DIM = 128


def build_projection_head() -> nn.Module:
    """The contrastive model's projection head on the CLS token (192 -> 512 -> LN -> GELU -> 128)."""
    return nn.Sequential(nn.Linear(ARCH.embed_dim, 512), nn.LayerNorm(512), nn.GELU(), nn.Linear(512, PROJECTION_DIM))


class TinyPretrained(FileWeights, TokenEncoder):
    """One of the three tiny ViTs pretrained by ``pretrain/tiny.py``."""

    options = {
        "method": Option(str, help="pretraining objective: supervised, contrastive or mim", choices=list(METHODS)),
        "weights": Option(str, None, "safetensors file written by pretrain/tiny.py (default: the shipped "
                                     "tiny_weights/<method>.safetensors)", nullable=True, path="file"),
    }

    def __init__(self, name: str, **opts):
        super().__init__(name, **opts)
        self.method = self.opts["method"]
        self.pretraining = METHODS[self.method]
        self.arch = ARCH
        self.num_blocks, self.embed_dim, self.patch_size = ARCH.depth, ARCH.embed_dim, ARCH.patch_size
        self.representations = ("cls", "mean_patch", "tokens", "blocks") + (
            ("projected",) if self.method == "contrastive" else ())
        self.head: nn.Module | None = None

    @property
    def path(self) -> Path:
        return Path(self.opts.get("weights") or WEIGHTS_DIR / f"{self.method}.safetensors")

    def validate(self) -> None:
        self._header()  # a missing, foreign or other-method file fails at spec validation

    def _header(self) -> dict:
        """The file's ``partbench`` metadata entry (JSON written by pretrain/tiny.py), checked."""
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        if not self.path.is_file():
            raise HarnessError(f"encoder '{self.name}': weights file {self.path} not found "
                               f"(make it with: python pretrain/tiny.py --out {self.path.parent})")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                raw = (f.metadata() or {}).get("partbench")
        except (SafetensorError, OSError) as exc:
            raise HarnessError(f"{self.path}: not a readable safetensors file ({exc})") from None
        try:
            meta = json.loads(raw) if raw else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or "method" not in meta:
            raise HarnessError(f"{self.path}: no 'partbench' metadata entry naming the method: not a file "
                               "written by pretrain/tiny.py")
        if meta["method"] != self.method:
            raise HarnessError(f"{self.path}: weights of method {meta['method']!r}, but the encoder asks for "
                               f"method {self.method!r}")
        return meta

    def load(self, device: str = "cpu") -> None:
        if self.backbone is None:
            from safetensors.torch import load_file

            meta = self._header()
            sd = {k: v.float() for k, v in load_file(str(self.path)).items()}
            head_sd = {k[len("head."):]: sd.pop(k) for k in list(sd) if k.startswith("head.")}
            with seeded(0):
                model = build_model(ARCH)
            self._load_exactly(model, sd, f"tiny {self.method} backbone")
            if self.method == "contrastive":
                head = build_projection_head()
                self._load_exactly(head, head_sd, "tiny contrastive projection head (head.*)")
                self.head = head.eval().requires_grad_(False)
            elif head_sd:
                raise HarnessError(f"{self.path}: unexpected projection head (head.*) in a {self.method} file")
            self.backbone = Backbone(model, ARCH)
            self.load_report = {"source": str(self.path), "architecture": ARCH.describe(),
                                "pretraining": meta, "missing": [], "unexpected": []}
        self._place(device)
        if self.head is not None:
            self.head.to(device)

    def _load_exactly(self, module: nn.Module, sd: dict, what: str) -> None:
        """Every key present with its shape, nothing else (these files are ours: no lenient mode)."""
        report = check_state_dict(module, sd, strict=False, where=str(self.path), what=what)
        bad = [f"{kind} keys: {list_keys(report[kind])}" for kind in ("missing", "unexpected") if report[kind]]
        if bad:
            raise HarnessError(f"{self.path}: {what}: " + "; ".join(bad))
        module.load_state_dict(sd)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return super().project(tokens)
        return self.head(tokens[:, 0])


@hookimpl
def register_encoders(register):
    register("tiny_pretrained", TinyPretrained)
