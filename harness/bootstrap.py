"""Bootstrap confidence intervals and paired comparisons from per-item data; knows no task by name.

A task that can be resampled returns ``per_item`` arrays from ``run`` (among them ``items``: the keys of the n
items its headline metric averages over: queries, test items, images) and implements
``Task.resample(per_item, counts) -> {metric: values}``: the metric recomputed for each row of ``counts``, an
int32 matrix [b, n] saying how often each item is drawn in each of b resamples (an all-ones row is the data
itself, and must give the reported metric exactly: the runner checks it on every unit).

The resamples of a unit are drawn from the spec's seed and the keys of its items: never from the encoder, so every
encoder of a (task, dataset) is scored on the same resamples, and so is any other result on the same items (e.g.
the same dataset under retrieval of another representation): two such results are paired by construction (their
difference's interval is the percentile interval of the replicate differences). They
come in blocks of ``BLOCK`` rows, each block from its own seed, so a block never holds more than BLOCK x n
counts in memory, and the draws do not depend on how many blocks are used.

By image (spec ``bootstrap_by: image``): items drawn from the same source image (the part crops of one image,
the objects of one image) are not independent, so the resamples draw whole images instead. A task passes
``clusters`` among its per-item arrays (an id per item: its image, ``Samples.clusters()``); the counts are drawn
over the m images and each item gets its image's count, so a task's ``resample`` sees item counts as before (and
the all-ones row is still the data itself). The cluster ids enter the resample key.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import numpy as np

DEFAULT_RESAMPLES = 1000
BLOCK = 100
LEVEL = 0.95
METHOD = "percentile bootstrap"
#: where the replicates of a metric are stored in the unit's per-item npz
PREFIX = "bootstrap/"


def resample_key(seed: int, items, resamples: int, clusters: np.ndarray | None = None) -> str:
    """Names the resamples of a unit from the seed, the item keys (in order), B and the items' cluster indices
    when drawn by cluster: equal keys, equal resamples (the pairing of two results rests on it)."""
    h = hashlib.sha256(f"{int(seed)}\t{int(resamples)}\t{len(items)}\n".encode())
    for k in items:
        h.update(f"{k}\n".encode())
    if clusters is not None:
        h.update(b"clusters\n" + np.ascontiguousarray(clusters, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def cluster_index(clusters) -> np.ndarray:
    """Cluster ids (any values, one per item) as indices 0..m-1, numbered in the sorted order of the ids."""
    return np.unique(np.asarray(clusters), return_inverse=True)[1].astype(np.int64).reshape(-1)


def count_blocks(key: str, n: int, resamples: int) -> Iterator[np.ndarray]:
    """The unit's resamples as int32 count matrices [b, n] (b = BLOCK, the last block the rest)."""
    base = [int(key[i:i + 8], 16) for i in range(0, 16, 8)]
    for k, start in enumerate(range(0, resamples, BLOCK)):
        b = min(BLOCK, resamples - start)
        rng = np.random.default_rng([*base, k])
        idx = rng.integers(0, n, size=(b, n))
        idx += np.arange(b)[:, None] * n  # row r's draws counted in bins r*n .. r*n + n - 1
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.int32)


class Resampler:
    """The count blocks of the units of a run, drawn once per item set and reused for every encoder (kept while
    they fit in ``budget`` bytes; beyond that they are drawn again, identically)."""

    def __init__(self, seed: int, resamples: int, budget: int = 256 << 20, by: str = "item"):
        self.seed, self.resamples, self.budget, self.by = int(seed), int(resamples), budget, by
        self._kept: dict[str, list[np.ndarray]] = {}
        self._bytes = 0

    def key(self, items, clusters: np.ndarray | None = None) -> str:
        return resample_key(self.seed, items, self.resamples, clusters)

    def blocks(self, key: str, n: int, clusters: np.ndarray | None = None) -> list[np.ndarray] | Iterator[np.ndarray]:
        """Count blocks [b, n]; with ``clusters`` (indices 0..m-1 per item) drawn over the m clusters and
        expanded to their items."""
        if key in self._kept:
            return self._kept[key]
        if clusters is None:
            drawn = count_blocks(key, n, self.resamples)
        else:
            drawn = (blk[:, clusters] for blk in count_blocks(key, int(clusters.max()) + 1, self.resamples))
        size = self.resamples * n * 4
        if self._bytes + size > self.budget:
            return drawn
        self._kept[key] = list(drawn)
        self._bytes += size
        return self._kept[key]


def seed_mean(values: list) -> np.ndarray:
    """The mean over seeds, summed in seed order: the same operations for a metric and for its replicates,
    so that the mean of the seeds' statistics on the identity resample equals the mean of their metrics."""
    total = np.asarray(values[0], dtype=np.float64)
    for v in values[1:]:
        total = total + np.asarray(v, dtype=np.float64)
    return total / len(values)


def replicates(resample: Callable, per_seed: list[dict], blocks) -> dict[str, np.ndarray]:
    """{metric: float64 [B]}: ``resample`` applied to every block of counts, for each seed's per-item arrays,
    averaged over the seeds."""
    out: dict[str, list] = {}
    for counts in blocks:
        by_seed = [resample(arrays, counts) for arrays in per_seed]
        for metric in by_seed[0]:
            out.setdefault(metric, []).append(seed_mean([np.asarray(s[metric], np.float64) for s in by_seed]))
    return {m: np.concatenate(v) for m, v in out.items()}


def identity(resample: Callable, per_seed: list[dict], n: int) -> dict[str, float]:
    """The statistics on the data itself (one all-ones row of counts), averaged over the seeds."""
    return {m: float(v[0]) for m, v in replicates(resample, per_seed, [np.ones((1, n), np.int32)]).items()}


def interval(values: np.ndarray) -> list[float] | None:
    """The percentile interval at LEVEL of bootstrap replicates (NaN replicates left out), or None."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    tail = 100.0 * (1.0 - LEVEL) / 2
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def same_value(a, b) -> bool:
    """Equal as numbers, NaN and None (a metric written as null) counting as equal to each other."""
    missing = lambda v: v is None or (isinstance(v, float) and np.isnan(v))  # noqa: E731
    return (missing(a) and missing(b)) or (not missing(a) and not missing(b) and float(a) == float(b))
