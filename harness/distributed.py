"""torch.distributed for runs under ``torchrun``: one process per device, gloo on CPU, NCCL on CUDA.

A single-process run never needs torchrun and never initialises a process group. Under torchrun
(``WORLD_SIZE`` > 1 in the environment) every rank builds the same plan; feature extraction and
distributed tasks split their items into contiguous shards; rank 0 writes cache entries, results and
reports.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from .api import HarnessError

#: collectives wait this long for a slow rank (rank 0 may train a probe while the others wait)
TIMEOUT = datetime.timedelta(hours=int(os.environ.get("HARNESS_DIST_TIMEOUT_H", "24")))


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            if self.backend == "nccl":
                td.barrier(device_ids=[self.local_rank])
            else:
                td.barrier()

    def gather(self, obj) -> list:
        """Every rank's ``obj`` in rank order, on every rank (pickled; meant for small objects)."""
        if not self.active:
            return [obj]
        import torch.distributed as td

        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.active:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


def from_env(device: str) -> tuple[Dist, str]:
    """(Dist, this rank's device) from torchrun's environment; ``device`` is the plan's (auto/cpu/cuda)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch
    import torch.distributed as td

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device '{device}' requested but CUDA is not available")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise HarnessError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend, timeout=TIMEOUT)
    return Dist(rank, world, local, backend), device


def shard(n: int, rank: int, world: int, align: int = 1) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)``; boundaries are multiples of ``align`` (so every
    rank forms the same batches as a single process would)."""
    blocks = -(-n // max(1, align))
    per = -(-blocks // max(1, world))
    lo, hi = min(n, rank * per * align), min(n, (rank + 1) * per * align)
    return range(lo, hi)
