"""What a task of one unit sees: the ``TaskContext`` of ``harness.api`` over the run's feature engine."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import transforms
from .api import Dataset, Encoder, Samples, TaskContext
from .features import FeatureEngine
from .progress import progress


class UnitContext(TaskContext):
    """What a task of one unit sees (see ``harness.api.TaskContext``)."""

    def __init__(self, engine: FeatureEngine, encoder: Encoder, dataset: Dataset, task, out_dir: Path,
                 seed: int = 0, log: Callable[[str], None] | None = None):
        self.engine, self.encoder, self.dataset, self.task = engine, encoder, dataset, task
        self.out_dir, self.seed = Path(out_dir), seed
        self.device = engine.device
        self.rank, self.world_size = engine.dist.rank, engine.dist.world_size
        self.forwards = 0
        self.cache_hits = 0
        self.feature_seconds = 0.0
        self._log = log or (lambda m: None)
        #: the dataset splits this unit read (their fingerprints enter the unit's result key)
        self.splits_read: set[str] = set()

    def _read(self, source) -> None:
        if isinstance(source, str):
            self.splits_read.add(source)

    def samples(self, split: str) -> Samples:
        self._read(split)
        return self.engine.samples(self.dataset, split)

    def features(self, source, reps: Sequence[str], transform: str = "resize:224") -> dict:
        self._read(source)
        t0 = time.perf_counter()
        arrays, hits, forwards = self.engine.features(self.encoder, self.dataset, source, list(reps), transform)
        self.cache_hits += hits
        self.forwards += forwards
        self.feature_seconds += time.perf_counter() - t0
        return arrays

    def stream(self, source, reps: Sequence[str], transform: str = "resize:224", indices=None, batch=None):
        """Features computed on the fly (not cached), batch by batch: yields (indices, {rep: tensor})."""
        self._read(source)
        for idx, out in self.engine.stream(self.encoder, self.dataset, source, reps, transform, indices, batch):
            self.forwards += len(idx)
            yield idx, out

    def images(self, source, indices: Sequence[int], transform: str = "resize:224"):
        self._read(source)
        _, s = self.engine.resolve(self.dataset, source)
        batch = [transforms.pixels(transform, s.image(int(i))) for i in indices]
        x = torch.stack([transforms.to_tensor(a) for a, _ in batch])
        valid = torch.tensor([v for _, v in batch], dtype=torch.int64)
        padded = bool((valid != torch.tensor(x.shape[-2:])).any())
        return self.engine.executor(self.encoder).normalise(x, valid if padded else None).cpu()

    def encode(self, x, reps: Sequence[str]) -> dict:
        out = self.engine.executor(self.encoder)(x, reps)
        self.forwards += int(x.shape[0])
        return out

    def progress(self, iterable, desc: str = "", total: int | None = None, **kw):
        return progress(iterable, desc=desc, total=total, enabled=self.engine.show_progress and self.is_main, **kw)

    def log(self, message: str) -> None:
        if self.is_main:
            self._log(message)

    def gather(self, obj: Any) -> list:
        return self.engine.dist.gather(obj)

    def barrier(self) -> None:
        self.engine.dist.barrier()
