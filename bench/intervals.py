"""What the bootstrap intervals cost: the demo with and without them, in one run.

Runs ``specs/demo.yaml`` through the real runner and report, alternately with ``bootstrap: 0`` (no intervals,
no paired comparisons) and with the default ``bootstrap: 1000``, ``--rounds`` times each (the feature cache and
the generated data warmed first, so both measure the units' own work and the report), into fresh output folders
with ``--force``. Two figures:

  wall ratio    median wall time with intervals / without (the end-to-end cost; on a busy machine its noise,
                visible in the spread of the rounds, can exceed the cost itself)
  direct share  the time the runner spent computing intervals (``timings.intervals_s`` of every unit) plus the
                report's paired comparisons, over the run's wall time: the cost itself, free of that noise

It also checks that the metrics are identical with and without intervals.

Last line: ``wall_ratio=<float> direct_share=<float> with_s=<float> without_s=<float>``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEMO = Path(__file__).resolve().parents[1] / "specs" / "demo.yaml"


def run(out: Path, resamples: int, overrides=()) -> tuple[float, float, list[dict]]:
    """(wall seconds of run + report, seconds spent on intervals and comparisons, results)."""
    from harness.api import paired_differences, run_spec

    t0 = time.perf_counter()
    results = run_spec(DEMO, out, overrides=[*overrides, f"bootstrap={resamples}"], force=True)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    paired_differences(list(results), out)  # what the report adds for the paired table and comparisons.json
    paired = (time.perf_counter() - t1) * 2  # computed once for the report, once more for the printed tables
    spent = sum(r["timings"].get("intervals_s", 0.0) for r in results) + (paired if resamples else 0.0)
    return wall, spent, list(results)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating (default 2)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a spec override for a slice of the demo, e.g. -o 'run=[{encoders: [tiny_mim], datasets: "
                         "[objects], tasks: [tiny_retrieval, tiny_linear]}]' (default: the whole demo)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-intervals-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("HARNESS_CACHE_DIR", str(tmp / "cache"))
        run(tmp / "warm", 0, args.override)  # generated data and feature cache, for both variants alike
        walls = {0: [], 1000: []}
        shares, metrics = [], {}
        for k in range(args.rounds):
            for resamples in (0, 1000):
                wall, spent, results = run(tmp / f"r{k}-{resamples}", resamples, args.override)
                walls[resamples].append(wall)
                metrics[resamples] = {r["unit"]: r["metrics"] for r in results}
                if resamples:
                    shares.append(spent / wall)
                    with_intervals = sum(bool(r.get("intervals")) for r in results)
                print(f"round {k + 1}: bootstrap={resamples}: {wall:.1f} s"
                      + (f", of which intervals {spent:.2f} s ({with_intervals}/{len(results)} units with "
                         "intervals)" if resamples else ""), flush=True)
        if metrics[0] != metrics[1000]:
            raise SystemExit("metrics differ with and without intervals")
    with_s, without_s = statistics.median(walls[1000]), statistics.median(walls[0])
    print(f"wall: with intervals {with_s:.1f} s (rounds {', '.join(f'{w:.1f}' for w in walls[1000])}), without "
          f"{without_s:.1f} s (rounds {', '.join(f'{w:.1f}' for w in walls[0])}); metrics identical")
    print(f"wall_ratio={with_s / without_s:.3f} direct_share={statistics.median(shares):.4f} "
          f"with_s={with_s:.1f} without_s={without_s:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
