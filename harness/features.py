"""The frozen-feature engine: items -> data-loader workers -> executor -> content-addressed cache.

- One pass over the data feeds every encoder that still needs features of the same (items, transform),
  each in its own batch size (batches are exactly those of a separate pass, so cache entries are equal).
- Under torchrun each rank encodes a contiguous shard whose boundaries are multiples of every batch size,
  writes it to a shard file, and rank 0 assembles the cache entry in dataset order.
- Cache entries are float32 vectors and float16 token maps (memory-mapped on read).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .api import Dataset, Encoder, HarnessError, Samples
from .cache import FeatureCache
from .io import DiskFullError
from .distributed import Dist, shard
from .execution import Executor
from .loading import DataError, Loader, default_workers
from .progress import progress
from .shards import ShardWriter

VECTOR_DTYPE = np.float32
TOKEN_DTYPE = np.float16  # token maps are large; fp16 halves disk and memory traffic


def is_token_rep(rep: str) -> bool:
    return rep == "tokens" or rep.startswith("block.")


class EncoderFailure(HarnessError):
    """An encoder failed to load or run during extraction (its units fail; other encoders go on)."""

    def __init__(self, encoder_id: int, message: str):
        super().__init__(message)
        self.encoder_id = encoder_id


@dataclass
class _Job:
    """One encoder's missing representations of one (items, transform)."""

    executor: Executor
    reps: list[str]
    keys: dict[str, str]
    meta: dict
    batch: int
    pending: list = field(default_factory=list)  # (start, x, valid) chunks not yet encoded
    writers: dict = field(default_factory=dict)
    forwards: int = 0


