"""The frozen-feature engine: items -> data-loader workers -> executor -> content-addressed cache.

- Items of a Samples (a dataset split, or a view of one such as slide windows or person crops) are decoded,
  cropped and resized in ``torch.utils.data.DataLoader`` worker processes, in contiguous chunks (so a
  worker's decoded-source cache hits for crops of one image), and travel as uint8; normalisation, autocast
  and the forward run on the device through one ``Executor`` per encoder.
- One pass over the data feeds every encoder that still needs features of the same (items, transform),
  each in its own batch size (batches are exactly those of a separate pass, so cache entries are equal).
- Under torchrun each rank encodes a contiguous shard whose boundaries are multiples of every batch size,
  writes it to a shard file, and rank 0 assembles the cache entry in dataset order.
- Cache entries are float32 vectors and float16 token maps (memory-mapped on read).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import transforms
from .api import Dataset, Encoder, HarnessError, Samples, TaskContext
from .cache import FeatureCache
from .distributed import Dist, shard
from .execution import Executor
from .progress import progress

VECTOR_DTYPE = np.float32
TOKEN_DTYPE = np.float16  # token maps are large; fp16 halves disk and memory traffic


def is_token_rep(rep: str) -> bool:
    return rep == "tokens" or rep.startswith("block.")


def default_workers(device: str) -> int:
    """Decode workers when the spec/CLI does not say: on an accelerator, most of the CPU (the model is
    fast); on the CPU one worker, so decoding overlaps the forward without starving it of cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda"):
        return max(1, min(16, cpus - 1))
    return 1 if cpus > 1 else 0


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
class _DataError(HarnessError):
    """An item could not be read (a data problem, shared by every encoder that needs the item)."""


class EncoderFailure(HarnessError):
    """An encoder failed to load or run during extraction (its units fail; other encoders go on)."""

    def __init__(self, encoder_id: int, message: str):
        super().__init__(message)
        self.encoder_id = encoder_id


class ItemDataset(torch.utils.data.Dataset):
    """The items of a Samples through a named transform: (uint8 [3,H,W], valid (h, w)). Errors are
    returned, not raised, so a worker's failure reaches the main process as one clean line."""

    def __init__(self, samples: Samples, transform: str):
        transforms.parse(transform)
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            arr, valid = transforms.pixels(self.transform, self.samples.image(int(i)))
        except HarnessError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
            return f"item {i} ({self.samples.keys[int(i)]}): {type(exc).__name__}: {exc}"
        return transforms.to_tensor(arr), valid


def _collate(items):
    errors = [it for it in items if isinstance(it, str)]
    if errors:
        return errors[0]
    shapes = {tuple(x.shape) for x, _ in items}
    if len(shapes) > 1:
        return (f"items of one batch have different sizes {sorted(shapes)}; use a transform that gives one "
                f"size (resize:S, pad:H:W)")
    return torch.stack([x for x, _ in items]), torch.tensor([v for _, v in items], dtype=torch.int64)


