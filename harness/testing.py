"""Test helpers for partbench and plugin authors: a real TaskContext over given samples or features.

    from harness.testing import FakeContext
    ctx = FakeContext(encoder, samples={"train": s_tr, "test": s_te}, out_dir=tmp_path)
    result = MyTask("t", **opts).run(ctx)

Features are computed by the real executor and feature cache (a private temporary cache unless
``cache_dir`` is given), or taken from ``arrays={split: {rep: array}}``; ``requested`` lists every
``features`` call as (split or view label, reps, transform).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from .api import Dataset, Encoder, HarnessError, Samples
from .cache import FeatureCache
from .context import UnitContext
from .features import FeatureEngine


class StubEncoder(Encoder):
    """An encoder without a model, for contexts whose features are given as arrays."""

    def __init__(self, name: str = "enc", representations: Sequence[str] = ("cls", "mean_patch"), **opts):
        super().__init__(name, **{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "batch_size": 64, "precision": "fp32", **opts})
        self.representations = tuple(representations)

    def load(self, device: str = "cpu") -> None:
        pass

    def forward(self, x, reps):
        raise HarnessError(f"encoder '{self.name}' is a stub: give its features as arrays")


class StubDataset(Dataset):
    """A dataset whose splits are given Samples."""

    def __init__(self, name: str = "toy", samples: dict | None = None, **opts):
        super().__init__(name, **opts)
        self.given = dict(samples or {})
        self.splits = tuple(self.given) or ("all",)

    def load(self, split: str) -> Samples:
        if split not in self.given:
            raise HarnessError(f"dataset '{self.name}' has no split '{split}' (has: {', '.join(self.given)})")
        return self.given[split]


class FakeContext(UnitContext):
    def __init__(self, encoder: Encoder | None = None, dataset: Dataset | None = None, *,
                 samples: dict | None = None, arrays: dict | None = None, out_dir=None, task=None,
                 device: str = "cpu", seed: int = 0, cache_dir=None, workers: int = 0):
        if encoder is None:
            reps = sorted({r for by_rep in (arrays or {}).values() for r in by_rep}) or ["cls", "mean_patch"]
            encoder = StubEncoder("enc", reps)
        if dataset is None:
            dataset = StubDataset("toy", samples)
        self._tmp = None
        if cache_dir is None or out_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="harness-fake-")
        root = Path(self._tmp.name) if self._tmp else None
        cache = FeatureCache(cache_dir or root / "cache")
        engine = FeatureEngine(cache, device, workers=workers, show_progress=False)
        for split, s in (samples or {}).items():
            engine._samples[(id(dataset), split)] = s
        out = Path(out_dir) if out_dir is not None else root / "out"
        if out_dir is None:
            out.mkdir(parents=True)
        super().__init__(engine, encoder, dataset, task, out, seed)
        self.arrays = arrays
        self.requested: list[tuple] = []

    def features(self, source, reps: Sequence[str], transform: str = "resize:224") -> dict:
        label = source if isinstance(source, str) else (source.view or type(source).__name__)
        self.requested.append((label, tuple(reps), transform))
        if self.arrays is not None and label in self.arrays:
            missing = [r for r in reps if r not in self.arrays[label]]
            if missing:
                raise HarnessError(f"FakeContext: no arrays for {missing} of '{label}'")
            return {r: self.arrays[label][r] for r in reps}
        return super().features(source, reps, transform)


def check_resample(task, produced: dict, metrics=None) -> dict:
    """Check a task's bootstrap contract on what its ``run`` returned: ``per_item`` holds ``items``, and
    ``task.resample`` on the identity resample (one row of ones) gives exactly the reported value of every
    metric it returns, and of every one of ``metrics`` (default: the task's headline metrics). Returns the
    values; raises AssertionError naming each mismatch."""
    import numpy as np

    from .bootstrap import same_value

    per_item = {k: np.asarray(v) for k, v in (produced.get("per_item") or {}).items()}
    assert "items" in per_item, "per_item has no 'items' (the keys of the resampled items)"
    values = task.resample(per_item, np.ones((1, len(per_item["items"])), np.int32))
    wanted = list(task.headline if metrics is None else metrics)
    missing = [m for m in wanted if m in produced["metrics"] and m not in values]
    assert not missing, f"resample does not recompute {missing}"
    bad = {m: (float(v[0]), produced["metrics"][m]) for m, v in values.items()
           if m in produced["metrics"] and not same_value(float(v[0]), produced["metrics"][m])}
    assert not bad, f"identity resample differs from the metrics (statistic, metric): {bad}"
    return {m: float(v[0]) for m, v in values.items()}
