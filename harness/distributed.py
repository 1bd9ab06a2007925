"""torch.distributed for runs under ``torchrun``: one process per device, gloo on CPU, NCCL on CUDA.

A single-process run never needs torchrun and never initialises a process group. Under torchrun
(``WORLD_SIZE`` > 1 in the environment) every rank builds the same plan; feature extraction and
distributed tasks split their items into contiguous shards; rank 0 writes cache entries, results and
reports.

Nothing waits forever:
- every collective has the process group's timeout (``HARNESS_DIST_TIMEOUT``, seconds; default 1800);
- where the other ranks wait for rank 0 alone (rank-0 units, the report), they wait in ``sync``, which polls
  the rendezvous store and gives up when rank 0's heartbeat stops (``HEARTBEAT_LIMIT_S``), not on a timeout;
- a rank that fails leaves its error in the store (``report_failure``); a rank whose collective breaks
  (a peer died, or timed out) raises ``RankFailure`` naming the rank and the cause.
"""
from __future__ import annotations

import datetime
import os
import threading
import time
from dataclasses import dataclass, field

from .errors import FatalError, HarnessError

#: collectives give up after this long (a rank that never arrives); a dead peer breaks them at once (gloo)
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("HARNESS_DIST_TIMEOUT", "1800")))
HEARTBEAT_S = 2.0
#: ``sync`` gives up when rank 0's heartbeat has not moved for this long
HEARTBEAT_LIMIT_S = float(os.environ.get("HARNESS_DIST_HEARTBEAT_LIMIT", "60"))
_PREFIX = "harness/"


class RankFailure(FatalError):
    """Another rank failed or stopped responding: this rank stops too."""


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    store: object = None
    _syncs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives ---------------------------------------------------------------------------
    def _collective(self, what: str, fn):
        try:
            return fn()
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors: a peer died, or the timeout hit
            raise self._lost(what, exc) from None

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            if self.backend == "nccl":
                self._collective("a barrier", lambda: td.barrier(device_ids=[self.local_rank]))
            else:
                self._collective("a barrier", td.barrier)

    def gather(self, obj) -> list:
        """Every rank's ``obj`` in rank order, on every rank (pickled; meant for small objects)."""
        if not self.active:
            return [obj]
        import torch.distributed as td

        out = [None] * self.world_size
        self._collective("exchanging state", lambda: td.all_gather_object(out, obj))
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as td

        box = [obj]
        self._collective("receiving rank 0's decision", lambda: td.broadcast_object_list(box, src=0))
        return box[0]

    def agree(self, mine, what: str):
        """Rank 0's ``mine`` on every rank, after checking that every rank computed the same: a rank that
        differs makes every rank raise the same error naming it and ``what``."""
        if not self.active:
            return mine
        every = self.gather(mine)
        bad = [r for r, v in enumerate(every) if v != every[0]]
        if bad:
            raise RankFailure(f"rank {bad[0]} disagrees with rank 0 about {what} (is the data folder the same on "
                              "every rank, and unchanged during the run?)")
        return every[0]

    # -- waiting for rank 0 without a timeout --------------------------------------------------
    def sync(self) -> None:
        """Every rank waits here until rank 0 arrives, however long rank 0 works alone before, as long as
        it lives (its heartbeat moves): a point that rank 0's own work (units, report) precedes."""
        if not self.active:
            return
        self._syncs += 1
        key = f"{_PREFIX}sync/{self._syncs}"
        try:
            if self.is_main:
                self.store.set(key, "1")
                return
            beat, moved = self._beat(0), time.monotonic()
            while not self.store.check([key]):
                self._raise_reported()
                now = self._beat(0)
                if now != beat:
                    beat, moved = now, time.monotonic()
                elif time.monotonic() - moved > HEARTBEAT_LIMIT_S:
                    raise RankFailure(f"rank 0 stopped responding (no heartbeat for {HEARTBEAT_LIMIT_S:.0f} s)")
                time.sleep(0.2)
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store is gone with the rank that hosted it
            raise self._lost("waiting for rank 0", exc) from None

    def _beat(self, rank: int) -> int:
        return int(self.store.add(f"{_PREFIX}heartbeat/{rank}", 0))

    def start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    self.store.add(f"{_PREFIX}heartbeat/{self.rank}", 1)
                except Exception:  # noqa: BLE001 - the store went away: the next collective says why
                    return

        if self.active and self.store is not None:
            threading.Thread(target=beat, name="harness-heartbeat", daemon=True).start()

    # -- failures ------------------------------------------------------------------------------
    def report_failure(self, message: str) -> None:
        """Leave this rank's error where the other ranks look when their collectives break."""
        if self.active and self.store is not None:
            try:
                self.store.set(f"{_PREFIX}failed/{self.rank}", message)
            except Exception:  # noqa: BLE001 - best effort: the store may be gone
                pass

    def _reported(self) -> list[tuple[int, str]]:
        out = []
        for r in range(self.world_size):
            key = f"{_PREFIX}failed/{r}"
            if r != self.rank and self.store.check([key]):
                out.append((r, self.store.get(key).decode(errors="replace")))
        return out

    def _raise_reported(self) -> None:
        reported = self._reported()
        if reported:
            r, msg = reported[0]
            raise RankFailure(f"rank {r} failed: {msg}")

    def _lost(self, what: str, exc: BaseException) -> RankFailure:
        cause = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, TimeoutError) or "timed out" in cause.lower() or "timeout" in cause.lower():
            cause = f"no answer within {TIMEOUT.total_seconds():.0f} s ({cause})"
        deadline = time.monotonic() + 3.0  # a failing rank reports just before it exits
        while True:
            try:
                reported = self._reported()
            except Exception:  # noqa: BLE001 - the store itself is gone (its host rank died)
                reported = []
                break
            if reported or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if reported:
            r, msg = reported[0]
            return RankFailure(f"rank {r} failed: {msg}")
        others = [r for r in range(self.world_size) if r != self.rank]
        who = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {', '.join(map(str, others))}"
        return RankFailure(f"{who} stopped (killed, or crashed without a message) while rank {self.rank} was "
                           f"{what}: {cause}")

    def shutdown(self) -> None:
        self._stop.set()
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
    from torch.distributed.distributed_c10d import _get_default_store

    dist = Dist(rank, world, local, backend, _get_default_store())
    dist.start_heartbeat()
    return dist, device


def shard(n: int, rank: int, world: int, align: int = 1) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)``; boundaries are multiples of ``align`` (so every
    rank forms the same batches as a single process would)."""
    blocks = -(-n // max(1, align))
    per = -(-blocks // max(1, world))
    lo, hi = min(n, rank * per * align), min(n, (rank + 1) * per * align)
    return range(lo, hi)