class FeatureEngine:
    """Shared by all units of a run: executors, loaded splits, the cache, the data loader, the ranks."""

    def __init__(self, cache: FeatureCache, device: str = "cpu", dist: Dist | None = None,
                 workers: int | None = None, show_progress: bool = True, log: Callable[[str], None] | None = None):
        self.cache, self.device = cache, device
        self.dist = dist or Dist()
        self.workers = default_workers(device) if workers is None else workers
        self.show_progress = show_progress
        self.log = log or (lambda m: None)
        self._executors: dict[int, Executor] = {}
        self._samples: dict[tuple, Samples] = {}
        self._failed: dict[tuple, str] = {}  # (dataset, split) -> the shared error of a data problem
        self._prepared: set[int] = set()
        self._loaders: "OrderedDict[tuple, tuple[Samples, Loader]]" = OrderedDict()
        self.forwards = 0

    # -- pieces ----------------------------------------------------------------------------------
    MAX_LOADERS = 3  # persistent loaders (each holds its worker processes) kept for later passes

    def loader(self, samples: Samples, transform: str, chunk: int) -> Loader:
        """A persistent Loader for (samples, transform, chunk): its workers survive between passes."""
        key = (id(samples), transform, chunk)
        if key in self._loaders:
            self._loaders.move_to_end(key)
            return self._loaders[key][1]
        loader = Loader(samples, transform, chunk, self.workers, self.device.startswith("cuda"))
        self._loaders[key] = (samples, loader)  # the Samples is kept alive with its loader
        while len(self._loaders) > self.MAX_LOADERS:
            self._loaders.popitem(last=False)[1][1].close()
        return loader

    def close(self) -> None:
        """Stop every loader's worker processes."""
        while self._loaders:
            self._loaders.popitem()[1][1].close()

    def executor(self, enc: Encoder) -> Executor:
        if id(enc) not in self._executors:
            self._executors[id(enc)] = Executor(enc, self.device)
        return self._executors[id(enc)]

    def samples(self, dataset: Dataset, split: str) -> Samples:
        """The dataset's split, loaded once per run. A dataset that fails to prepare or load fails every
        unit that needs it with one shared message."""
        k = (id(dataset), split)
        if k in self._failed:
            raise HarnessError(self._failed[k])
        if k not in self._samples:
            if split not in dataset.splits:
                raise HarnessError(f"dataset '{dataset.name}' has no split '{split}' "
                                   f"(available: {', '.join(dataset.splits)})")
            try:
                self.prepare(dataset)
                s = dataset.load(split)
            except Exception as exc:  # noqa: BLE001 - remembered and shared by every unit of the dataset
                msg = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
                self._failed[k] = f"dataset '{dataset.name}' split '{split}': {msg}"
                raise HarnessError(self._failed[k]) from exc
            if not isinstance(s, Samples):
                raise HarnessError(f"dataset '{dataset.name}': load('{split}') returned {type(s).__name__}, "
                                   "not a harness.Samples")
            self._samples[k] = s
        return self._samples[k]

    def prepare(self, dataset: Dataset) -> None:
        """``dataset.prepare()``, once per run (the runner calls it on rank 0 before the other ranks)."""
        if id(dataset) not in self._prepared:
            dataset.prepare()
            self._prepared.add(id(dataset))

    def resolve(self, dataset: Dataset, source: "str | Samples") -> tuple[str, Samples]:
        """(label, samples) of a split name or a Samples (a view)."""
        if isinstance(source, Samples):
            return (source.view or type(source).__name__), source
        return source, self.samples(dataset, source)

    def fingerprint(self, samples: Samples) -> str:
        """``samples.fingerprint()``, computed once per object. Remembered on the object itself: a table by
        ``id()`` would hand a freed view's fingerprint to a new view that reuses its address."""
        fp = samples.__dict__.get("_harness_fingerprint")
        if fp is None:
            fp = samples.__dict__["_harness_fingerprint"] = samples.fingerprint()
        return fp

    def key(self, enc: Encoder, dataset: Dataset, label: str, samples: Samples, transform: str, rep: str) -> str:
        return self.cache.key(encoder=enc.identity(), dataset=dataset.identity(), split=label,
                              items=self.fingerprint(samples), transform=transform, representation=rep,
                              precision=enc.opts.get("precision", "fp32"))

    def _check_reps(self, enc: Encoder, reps: Sequence[str]) -> None:
        for rep in reps:
            if not enc.supports(rep):
                raise HarnessError(f"encoder '{enc.name}' has no representation '{rep}' "
                                   f"(has: {', '.join(enc.representations)})")

    # -- reading ---------------------------------------------------------------------------------
    def cached(self, enc: Encoder, dataset: Dataset, source, reps: Sequence[str], transform: str) -> dict:
        """The representations already in the cache (arrays), by name."""
        label, samples = self.resolve(dataset, source)
        out = {}
        for rep in reps:
            arr = self.cache.get(self.key(enc, dataset, label, samples, transform, rep), mmap=is_token_rep(rep))
            if arr is not None:
                out[rep] = arr
        return out

    def features(self, enc: Encoder, dataset: Dataset, source, reps: Sequence[str], transform: str,
                 collective: bool = False) -> tuple[dict, int, int]:
        """(arrays by name, cache hits, forwards): cached entries, the missing ones computed first."""
        self._check_reps(enc, reps)
        have = self.cached(enc, dataset, source, reps, transform)
        missing = [r for r in reps if r not in have]
        forwards = 0
        if missing:
            forwards = self.extract(dataset, source, transform, [(enc, missing)], collective=collective)[id(enc)]
            have.update(self.cached(enc, dataset, source, missing, transform))
            lost = [r for r in missing if r not in have]
            if lost:
                raise HarnessError(f"feature cache {self.cache.root}: entries for {', '.join(lost)} of encoder "
                                   f"'{enc.name}' vanished right after being written (is the cache shared with "
                                   "a process that prunes it?)")
        return {r: have[r] for r in reps}, len(reps) - len(missing), forwards

    # -- extraction --------------------------------------------------------------------------------
    def extract(self, dataset: Dataset, source, transform: str, wanted: Sequence[tuple[Encoder, Sequence[str]]],
                collective: bool = False) -> dict[int, int]:
        """Encode the items of ``source`` once for every (encoder, reps) in ``wanted`` that is not cached
        yet, in one pass over the data; returns forwards by id(encoder). ``collective``: every rank calls
        this together and takes a shard (under torchrun)."""
        label, samples = self.resolve(dataset, source)
        n = len(samples)
        distributed = collective and self.dist.active
        for enc, reps in wanted:
            self._check_reps(enc, reps)
        keys = [{r: self.key(enc, dataset, label, samples, transform, r) for r in reps} for enc, reps in wanted]
        if distributed:
            # one decision for all ranks: each rank checks it computes rank 0's keys, rank 0 alone looks at the
            # cache (ranks looking at different moments while another rank writes would enter different
            # collectives and hang)
            self.dist.agree(keys, f"the feature cache keys of dataset '{dataset.name}' {label} (items or encoders)")
            todo = self.dist.broadcast(self._missing(keys) if self.dist.is_main else None)
        else:
            todo = self._missing(keys)
        jobs: list[_Job] = []
        for (enc, _), enc_keys, enc_todo in zip(wanted, keys, todo):
            if not enc_todo:
                continue
            if n == 0:
                raise HarnessError(f"dataset '{dataset.name}' {label}: no items to encode")
            meta = {"encoder": enc.identity(), "encoder_name": enc.name, "dataset": dataset.identity(),
                    "dataset_name": dataset.name, "split": label, "transform": transform, "n": n,
                    "precision": enc.opts.get("precision", "fp32")}
            jobs.append(_Job(self.executor(enc), enc_todo, {r: enc_keys[r] for r in enc_todo}, meta,
                             int(enc.opts.get("batch_size", 64))))
        if not jobs:
            return {id(enc): 0 for enc, _ in wanted}
        chunk = math.gcd(*[j.batch for j in jobs])
        align = math.lcm(*[j.batch for j in jobs])
        rng = shard(n, self.dist.rank, self.dist.world_size, align) if distributed else range(n)
        names = ",".join(j.executor.encoder.name for j in jobs)
        t0 = time.perf_counter()
        try:
            error = None
            try:
                self._pass(jobs, samples, transform, rng, chunk, distributed,
                           desc=f"features {names}/{dataset.name}:{label}")
            except Exception as exc:  # noqa: BLE001 - re-raised below, the same on every rank
                error = exc
            if distributed:  # every rank learns whether any rank failed, and raises the same error
                error = self._agree(error, jobs)
            if isinstance(error, DataError):
                k = (id(dataset), label)
                self._failed[k] = f"dataset '{dataset.name}' {label}: {error}"
                raise HarnessError(self._failed[k]) from None
            if error is not None:
                raise error
            if distributed:
                self._assemble(jobs, n)
            else:
                for j in jobs:
                    for w in j.writers.values():
                        w.commit()
        finally:
            for j in jobs:
                for w in j.writers.values():
                    w.abort()  # no-op after commit
        self.log(f"    features {names} / {dataset.name}:{label} ({transform}): {len(rng)} items in "
                 f"{time.perf_counter() - t0:.1f} s")
        out = {id(enc): 0 for enc, _ in wanted}
        counts = [j.forwards for j in jobs]
        if distributed:
            counts = [sum(c) for c in zip(*self.dist.gather(counts))]
        for j, c in zip(jobs, counts):
            out[id(j.executor.encoder)] += c
            self.forwards += c
        return out

    def _missing(self, keys: list[dict[str, str]]) -> list[list[str]]:
        """Per encoder, the representations whose entry is not in the cache; two spec entries with one
        identity (same plugin and options) share one entry, computed for the first."""
        claimed: set = set()
        out = []
        for enc_keys in keys:
            out.append([r for r, k in enc_keys.items() if k not in claimed and self.cache.get(k, mmap=True) is None])
            claimed.update(enc_keys.values())
        return out

    def _agree(self, error, jobs: list[_Job]):
        """Under torchrun: the first error of any rank (in rank order), rebuilt on every rank."""
        mine = None
        if error is not None:
            job = next((k for k, j in enumerate(jobs) if isinstance(error, EncoderFailure)
                        and id(j.executor.encoder) == error.encoder_id), None)
            kind = "data" if isinstance(error, DataError) else ("encoder" if job is not None else "other")
            mine = (kind, str(error) if isinstance(error, HarnessError) else f"{type(error).__name__}: {error}", job)
        first = next((e for e in self.dist.gather(mine) if e is not None), None)
        if first is None:
            return None
        if mine is not None and first == mine:
            return error
        kind, msg, job = first
        if kind == "data":
            return DataError(msg)
        if kind == "encoder":
            return EncoderFailure(id(jobs[job].executor.encoder), msg)
        return HarnessError(f"another rank failed: {msg}")

    def _pass(self, jobs: list[_Job], samples: Samples, transform: str, rng: range, chunk: int,
              distributed: bool, desc: str) -> None:
        bar = progress(None, desc=desc, total=len(rng), unit="img", enabled=self.show_progress and self.dist.is_main)
        try:
            for offset, x, valid in self.loader(samples, transform, chunk).batches(rng):
                start = rng.start + offset
                for j in jobs:
                    complete = sum(len(p[1]) for p in j.pending) + len(x) >= j.batch or start + len(x) >= rng.stop
                    # a loader batch lives until the next one is requested: keep a copy only if it waits
                    j.pending.append((start, x if complete else x.clone(), valid))
                    if complete:
                        self._run(j, rng, distributed)
                bar.update(len(x))
        finally:
            bar.close()

    def _run(self, job: _Job, rng: range, distributed: bool) -> None:
        start = job.pending[0][0]
        x = torch.cat([p[1] for p in job.pending]) if len(job.pending) > 1 else job.pending[0][1]
        valid = torch.cat([p[2] for p in job.pending]) if len(job.pending) > 1 else job.pending[0][2]
        job.pending.clear()
        padded = bool((valid != torch.tensor(x.shape[-2:])).any())
        enc = job.executor.encoder
        try:
            out = job.executor(x, job.reps, valid if padded else None)
        except Exception as exc:  # noqa: BLE001 - this encoder's units fail, the others go on
            msg = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
            raise EncoderFailure(id(enc), f"encoder '{enc.name}': {msg}") from exc
        job.forwards += len(x)
        for rep in job.reps:
            arr = out[rep].cpu().numpy()
            if rep not in job.writers:
                dtype = TOKEN_DTYPE if is_token_rep(rep) else VECTOR_DTYPE
                rows = len(rng) if distributed else job.meta["n"]
                meta = dict(job.meta, representation=rep)
                if distributed:
                    job.writers[rep] = ShardWriter(self.cache, job.keys[rep], self.dist.rank, (rows,) + arr.shape[1:],
                                                    dtype)
                else:
                    job.writers[rep] = self.cache.open_writer(job.keys[rep], (rows,) + arr.shape[1:], dtype, meta)
            job.writers[rep].write(start - (rng.start if distributed else 0), arr)

    def _assemble(self, jobs: list[_Job], n: int) -> None:
        """Under torchrun: every rank closes its shard files and tells their paths; rank 0 concatenates them in
        rank order into the cache entries and tells every rank whether that worked; each rank removes its
        own shard files. Every rank raises the same error when rank 0's assembly failed."""
        for j in jobs:
            for w in j.writers.values():
                w.close()
        shards = self.dist.gather({(k, rep): (w.shape[1:], str(w.path)) for k, j in enumerate(jobs)
                                   for rep, w in j.writers.items()})
        problem = None
        if self.dist.is_main:
            try:
                for k, j in enumerate(jobs):
                    for rep in j.reps:
                        parts = [s[(k, rep)] for s in shards if (k, rep) in s]
                        if parts:
                            self._concatenate(j, rep, n, parts)
            except HarnessError as exc:
                problem = (isinstance(exc, DiskFullError), str(exc))
        problem = self.dist.broadcast(problem)
        for j in jobs:
            for w in j.writers.values():
                w.remove()
        if problem is not None:
            raise (DiskFullError if problem[0] else HarnessError)(problem[1])

    def _concatenate(self, job: _Job, rep: str, n: int, parts: list) -> None:
        dtype = TOKEN_DTYPE if is_token_rep(rep) else VECTOR_DTYPE
        writer = self.cache.open_writer(job.keys[rep], (n,) + tuple(parts[0][0]), dtype,
                                        dict(job.meta, representation=rep, ranks=self.dist.world_size))
        try:
            row = 0
            for _, path in parts:
                try:
                    part = np.load(path, mmap_mode="r")
                except OSError as exc:
                    raise HarnessError(f"{path}: a rank's shard is unreadable from rank 0 ({exc.strerror or exc}); "
                                       "is the cache directory shared by all ranks?") from None
                for s in range(0, len(part), 4096):
                    writer.write(row, np.asarray(part[s:s + 4096]))
                    row += len(part[s:s + 4096])
            if row != n:
                raise HarnessError(f"assembling {job.keys[rep][:12]}: {row} of {n} rows from the ranks' shard files")
            writer.commit()
        finally:
            writer.abort()

    # -- streaming ---------------------------------------------------------------------------------
    def stream(self, enc: Encoder, dataset: Dataset, source, reps: Sequence[str], transform: str,
               indices: Sequence[int] | None = None, batch: int | None = None):
        """Yield (item indices, {rep: float32 tensor on the device}) computed on the fly, not cached: the
        streaming modes re-encode each epoch. ``indices`` (default all) are read in runs of consecutive
        items through the data loader."""
        self._check_reps(enc, reps)
        _, samples = self.resolve(dataset, source)
        idx = np.arange(len(samples)) if indices is None else np.asarray(indices, dtype=np.int64)
        bs = batch or int(enc.opts.get("batch_size", 64))
        ex = self.executor(enc)
        for offset, x, valid in self.loader(samples, transform, bs).batches(idx):
            padded = bool((valid != torch.tensor(x.shape[-2:])).any())
            yield idx[offset:offset + len(x)], ex(x, reps, valid if padded else None)
