"""Object- vs part-level comparison (the paper's Fig. 7), drawn for any run that has an object/part pair.

A pair is two datasets of one ``hierarchy`` (e.g. ADE20K-Object and ADE20K-Part) at different ``level``s,
evaluated by the same task plugin. Each encoder's headline metric on both is shown relative to the run's
supervised encoder (``Encoder.pretraining == "supervised"``): the paper's finding is that self-supervised
encoders lose to it on objects and close the gap, or win, on parts.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

from harness.api import error_bars, headline_value, hookimpl, paired_difference, with_interval

from .grouped import GroupedReport

BASELINE_PRETRAINING = "supervised"


def _ok(results: list[dict]) -> list[dict]:
    return [r for r in results if r.get("status") == "ok" and r.get("metrics") and r.get("dataset_hierarchy")
            and r.get("dataset_level") in ("object", "part")]


def interval(r: dict, metric: str) -> list[float] | None:
    """A result's 95 % bootstrap interval of ``metric`` (``intervals.ci95``), or None."""
    return ((r.get("intervals") or {}).get("ci95") or {}).get(metric)


def _metric(r: dict) -> str | None:
    found = headline_value(r)
    return found[0] if found else None


def level_pairs(results: list[dict], out_dir=None) -> list[dict]:
    """Every object/part pair of the results, with each encoder's values (and their 95 % bootstrap intervals)
    and its difference to the supervised baseline (with its paired interval when ``out_dir``, the folder of the
    per-item files, is given). A (task plugin, hierarchy) group pairs its object and part (task, dataset) cells
    when there is one of each, or else the cells that share a task name."""
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for r in _ok(results):
        groups.setdefault((r.get("task_plugin") or r["task"], r["dataset_hierarchy"]), []).append(r)
    pairs = []
    for (plugin, hierarchy), rs in groups.items():
        cells = {lvl: list(OrderedDict.fromkeys((r["task"], r["dataset"]) for r in rs if r["dataset_level"] == lvl))
                 for lvl in ("object", "part")}
        if len(cells["object"]) == 1 and len(cells["part"]) == 1:
            matched = [(cells["object"][0], cells["part"][0])]
        else:
            matched = [(o, p) for o in cells["object"] for p in cells["part"] if o[0] == p[0]]
        for obj, part in matched:
            by = {lvl: {r["encoder"]: r for r in rs if (r["task"], r["dataset"]) == cell}
                  for lvl, cell in (("object", obj), ("part", part))}
            encoders = [e for e in by["object"] if e in by["part"]]
            metric = _metric(by["object"][encoders[0]]) if encoders else None
            if metric is None:
                continue
            base = next((e for e in encoders if by["object"][e].get("encoder_pretraining") == BASELINE_PRETRAINING),
                        None)
            rows = []
            for e in encoders:
                o, p = (float(by[lvl][e]["metrics"].get(metric, math.nan)) for lvl in ("object", "part"))
                row = {"encoder": e, "pretraining": by["object"][e].get("encoder_pretraining"),
                       "object": o, "part": p, "object_ci95": interval(by["object"][e], metric),
                       "part_ci95": interval(by["part"][e], metric)}
                if base is not None:
                    row["object_vs_baseline"] = o - float(by["object"][base]["metrics"].get(metric, math.nan))
                    row["part_vs_baseline"] = p - float(by["part"][base]["metrics"].get(metric, math.nan))
                    for lvl in ("object", "part"):
                        found = None if out_dir is None else paired_difference(by[lvl][e], by[lvl][base], out_dir,
                                                                               metric=metric)
                        row[f"{lvl}_vs_baseline_ci95"] = found["ci95"] if found else None
                rows.append(row)
            pairs.append({"task_plugin": plugin, "hierarchy": hierarchy, "metric": metric,
                          "object": {"task": obj[0], "dataset": obj[1]}, "part": {"task": part[0], "dataset": part[1]},
                          "baseline": base, "rows": rows})
    return pairs


