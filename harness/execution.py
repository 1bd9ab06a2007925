"""The one execution wrapper around ``Encoder.forward``: lazy loading, device placement, normalisation on
the device, inference mode and autocast for the encoder's ``precision``.

Encoders stay pure functions of a normalised batch already on their device; everything else happens here,
once, for every caller (the feature engine, tasks that re-encode, tests).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .api import Encoder, HarnessError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Executor:
    """Runs one encoder on one device. ``executor(x, reps)`` takes a float batch that is already
    normalised, or a uint8 batch [B,3,H,W] of 0..255 pixels (normalised here, on the device, exactly as
    ``(x / 255 - mean) / std`` in float32), and returns float32 tensors on the device."""

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

    def __call__(self, x: torch.Tensor, reps: Sequence[str], valid: torch.Tensor | None = None) -> dict:
        self.ensure_loaded()
        x = self.normalise(x, valid) if (x.dtype == torch.uint8 or valid is not None) else \
            x.to(self.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.encoder.forward(x, list(reps))
        missing = [r for r in reps if r not in out]
        if missing:
            raise HarnessError(f"encoder '{self.encoder.name}' did not return representation(s) "
                               f"{', '.join(missing)}")
        self.forwards += int(x.shape[0])
        return {k: v.float() for k, v in out.items()}


def encode(encoder: Encoder, x: torch.Tensor, reps: Sequence[str], device: str = "cpu") -> dict:
    """One forward through a fresh executor (for notebooks and tests; runs reuse one executor)."""
    return Executor(encoder, device)(x, reps)
