"""Decoding items for the encoders: a Samples through a named transform, in DataLoader worker processes.

Items are decoded, cropped and resized in ``torch.utils.data.DataLoader`` workers, in contiguous chunks (so a
worker's decoded-source cache hits for crops of one image), and travel as uint8 through a shared ring buffer;
normalisation happens on the device (``harness.execution.Executor``).
"""
from __future__ import annotations

import signal
from typing import Iterator, Sequence

import torch

from . import transforms
from .api import HarnessError, Samples
from .threads import available_cores


def default_workers(device: str) -> int:
    """Decode workers when the spec/CLI does not say: on an accelerator, most of the CPU (the model is
    fast); on the CPU one worker, so decoding overlaps the forward without starving it of cores."""
    cpus = available_cores()
    if device.startswith("cuda"):
        return max(1, min(16, cpus - 1))
    return 1 if cpus > 1 else 0



class DataError(HarnessError):
    """An item could not be read (a data problem, shared by every encoder that needs the item)."""


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
    # Ctrl-C reaches the whole process group: the main process stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
                    raise DataError(b)
                yield offset, b[0], b[1]
                offset += len(idx)
            return
        self.sampler.order = order
        for b in self._loader:
            if isinstance(b, str):
                raise DataError(b)
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
