"""Paired comparisons of results: the difference of a headline metric between two results of the same
(task, dataset) with its paired bootstrap interval.

Both results were scored on the same resamples of the same items (``harness.bootstrap``: the resamples of a
unit do not depend on its encoder; ``intervals.resample_key`` names them), so the interval of the difference is
the percentile interval of the differences of their stored replicates (``bootstrap/<metric>`` in each unit's
per-item npz). Within a run (``harness report``): every pair of encoders of each (task, dataset);
across runs (``harness compare A B``): each unit of A against the same unit of B.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import combinations
from pathlib import Path

import numpy as np

from . import bootstrap
from .errors import HarnessError
from .results import ci95, load_results


def replicates(result: dict, out_dir, metric: str) -> np.ndarray | None:
    """The stored bootstrap replicates of ``metric`` of a result of the output folder ``out_dir``, or None."""
    if ci95(result, metric) is None or not result.get("per_item"):
        return None
    path = Path(out_dir) / result["per_item"]["file"]
    try:
        with np.load(path) as f:
            key = bootstrap.PREFIX + metric
            return np.asarray(f[key], dtype=np.float64) if key in f.files else None
    except (OSError, ValueError):
        return None


def interval_metric(result: dict) -> str | None:
    """The first headline metric of a result that has an interval."""
    return next((m for m in (result.get("headline") or []) if ci95(result, m) is not None), None)


def paired_difference(a: dict, b: dict, dir_a, dir_b=None, metric: str | None = None) -> dict | None:
    """{metric, difference (a - b), ci95, excludes_zero, resamples} of two results scored on the same resamples
    (``dir_b`` defaults to ``dir_a``); None when they were not (another seed, item set or number of
    resamples) or either has no interval for the metric."""
    metric = metric or interval_metric(a)
    ia, ib = a.get("intervals") or {}, b.get("intervals") or {}
    if metric is None or not ia or ia.get("resample_key") != ib.get("resample_key"):
        return None
    ra, rb = replicates(a, dir_a, metric), replicates(b, dir_b if dir_b is not None else dir_a, metric)
    va, vb = (a.get("metrics") or {}).get(metric), (b.get("metrics") or {}).get(metric)
    if ra is None or rb is None or va is None or vb is None or ra.shape != rb.shape:
        return None
    ci = bootstrap.interval(ra - rb)
    return {"metric": metric, "difference": float(va) - float(vb), "ci95": ci,
            "excludes_zero": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)), "resamples": len(ra)}


def paired_differences(results: list[dict], out_dir) -> list[dict]:
    """Every pair of encoders of each (task, dataset) of one output folder, in run order."""
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for r in results:
        if r.get("status") == "ok" and r.get("intervals"):
            groups.setdefault((r["task"], r["dataset"]), []).append(r)
    rows = []
    for (task, dataset), rs in groups.items():
        for a, b in combinations(rs, 2):
            found = paired_difference(a, b, out_dir)
            if found:
                rows.append({"task": task, "dataset": dataset, "a": a["encoder"], "b": b["encoder"], **found})
    return rows


def across_runs(dir_a, dir_b) -> list[dict]:
    """Each unit of output folder ``dir_a`` against the same unit of ``dir_b`` (A - B); the folders must hold
    the same units, scored on the same resamples."""
    a = {r["unit"]: r for r in load_results(dir_a)}
    b = {r["unit"]: r for r in load_results(dir_b)}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise HarnessError(f"harness compare: {dir_a} and {dir_b} hold different units (only in the first: "
                           f"{', '.join(only_a[:3]) or 'none'}{' ...' if len(only_a) > 3 else ''}; only in the "
                           f"second: {', '.join(only_b[:3]) or 'none'}{' ...' if len(only_b) > 3 else ''})")
    rows = []
    for unit, ra in a.items():
        rb = b[unit]
        if ra.get("status") != "ok" or rb.get("status") != "ok" or not ra.get("intervals"):
            continue
        if (ra["intervals"].get("resample_key") != (rb.get("intervals") or {}).get("resample_key")):
            raise HarnessError(f"harness compare: unit {unit} was resampled differently in {dir_a} and {dir_b} "
                               "(another seed, other items, another number of resamples or another bootstrap_by): its results are "
                               "not paired")
        found = paired_difference(ra, rb, dir_a, dir_b)
        if found:
            rows.append({"task": ra["task"], "dataset": ra["dataset"], "a": f"{ra['encoder']} (A)",
                         "b": f"{rb['encoder']} (B)", **found})
    return rows


def markdown(rows: list[dict], fmt: str = "github", title: str = "paired differences") -> str:
    """One table per (task, dataset): A, B, the difference A - B, its paired interval, whether it excludes 0."""
    from tabulate import tabulate

    if not rows:
        return ""
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["task"], r["dataset"]), []).append(r)
    parts = [("## " if fmt == "github" else "") + f"{title} ({bootstrap.METHOD}, paired: the same resampled "
             "items for both)", ""]
    for (task, dataset), rs in groups.items():
        parts.append(f"{task} / {dataset}, {rs[0]['metric']}:")
        table = [[r["a"], r["b"], f"{r['difference']:+.2f}",
                  "" if r["ci95"] is None else f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]",
                  "yes" if r["excludes_zero"] else "no"] for r in rs]
        parts += [tabulate(table, headers=["A", "B", "A − B", "95 % CI", "excludes 0"], tablefmt=fmt,
                           disable_numparse=True), ""]
    return "\n".join(parts)
