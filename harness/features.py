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
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import transforms
from .api import Dataset, Encoder, HarnessError, Samples, TaskContext
from .cache import FeatureCache, io_error
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


class _RingItems(torch.utils.data.Dataset):
    """Worker side of the shared ring: an item is written straight into ``ring[slot, pos]`` (shared
    memory made once by the main process), so only its valid size (or an error) goes through the queue:
    no new shared memory per batch, which costs more than the copy itself."""

    def __init__(self, items: ItemDataset, ring: torch.Tensor):
        self.items, self.ring = items, ring

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        slot, pos, i = key
        out = self.items[i]
        if isinstance(out, str):
            return out
        x, valid = out
        if tuple(x.shape) != tuple(self.ring.shape[2:]):
            return f"item {i}: transform gave {tuple(x.shape)}, expected {tuple(self.ring.shape[2:])}"
        self.ring[slot, pos].copy_(x)
        return slot, valid


def _collate_ring(items):
    errors = [it for it in items if isinstance(it, str)]
    if errors:
        return errors[0]
    return items[0][0], len(items), torch.tensor([v for _, v in items], dtype=torch.int64)


class _Chunks(torch.utils.data.Sampler):
    """Consecutive chunks of ``order`` (item indices); with ``slots``, each chunk's entries are (ring
    slot, position, index) with slots taken round-robin. ``order`` may be replaced between passes (a
    persistent loader keeps its workers and reads the new order)."""

    def __init__(self, order: Sequence[int], chunk: int, slots: int = 0):
        self.order, self.chunk, self.slots = order, chunk, slots

    def __iter__(self):
        for k, s in enumerate(range(0, len(self.order), self.chunk)):
            idx = [int(i) for i in self.order[s:s + self.chunk]]
            yield [(k % self.slots, p, i) for p, i in enumerate(idx)] if self.slots else idx

    def __len__(self) -> int:
        return -(-len(self.order) // self.chunk)


def _worker_init(_):
    torch.set_num_threads(1)  # decoding is PIL work; torch threads would oversubscribe the cores


PREFETCH = 4  # batches in flight per worker


class Loader:
    """Batches of one Samples through one transform, decoded by ``workers`` processes that persist across
    passes (``batches(order)`` may be called again, e.g. once per epoch, without new processes).

    With a fixed output size (resize:S, pad:H:W) the workers write items straight into a shared ring
    buffer made once here and only sizes (or errors) travel through the queue: no new shared memory per
    batch, which costs more than the copy itself. The DataLoader keeps at most PREFETCH * workers
    batches in flight beyond the one being consumed, so that many + 2 slots are never overwritten
    before the consumer asks for the next batch."""

    def __init__(self, samples: Samples, transform: str, chunk: int, workers: int, pin_memory: bool = False):
        self.items = ItemDataset(samples, transform)
        self.chunk, self.workers, self.pin = chunk, workers, pin_memory
        self.ring = None
        self._loader = None
        if workers > 0:
            spec = transforms.parse(transform)
            if spec[0] in ("resize", "pad"):
                h, w = (spec[2], spec[2]) if spec[0] == "resize" else (spec[1], spec[2])
                slots = PREFETCH * workers + 2
                self.ring = torch.empty((slots, chunk, 3, h, w), dtype=torch.uint8).share_memory_()
                self.sampler = _Chunks([], chunk, slots)
                self._loader = torch.utils.data.DataLoader(
                    _RingItems(self.items, self.ring), batch_sampler=self.sampler, num_workers=workers,
                    collate_fn=_collate_ring, worker_init_fn=_worker_init, prefetch_factor=PREFETCH,
                    persistent_workers=True)
            else:
                self.sampler = _Chunks([], chunk)
                self._loader = torch.utils.data.DataLoader(
                    self.items, batch_sampler=self.sampler, num_workers=workers, collate_fn=_collate,
                    pin_memory=pin_memory, worker_init_fn=_worker_init, prefetch_factor=PREFETCH,
                    persistent_workers=True)

    def batches(self, order: Sequence[int]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(offset in ``order``, uint8 [B,3,H,W], valid [B,2]) for consecutive chunks of ``order``. With
        workers the batch may be a view of the ring: valid until the next batch is requested."""
        if len(order) == 0:
            return
        offset = 0
        if self._loader is None:
            for idx in _Chunks(order, self.chunk):
                b = _collate([self.items[i] for i in idx])
                if isinstance(b, str):
                    raise _DataError(b)
                yield offset, b[0], b[1]
                offset += len(idx)
            return
        self.sampler.order = order
        for b in self._loader:
            if isinstance(b, str):
                raise _DataError(b)
            if self.ring is not None:
                slot, count, valid = b
                x = self.ring[slot, :count]
                x = x.pin_memory() if self.pin else x
            else:
                x, valid = b
            yield offset, x, valid
            offset += len(x)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._loader is not None and self._loader._iterator is not None:
            self._loader._iterator._shutdown_workers()
        self._loader = None


def load_batches(samples: Samples, transform: str, rng: range, chunk: int, workers: int,
                 pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, uint8 [B,3,H,W], valid [B,2]) for contiguous chunks of ``rng`` through a one-off Loader."""
    loader = Loader(samples, transform, chunk, min(workers, -(-len(rng) // chunk)), pin_memory)
    try:
        for offset, x, valid in loader.batches(rng):
            yield rng.start + offset, x, valid
    finally:
        loader.close()


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
            return (source.view or type(source).__name__), source
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
        claimed: set = set()  # two spec entries with one identity (same plugin and options) share one entry
        for enc, reps in wanted:
            self._check_reps(enc, reps)
            keys = {r: self.key(enc, dataset, label, samples, transform, r) for r in reps}
            todo = [r for r in reps if keys[r] not in claimed and self.cache.get(keys[r], mmap=True) is None]
            claimed.update(keys.values())
            if not todo:
                continue
            if n == 0:
                raise HarnessError(f"dataset '{dataset.name}' {label}: no items to encode")
            keys = {r: keys[r] for r in todo}
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
        for offset, x, valid in self.loader(samples, transform, bs).batches(idx):
            padded = bool((valid != torch.tensor(x.shape[-2:])).any())
            yield idx[offset:offset + len(x)], ex(x, reps, valid if padded else None)


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
            raise io_error(self.path, exc, "writing a feature shard") from None
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
