"""torchrun stress: the demo under 2 processes, many times, each from nothing, against one process.

    python bench/torchrun_stress.py [--runs 10] [--nproc 2] [--spec specs/demo.yaml] [--timeout 900]

Runs the spec once in one process, then ``--runs`` times under ``torchrun --standalone --nproc_per_node=N``
(gloo on CPU), each time with an empty feature cache and freshly generated data (so the ranks race for
nothing that a user's first run would not also race for), and compares every metric of every unit with
the one-process run. A run that hangs past ``--timeout`` or exits non-zero counts as not identical. The
last line reads ``torchrun: K/N identical``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], work: Path, timeout: float) -> tuple[int | None, float, str]:
    """(exit code or None when it hung, seconds, last lines of output) of one run in its own folders."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HARNESS_CACHE_DIR=str(work / "cache"),
               XDG_CACHE_HOME=str(work / "xdg"))
    t0 = time.perf_counter()
    with open(work / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            code = None
    tail = (work / "log.txt").read_text().strip().splitlines()[-3:]
    return code, time.perf_counter() - t0, " | ".join(tail)


def metrics(out: Path) -> dict:
    return {p.stem: json.loads(p.read_text())["metrics"] for p in sorted((out / "results").glob("*.json"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "demo.yaml"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a run counts as hung")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # one line per run, visible while the next runs
    harness = [sys.executable, "-m", "harness.cli", "run", a.spec, "--no-progress", "--force"]
    with tempfile.TemporaryDirectory(prefix="torchrun-stress-") as tmp:
        base = Path(tmp) / "single"
        base.mkdir()
        code, secs, tail = run(harness + ["--out", str(base / "out")], base, a.timeout)
        if code != 0:
            print(f"the one-process run failed (exit {code}): {tail}")
            return 1
        want = metrics(base / "out")
        print(f"1 process: {len(want)} units in {secs:.0f} s")
        identical = 0
        for i in range(1, a.runs + 1):
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={a.nproc}",
                   "-m", "harness.cli", "run", a.spec, "--no-progress", "--force", "--out", str(work / "out")]
            code, secs, tail = run(cmd, work, a.timeout)
            if code is None:
                print(f"run {i}: HUNG (killed after {a.timeout:.0f} s): {tail}")
                continue
            got = metrics(work / "out")
            diff = sorted(u for u in set(want) | set(got) if want.get(u) != got.get(u))
            if code == 0 and not diff:
                identical += 1
                print(f"run {i}: identical ({len(got)} units) in {secs:.0f} s")
            else:
                print(f"run {i}: exit {code}, {len(diff)} units differ or are missing {diff[:3]} in {secs:.0f} s: {tail}")
        print(f"torchrun: {identical}/{a.runs} identical")
        return 0 if identical == a.runs else 1


if __name__ == "__main__":
    sys.exit(main())