class _Chunks(torch.utils.data.Sampler):
    """Contiguous index chunks [lo, lo+c), [lo+c, lo+2c) ... of ``rng``."""

    def __init__(self, rng: range, chunk: int):
        self.rng, self.chunk = rng, chunk

    def __iter__(self):
        for s in range(self.rng.start, self.rng.stop, self.chunk):
            yield list(range(s, min(s + self.chunk, self.rng.stop)))

    def __len__(self) -> int:
        return -(-len(self.rng) // self.chunk)


def _worker_init(_):
    torch.set_num_threads(1)  # decoding is PIL work; torch threads would oversubscribe the cores


def load_batches(samples: Samples, transform: str, rng: range, chunk: int, workers: int,
                 pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, uint8 [B,3,H,W], valid [B,2]) for contiguous chunks of ``rng``, in order."""
    if len(rng) == 0:
        return
    ds = ItemDataset(samples, transform)
    sampler = _Chunks(rng, chunk)
    if workers <= 0:
        batches = (_collate([ds[i] for i in idx]) for idx in sampler)
    else:
        batches = torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=min(workers, len(sampler)), collate_fn=_collate,
            pin_memory=pin_memory, worker_init_fn=_worker_init, prefetch_factor=4)
    start = rng.start
    for b in batches:
        if isinstance(b, str):
            raise _DataError(b)
        yield start, b[0], b[1]
        start += len(b[0])


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------
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
        self._fingerprints: dict[int, str] = {}
        self.forwards = 0

    # -- pieces ----------------------------------------------------------------------------------
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
                dataset.prepare()
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

    def resolve(self, dataset: Dataset, source: "str | Samples") -> tuple[str, Samples]:
        """(label, samples) of a split name or a Samples (a view)."""
        if isinstance(source, Samples):
            return getattr(source, "view_name", type(source).__name__), source
        return source, self.samples(dataset, source)

    def fingerprint(self, samples: Samples) -> str:
        if id(samples) not in self._fingerprints:
            self._fingerprints[id(samples)] = samples.fingerprint()
        return self._fingerprints[id(samples)]

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
        jobs: list[_Job] = []
        for enc, reps in wanted:
            self._check_reps(enc, reps)
            todo = [r for r in reps if self.cache.get(self.key(enc, dataset, label, samples, transform, r),
                                                      mmap=True) is None]
            if not todo:
                continue
            if n == 0:
                raise HarnessError(f"dataset '{dataset.name}' {label}: no items to encode")
            keys = {r: self.key(enc, dataset, label, samples, transform, r) for r in todo}
            meta = {"encoder": enc.identity(), "encoder_name": enc.name, "dataset": dataset.identity(),
                    "dataset_name": dataset.name, "split": label, "transform": transform, "n": n,
                    "precision": enc.opts.get("precision", "fp32")}
            jobs.append(_Job(self.executor(enc), todo, keys, meta, int(enc.opts.get("batch_size", 64))))
        if not jobs:
            return {id(enc): 0 for enc, _ in wanted}
        chunk = math.gcd(*[j.batch for j in jobs])
        distributed = collective and self.dist.active
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
            if isinstance(error, _DataError):
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

    def _agree(self, error, jobs: list[_Job]):
        """Under torchrun: the first error of any rank (in rank order), rebuilt on every rank."""
        mine = None
        if error is not None:
            job = next((k for k, j in enumerate(jobs) if isinstance(error, EncoderFailure)
                        and id(j.executor.encoder) == error.encoder_id), None)
            kind = "data" if isinstance(error, _DataError) else ("encoder" if job is not None else "other")
            mine = (kind, str(error) if isinstance(error, HarnessError) else f"{type(error).__name__}: {error}", job)
        first = next((e for e in self.dist.gather(mine) if e is not None), None)
        if first is None:
            return None
        if mine is not None and first == mine:
            return error
        kind, msg, job = first
        if kind == "data":
            return _DataError(msg)
        if kind == "encoder":
            return EncoderFailure(id(jobs[job].executor.encoder), msg)
        return HarnessError(f"another rank failed: {msg}")

    def _pass(self, jobs: list[_Job], samples: Samples, transform: str, rng: range, chunk: int,
              distributed: bool, desc: str) -> None:
        pin = self.device.startswith("cuda")
        bar = progress(None, desc=desc, total=len(rng), unit="img", enabled=self.show_progress and self.dist.is_main)
        try:
            for start, x, valid in load_batches(samples, transform, rng, chunk, self.workers, pin):
                for j in jobs:
                    j.pending.append((start, x, valid))
                    if sum(len(p[1]) for p in j.pending) >= j.batch or start + len(x) >= rng.stop:
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
                    job.writers[rep] = _ShardWriter(self.cache, job.keys[rep], self.dist.rank, (rows,) + arr.shape[1:],
                                                    dtype)
                else:
                    job.writers[rep] = self.cache.open_writer(job.keys[rep], (rows,) + arr.shape[1:], dtype, meta)
            job.writers[rep].write(start - (rng.start if distributed else 0), arr)

    def _assemble(self, jobs: list[_Job], n: int) -> None:
        """Under torchrun: every rank closes its shard files; rank 0 concatenates them in rank order into
        the cache entries; the shard files are removed."""
        for j in jobs:
            for w in j.writers.values():
                w.close()
        shapes = self.dist.gather({(id_, rep): (w.shape[1:], str(w.dtype)) for id_, j in enumerate(jobs)
                                   for rep, w in j.writers.items()})
        self.dist.barrier()
        if self.dist.is_main:
            for id_, j in enumerate(jobs):
                for rep in j.reps:
                    tail = next((s[(id_, rep)] for s in shapes if (id_, rep) in s), None)
                    if tail is None:
                        continue
                    dtype = TOKEN_DTYPE if is_token_rep(rep) else VECTOR_DTYPE
                    writer = self.cache.open_writer(j.keys[rep], (n,) + tuple(tail[0]), dtype,
                                                    dict(j.meta, representation=rep, ranks=self.dist.world_size))
                    try:
                        row = 0
                        for r in range(self.dist.world_size):
                            path = _ShardWriter.path_of(self.cache, j.keys[rep], r)
                            if not path.is_file():
                                continue
                            part = np.load(path, mmap_mode="r")
                            for s in range(0, len(part), 4096):
                                writer.write(row, np.asarray(part[s:s + 4096]))
                                row += len(part[s:s + 4096])
                        if row != n:
                            raise HarnessError(f"assembling {j.keys[rep][:12]}: {row} of {n} rows from the ranks' "
                                               "shard files (is the cache directory shared by all ranks?)")
                        writer.commit()
                    finally:
                        writer.abort()
        self.dist.barrier()
        for j in jobs:
            for rep in j.reps:
                try:
                    _ShardWriter.path_of(self.cache, j.keys[rep], self.dist.rank).unlink()
                except OSError:
                    pass
        self.dist.barrier()

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
        view = _Subset(samples, idx)
        for start, x, valid in load_batches(view, transform, range(len(idx)), bs, self.workers,
                                            self.device.startswith("cuda")):
            padded = bool((valid != torch.tensor(x.shape[-2:])).any())
            yield idx[start:start + len(x)], ex(x, reps, valid if padded else None)


class _Subset(Samples):
    """Items of ``base`` in the order of ``indices`` (for streaming)."""

    def __init__(self, base: Samples, indices: np.ndarray):
        self.base, self.indices = base, indices
        self.keys = [base.keys[int(i)] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int):
        return self.base.image(int(self.indices[i]))


class _ShardWriter:
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
        return cache.root / key[:2] / f".tmp-shard-{key}-rank{rank}.npy"

    def write(self, start: int, rows: np.ndarray) -> None:
        if start != self.rows:
            raise HarnessError(f"{self.path}: rows must be written in order (got row {start}, expected {self.rows})")
        try:
            self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        except OSError as exc:
            self.abort()
            raise HarnessError(f"{self.path}: cannot write feature shard ({exc.strerror})") from None
        self.rows += len(rows)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def commit(self) -> None:
        self.close()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
            try:
                self.path.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------------------------------
# the task context
# --------------------------------------------------------------------------------------------------
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

    def samples(self, split: str) -> Samples:
        return self.engine.samples(self.dataset, split)

    def features(self, source, reps: Sequence[str], transform: str = "resize:224") -> dict:
        t0 = time.perf_counter()
        arrays, hits, forwards = self.engine.features(self.encoder, self.dataset, source, list(reps), transform)
        self.cache_hits += hits
        self.forwards += forwards
        self.feature_seconds += time.perf_counter() - t0
        return arrays

    def stream(self, source, reps: Sequence[str], transform: str = "resize:224", indices=None, batch=None):
        """Features computed on the fly (not cached), batch by batch: yields (indices, {rep: tensor})."""
        for idx, out in self.engine.stream(self.encoder, self.dataset, source, reps, transform, indices, batch):
            self.forwards += len(idx)
            yield idx, out

    def images(self, source, indices: Sequence[int], transform: str = "resize:224"):
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
