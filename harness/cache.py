"""Content-addressed feature cache for frozen encoders.

One ``.npy`` file per (encoder identity, dataset identity, split, item fingerprint, transform,
representation). Files are written to a temporary name and renamed into place, so a killed run never
leaves a partial entry under a real key; stale temporaries are ignored and swept.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

CACHE_VERSION = 1
_TMP = ".tmp-"


def default_cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "partbench" / "features"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key(self, **identity) -> str:
        identity = {"cache_version": CACHE_VERSION, **identity}
        return hashlib.sha256(_canonical(identity).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, mmap: bool = True):
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return np.load(p, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError):
            return None  # unreadable entry (e.g. disk trouble): treat as a miss and rewrite

    def open_writer(self, key: str, shape: tuple, dtype, meta: dict) -> "_Writer":
        return _Writer(self, key, shape, dtype, meta)

    def sweep_stale(self, older_than_s: float = 3600) -> int:
        """Remove temporaries of killed runs (older than an hour, so concurrent runs are safe)."""
        n, now = 0, time.time()
        if not self.root.is_dir():
            return 0
        for p in self.root.glob(f"*/{_TMP}*"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    n += 1
            except OSError:
                pass
        return n


class _Writer:
    """Streams rows into a memory-mapped temporary file; ``commit`` renames it into place."""

    def __init__(self, cache: FeatureCache, key: str, shape: tuple, dtype, meta: dict):
        self.final = cache.path(key)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f"{_TMP}{os.getpid()}-{key}.npy"
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=shape)
        self.meta = meta

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start:start + len(rows)] = rows

    def commit(self) -> None:
        self.array.flush()
        del self.array
        meta_tmp = self.final.with_suffix(f".json{_TMP}{os.getpid()}")
        meta_tmp.write_text(json.dumps(self.meta, indent=1, default=str))
        os.replace(meta_tmp, self.final.with_suffix(".json"))
        os.replace(self.tmp, self.final)  # the .npy appearing is what makes the entry exist

    def abort(self) -> None:
        try:
            del self.array
        except AttributeError:
            pass
        try:
            self.tmp.unlink()
        except OSError:
            pass
