"""The dense-feature data path of the dense tasks (``dense_task.DenseHeadTask``: linear_seg, linear_pose).

They read raw block outputs (``block.<i>``, no final norm; or the final-norm ``tokens``) of windows or crops
of their images at 1/patch of the input size, K representations concatenated to K*D channels:

- ``DerivedSamples``: a Samples whose items are rendered from a base split's items (slide windows of a
  resized image, affine person crops), optionally flipped; its fingerprint covers the base split and the
  geometry, so the feature cache keys it exactly.
- ``DenseMaps``: the cached fp16 token maps of one such view as [B, K*D, h, w] float32 batches on the
  device, resident (read once) when they fit a memory budget, else read per batch from the memory maps.
- ``tokens_to_maps``: the same maps from streamed (re-encoded, not cached) encoder outputs.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from harness.api import HarnessError, Samples

#: arrays up to this many bytes (as stored, fp16) are moved to the device once
RESIDENT_BYTES = 2 << 30


class DerivedSamples(Samples):
    """Items rendered from a base split: item i is ``render(base_image, geometry[i])`` of base item
    ``source[i]`` (flipped horizontally when ``flip[i]``). The base image is decoded (and optionally
    prepared, e.g. resized) once for consecutive items of the same source."""

    CACHE = 2

    def __init__(self, base: Samples, source: Sequence[int], geometry: np.ndarray, flip: Sequence[bool],
                 render: Callable[[Image.Image, np.ndarray], Image.Image], view: str,
                 prepare: Callable[[int, Image.Image], Image.Image] | None = None):
        keys = [f"{base.keys[s]}@{'f' if f else ''}{'/'.join(f'{v:g}' for v in g)}"
                for s, g, f in zip(source, geometry, flip)]
        super().__init__(keys, np.zeros(len(keys), np.int64), base.classes, dict(base.summary))
        self.base, self.source = base, np.asarray(source, dtype=np.int64)
        self.geometry = np.asarray(geometry, dtype=np.float64).reshape(len(keys), -1)
        self.flip = np.asarray(flip, dtype=bool)
        self.render, self.prepare, self.view = render, prepare, view
        self._cache: OrderedDict = OrderedDict()

    def _base_image(self, s: int) -> Image.Image:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        img = self.base.image(s)
        if self.prepare is not None:
            img = self.prepare(s, img)
        self._cache[s] = img
        while len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)
        return img

    def image(self, i: int) -> Image.Image:
        img = self.render(self._base_image(int(self.source[i])), self.geometry[i])
        return img.transpose(Image.FLIP_LEFT_RIGHT) if self.flip[i] else img

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.base.fingerprint().encode())
        h.update(self.view.encode())
        for a in (self.source.astype("<i8"), self.geometry.astype("<f8"), self.flip.astype("u1")):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def __getstate__(self):  # data-loader workers get a fresh decode cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


class DenseMaps:
    """Token maps of K blocks of one view as float32 [B, K*D, h, w] batches on ``device``.

    ``arrays``: name -> [N, prefix + h*w, D] (fp16 memory maps from the feature cache), concatenated in
    the order of ``names``; the ``prefix`` leading tokens (CLS) are dropped, patch tokens are row-major."""

    def __init__(self, arrays: dict, names: Sequence[str], grid: tuple[int, int], prefix: int, device,
                 resident_bytes: int = RESIDENT_BYTES):
        self.arrays = [arrays[n] for n in names]
        self.names, self.prefix = list(names), int(prefix)
        self.h, self.w = grid
        self.device = torch.device(device)
        n, t, _ = self.arrays[0].shape
        for name, a in zip(self.names, self.arrays):
            if a.ndim != 3 or a.shape[0] != n or a.shape[1] != self.prefix + self.h * self.w:
                raise HarnessError(f"features '{name}' have shape {tuple(a.shape)}; expected [{n}, "
                                   f"{self.prefix}+{self.h}x{self.w}, D] token maps")
        self.n = n
        self.channels = sum(a.shape[2] for a in self.arrays)
        self.nbytes = sum(a.size * a.itemsize for a in self.arrays)
        self.resident = None
        if self.nbytes <= resident_bytes:
            self.resident = self._read(np.arange(n)).to(self.device, torch.float16)

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """fp16 [B, K*D, h, w] on the CPU (rows read in sorted order, returned in ``idx`` order)."""
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        parts = [torch.from_numpy(np.ascontiguousarray(a[rows][:, self.prefix:])) for a in self.arrays]
        x = torch.cat(parts, dim=2)  # [B, h*w, K*D]
        out = torch.empty_like(x)
        out[torch.from_numpy(order)] = x
        return out.transpose(1, 2).reshape(len(idx), self.channels, self.h, self.w)

    def batch(self, idx) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        if self.resident is not None:
            return self.resident[torch.from_numpy(idx).to(self.device)].float()
        return self._read(idx).to(self.device, non_blocking=True).float()


def tokens_to_maps(out: dict, names: Sequence[str], grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """Streamed encoder outputs (name -> [B, prefix + h*w, D]) as [B, K*D, h, w], rounded through fp16
    exactly as the cache stores them, so streamed and cached training see the same numbers."""
    h, w = grid
    x = torch.cat([out[n][:, prefix:].half().float() for n in names], dim=2)
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
