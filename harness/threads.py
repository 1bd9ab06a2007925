"""How many threads the harness's processes use: set once per run, deliberately.

torch sizes its intra-op pool from the machine's cores, not from what this process may use: in a container
whose CPU quota is 2 cores on a 64-core host, or beside decode workers, that oversubscribes the cores and a
unit can run several times slower than with one thread. The harness therefore decides:

- decode workers (``harness.loading``) run one torch thread each (their work is PIL decoding);
- the main process gets ``available_cores()`` divided among the processes of this machine (torchrun's local
  world size), less the decode workers on an accelerator, where the workers are busy and the main thread
  only launches kernels. On the CPU the one decode worker mostly waits for the forward, so the forward keeps
  every core (``bench/extraction.py`` compares this default with 1 and with all cores);
- an explicit ``--threads N`` / ``extraction: {threads: N}`` wins, then ``OMP_NUM_THREADS`` when set (torchrun
  sets it to 1 for several processes per node; a user's own setting is a deliberate choice too).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup CPU quota in cores (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: its affinity mask, capped by a container's CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def default_threads(device: str, workers: int, local_processes: int = 1, cores: int | None = None) -> int:
    """Intra-op threads of the main process when nothing says otherwise (see the module docstring)."""
    share = max(1, (available_cores() if cores is None else cores) // max(1, local_processes))
    if device.startswith("cpu"):
        return share
    return max(1, share - workers)


def configure(device: str, workers: int, threads: int | None = None) -> tuple[int, str]:
    """Set this process's torch threads; (threads, where the number came from) for the run's log."""
    if threads is not None:
        n, why = threads, "set by --threads / extraction.threads"
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        n, why = int(os.environ["OMP_NUM_THREADS"]), "from OMP_NUM_THREADS"
    else:
        local, cores = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), available_cores()
        n, why = default_threads(device, workers, local, cores), f"default for {cores} cores"
    torch.set_num_threads(n)
    return n, why
