"""Encoded vs projected (the paper's Table 4 question, and any other pair of representations): one encoder on
one dataset evaluated by two tasks of the same plugin whose options differ only in ``representation``.

For methods with a projection head the paper compares the encoder's output with the projector's: the
projector is trained for the pretext task and is expected to lose part information. Every such group of a
run becomes one row: the headline metric per representation.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from harness.api import ci95, error_bars, hookimpl, paired_difference, with_interval

from .grouped import GroupedReport
from .levels import _metric

IGNORED = ("representation", "extra")  # options that name what is read, not how the task runs


def representation_groups(results: list[dict], out_dir=None) -> list[dict]:
    """[{task_plugin, dataset, level, encoder, metric, values: {representation: value}, ci95: {representation:
    [lo, hi]}}], in run order; with ``out_dir`` (the folder of the per-item files) also ``paired``: {"<rep> −
    <first rep>": the paired difference} (the same queries resampled for both)."""
    groups: "OrderedDict[tuple, dict]" = OrderedDict()
    firsts: dict = {}
    for r in results:
        opts = ((r.get("config") or {}).get("task") or {}).get("options") or {}
        rep = opts.get("representation")
        if r.get("status") != "ok" or not r.get("metrics") or rep is None:
            continue
        same = json.dumps({k: v for k, v in opts.items() if k not in IGNORED}, sort_keys=True, default=str)
        key = (r.get("task_plugin") or r["task"], r["dataset"], r["encoder"], same)
        g = groups.setdefault(key, {"task_plugin": key[0], "dataset": r["dataset"], "level": r.get("dataset_level"),
                                    "encoder": r["encoder"], "metric": _metric(r), "values": OrderedDict()})
        if rep in g["values"]:
            continue
        g["values"][rep] = float(r["metrics"].get(g["metric"], float("nan")))
        g.setdefault("ci95", OrderedDict())[rep] = ci95(r, g["metric"])
        first_rep, first = firsts.setdefault(key, (rep, r))
        found = None if out_dir is None or first is r else paired_difference(r, first, out_dir, metric=g["metric"])
        if found:
            g.setdefault("paired", OrderedDict())[f"{rep} − {first_rep}"] = {
                k: found[k] for k in ("difference", "ci95", "excludes_zero")}
    return [g for g in groups.values() if len(g["values"]) > 1]


def representation_markdown(groups: list[dict], fmt: str = "github") -> str:
    from tabulate import tabulate

    reps = list(OrderedDict.fromkeys(rep for g in groups for rep in g["values"]))
    title = ("## " if fmt == "github" else "") + "representations compared (same task, encoder and dataset)"
    rows = [[g["encoder"], g["dataset"], g["level"] or "", f"{g['task_plugin']} {g['metric']}",
             *[with_interval(g["values"][rep], g["ci95"].get(rep), compact=True) if rep in g["values"] else ""
               for rep in reps]] for g in groups]
    note = ["± half-width of the 95 % bootstrap interval", ""] if any(
        v for g in groups for v in g["ci95"].values()) else []
    return "\n".join([title, "", tabulate(rows, headers=["encoder", "dataset", "level", "task", *reps], tablefmt=fmt,
                                          floatfmt=".2f"), "", *note])


def representation_figure(groups: list[dict], path: Path) -> Path | None:
    """One panel per (task plugin, encoder): datasets on x, one bar per representation."""
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for g in groups:
        panels.setdefault((g["task_plugin"], g["encoder"]), []).append(g)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, ((plugin, encoder), gs) in zip(axes[0], panels.items()):
        reps = list(OrderedDict.fromkeys(rep for g in gs for rep in g["values"]))
        width = 0.8 / len(reps)
        for j, rep in enumerate(reps):
            ys = [g["values"].get(rep, float("nan")) for g in gs]
            ax.bar([i + j * width for i in range(len(gs))], ys, width, label=rep, capsize=2, error_kw={"elinewidth": 0.8},
                   yerr=error_bars(ys, [g["ci95"].get(rep) for g in gs]))
        ax.set_xticks([i + width * (len(reps) - 1) / 2 for i in range(len(gs))],
                      [f"{g['dataset']}\n({g['level']})" if g["level"] else g["dataset"] for g in gs], fontsize=8)
        ax.set_ylabel(gs[0]["metric"])
        ax.set_title(f"{encoder}: {plugin}, by representation", fontsize=9)
        ax.legend(title="representation", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


class EncodedVsProjected(GroupedReport):
    """One encoder on one dataset under tasks that differ only in ``representation`` (encoded vs projected,
    the paper's Tables 2 and 4): a table, representations.json and representations.png."""

    stem = "representations"

    def groups(self, results, out_dir=None):
        return representation_groups(results, out_dir)

    def markdown(self, groups, fmt):
        return representation_markdown(groups, fmt)

    def figure(self, groups, path):
        return representation_figure(groups, path)


@hookimpl
def register_reports(register):
    register("representations", EncodedVsProjected)
