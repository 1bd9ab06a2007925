"""The one encoder forward: every encoder, built-in or third-party, runs through ``Executor``.

Around the encoder it does, once for every caller (the feature engine, tasks that re-encode, tests): lazy
loading, device placement, normalisation on the device, the check of the representation names,
``torch.inference_mode``, autocast for the encoder's ``precision`` and the float32 outputs. Inside, the
encoder's ``forward_intermediates`` (timm's contract: final-norm tokens and raw block outputs, with the
encoder's ``prefix_tokens`` first) is the only model code; ``derive`` makes the named representations from
it (``cls``, ``mean_patch``, ``tokens``, ``block.<i>``, ``projected``, ``pooled``). Encoders that only define
``forward(x, reps)`` (the ``pixels`` baseline, plugins written before ``forward_intermediates``) are called
through the same wrapper and their outputs checked for the requested names.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .api import Encoder, HarnessError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def uses_intermediates(encoder: Encoder) -> bool:
    """True when the encoder's class defines ``forward_intermediates`` (else the executor calls ``forward``)."""
    return type(encoder).forward_intermediates is not Encoder.forward_intermediates


def block_index(rep: str) -> int | None:
    """i for ``block.<i>``, else None."""
    return int(rep.split(".", 1)[1]) if rep.startswith("block.") else None


def derive(encoder: Encoder, reps: Sequence[str], tokens: torch.Tensor | None, blocks: dict) -> dict:
    """The named representations from ``forward_intermediates``' final-norm ``tokens`` [B, prefix + N, D]
    and raw ``blocks`` {i: [B, prefix + N, D]}."""
    prefix = int(encoder.prefix_tokens)
    out = {}
    for r in reps:
        i = block_index(r)
        if i is not None:
            if i not in blocks:
                raise HarnessError(f"encoder '{encoder.name}': forward_intermediates did not return block {i}")
            out[r] = blocks[i]
            continue
        if tokens is None:
            raise HarnessError(f"encoder '{encoder.name}': forward_intermediates returned no final tokens")
        if r == "cls":
            if prefix < 1:
                raise HarnessError(f"encoder '{encoder.name}' has no CLS token (prefix_tokens 0)")
            out[r] = tokens[:, 0]
        elif r == "mean_patch":
            out[r] = tokens[:, prefix:].mean(dim=1)  # patch tokens only (CLS excluded, as the official extract())
        elif r == "tokens":
            out[r] = tokens
        elif r == "projected":
            out[r] = encoder.project(tokens)
        elif r == "pooled":
            out[r] = encoder.pool(tokens)
        else:
            raise HarnessError(f"encoder '{encoder.name}': unsupported representation '{r}'")
    return out


class Executor:
    """Runs one encoder on one device. ``executor(x, reps)`` takes a float batch that is already
    normalised, or a uint8 batch [B,3,H,W] of 0..255 pixels (normalised here, on the device, exactly as
    ``(x / 255 - mean) / std`` in float32), and returns {name: float32 tensor on the device} for ``reps``."""

    def __init__(self, encoder: Encoder, device: str = "cpu"):
        self.encoder = encoder
        self.device = torch.device(device)
        self.loaded = False
        self.forwards = 0
        precision = encoder.opts.get("precision", "fp32")
        if precision not in DTYPES:
            raise HarnessError(f"encoder '{encoder.name}': unknown precision {precision!r}")
        self.amp = None if precision == "fp32" else DTYPES[precision]
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._checked: set[tuple[str, ...]] = set()

    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.encoder.load(str(self.device))
            self.loaded = True

    def normalise(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [B,3,H,W] -> normalised float32 on the device. ``valid`` [B,2] (h, w): pixels outside
        each item's valid top-left region are padding and become 0 after normalisation (mmseg's pad)."""
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            if self._stats is None:
                o = self.encoder.opts
                self._stats = (torch.tensor(o["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1),
                               torch.tensor(o["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1))
            mean, std = self._stats
            x = (x.float().div_(255.0) - mean) / std
        if valid is not None:
            h, w = x.shape[-2:]
            valid = valid.to(self.device)
            rows = torch.arange(h, device=self.device).view(1, h, 1) < valid[:, 0].view(-1, 1, 1)
            cols = torch.arange(w, device=self.device).view(1, 1, w) < valid[:, 1].view(-1, 1, 1)
            x = x * (rows & cols).unsqueeze(1).to(x.dtype)
        return x

    def check(self, reps: Sequence[str]) -> None:
        """Every name in ``reps`` is one the encoder ``supports`` (checked once per list)."""
        key = tuple(reps)
        if key in self._checked:
            return
        enc = self.encoder
        bad = [r for r in reps if not enc.supports(r)]
        if bad:
            n = f" ({enc.num_blocks} blocks)" if enc.num_blocks is not None else ""
            raise HarnessError(f"encoder '{enc.name}': unsupported representation(s) {', '.join(bad)}; "
                               f"available: {', '.join(enc.representations)}{n}")
        self._checked.add(key)

    def _run(self, x: torch.Tensor, reps: list[str]) -> dict:
        enc = self.encoder
        if not uses_intermediates(enc):
            if type(enc).forward is Encoder.forward:
                raise HarnessError(f"encoder '{enc.name}' ({type(enc).__name__}) defines neither "
                                   f"forward_intermediates nor forward")
            out = enc.forward(x, reps)
            missing = [r for r in reps if r not in out]
            if missing:
                raise HarnessError(f"encoder '{enc.name}' did not return representation(s) {', '.join(missing)}")
            return out
        p = enc.patch_size
        if x.ndim != 4 or (p and (x.shape[-1] % p or x.shape[-2] % p)):
            raise HarnessError(f"encoder '{enc.name}': input of shape {tuple(x.shape)}: height and width must be "
                               f"multiples of the patch size {p}")
        indices = sorted({i for i in map(block_index, reps) if i is not None})
        final = any(block_index(r) is None for r in reps)
        tokens, blocks = enc.forward_intermediates(x, indices, final=final)
        return derive(enc, reps, tokens, blocks)

    def __call__(self, x: torch.Tensor, reps: Sequence[str], valid: torch.Tensor | None = None) -> dict:
        reps = list(reps)
        self.ensure_loaded()
        self.check(reps)  # after loading: a file read only by load() (weights_only: false) decides 'projected'
        x = self.normalise(x, valid) if (x.dtype == torch.uint8 or valid is not None) else \
            x.to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self._run(x, reps)
        self.forwards += int(x.shape[0])
        return {r: out[r].float() for r in reps}


def encode(encoder: Encoder, x: torch.Tensor, reps: Sequence[str], device: str = "cpu") -> dict:
    """One forward through a fresh executor (for notebooks and tests; runs reuse one executor)."""
    return Executor(encoder, device)(x, reps)
