"""One rank's rows of a cache entry under torchrun, written as a plain .npy beside the cache entries; rank 0
concatenates the ranks' files in rank order into the entry."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .api import HarnessError
from .cache import FeatureCache, writer_tag
from .io import io_error


class ShardWriter:
    """One rank's rows of one cache entry, written as a plain .npy next to the cache entries."""

    def __init__(self, cache: FeatureCache, key: str, rank: int, shape: tuple, dtype):
        self.path, self.shape, self.dtype = self.path_of(cache, key, rank), shape, np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": shape})
        self.rows = 0

    @staticmethod
    def path_of(cache: FeatureCache, key: str, rank: int) -> Path:
        """Named like the cache's temporaries (writer domain and pid first), so a dead rank's shards are swept
        and an interrupted rank removes its own; rank 0 learns the other ranks' paths from them."""
        return cache.root / key[:2] / f".tmp-{writer_tag()}-{key}.rank{rank}.npy"

    def write(self, start: int, rows: np.ndarray) -> None:
        if start != self.rows:
            raise HarnessError(f"{self.path}: rows must be written in order (got row {start}, expected {self.rows})")
        try:
            self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        except OSError as exc:
            self.abort()
            raise io_error(self.path, exc, "writing a feature shard") from None
        self.rows += len(rows)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def remove(self) -> None:
        """Close and delete the file (after rank 0 assembled the entry, or when the extraction failed)."""
        self.close()
        self.path.unlink(missing_ok=True)

    abort = remove