def level_markdown(pairs: list[dict], fmt: str = "github") -> str:
    from tabulate import tabulate

    parts = []
    for p in pairs:
        base = p["baseline"]
        title = (("## " if fmt == "github" else "") + f"object vs part: {p['hierarchy']} "
                 f"({p['object']['dataset']} / {p['part']['dataset']}), {p['task_plugin']} {p['metric']}")
        header = ["encoder", "pretraining", "object", "part"]
        if base:
            header += [f"object − {base}", f"part − {base}"]
        rows = [[r["encoder"], r["pretraining"] or "", with_interval(r["object"], r.get("object_ci95"), compact=True),
                 with_interval(r["part"], r.get("part_ci95"), compact=True),
                 *([with_interval(r["object_vs_baseline"], r.get("object_vs_baseline_ci95"), compact=True),
                    with_interval(r["part_vs_baseline"], r.get("part_vs_baseline_ci95"), compact=True)] if base else [])]
                for r in p["rows"]]
        note = "" if base else "\n(no encoder of this run declares supervised pretraining: no baseline)\n"
        if any(r.get("object_ci95") for r in p["rows"]):
            note += ("\n± half-width of the 95 % bootstrap interval (differences: paired, the same resampled "
                     "items for both encoders)\n")
        parts += [title, "", tabulate(rows, headers=header, tablefmt=fmt, floatfmt=".2f"), note]
    return "\n".join(parts)


def level_figure(pairs: list[dict], path: Path) -> Path | None:
    """One panel per pair: for every encoder but the baseline, its object- and part-level difference to
    the supervised baseline (the paper's Fig. 7). A run without a supervised encoder gets the absolute
    object- and part-level values of every encoder instead, and the panel says so."""
    drawn = [p for p in pairs if len(p["rows"]) > (1 if p["baseline"] else 0)]
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(4.5, 1.1 * max(len(p["rows"]) for p in drawn) + 2)
    cols = min(3, len(drawn))  # rows of at most three panels
    rows_n = math.ceil(len(drawn) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(width * cols, 3.8 * rows_n), squeeze=False)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, drawn):
        base = p["baseline"]
        rows = [r for r in p["rows"] if r["encoder"] != base]
        key = "_vs_baseline" if base else ""
        xs = range(len(rows))
        for offset, level, colour in ((-0.2, "object", "#4c72b0"), (0.2, "part", "#dd8452")):
            ys = [r[f"{level}{key}"] for r in rows]
            ax.bar([x + offset for x in xs], ys, 0.4, color=colour, label=f"{level} ({p[level]['dataset']})",
                   yerr=error_bars(ys, [r.get(f"{level}{key}_ci95") for r in rows]), capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.axhline(0, color="black", linewidth=0.8)
        if any(r.get("object_ci95") for r in rows):
            ax.text(0.0, -0.32, "error bars: 95 % bootstrap intervals" + (" (paired differences)" if base else ""),
                    transform=ax.transAxes, fontsize=7, va="top")
        ax.set_xticks(list(xs), [r["encoder"] for r in rows], rotation=30, ha="right")
        if base:
            ax.set_ylabel(f"{p['metric']} − {base} (points)")
            ax.set_title(f"{p['hierarchy']}: {p['task_plugin']}, relative to {base} (supervised)", fontsize=9)
        else:
            ax.set_ylabel(p["metric"])
            ax.set_title(f"{p['hierarchy']}: {p['task_plugin']} (no supervised encoder in this run: "
                         "absolute values)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps the legend beside the axes in the image
    plt.close(fig)
    return path


class ObjectVsPart(GroupedReport):
    """Object vs part relative to the supervised encoder (the paper's Fig. 7), for every object/part pair of
    datasets in a run: a table, levels.json and levels.png."""

    stem = "levels"

    def groups(self, results, out_dir=None):
        return level_pairs(results, out_dir)

    def markdown(self, groups, fmt):
        return level_markdown(groups, fmt)

    def figure(self, groups, path):
        return level_figure(groups, path)


@hookimpl
def register_reports(register):
    register("levels", ObjectVsPart)
