"""Level against level (the paper's Fig. 7, object vs part), drawn for any run whose datasets of one family sit at
two or more levels.

A group is the datasets of one ``hierarchy`` (e.g. ADE20K-Object and ADE20K-Part; SPIN at object, part and
subpart level) at different ``level``s, evaluated by the same task plugin. Each encoder's headline metric at
every level is shown relative to the run's supervised encoder (``Encoder.pretraining == "supervised"``): the
paper's finding is that self-supervised encoders lose to it on objects and close the gap, or win, on parts.
Level names are the datasets' own; they are ordered coarse to fine as the datasets declare them
(``Dataset.levels``, carried in results as ``dataset_levels``). Results that declare no order (written before
datasets declared one) put "object" before "part", the two levels every older dataset used.
"""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from pathlib import Path

from harness.api import ci95, error_bars, headline_value, hookimpl, paired_difference, with_interval

from .grouped import GroupedReport

BASELINE_PRETRAINING = "supervised"
#: the order of results that carry no declared levels
UNDECLARED_ORDER = ("object", "part")
#: keys of a group and of its rows: a level of one of these names cannot be a key beside them
RESERVED = frozenset({"task_plugin", "hierarchy", "metric", "levels", "baseline", "rows", "encoder", "pretraining"})
#: bar colours by level position (the first two are the two-level chart's)
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _ok(results: list[dict]) -> list[dict]:
    return [r for r in results if r.get("status") == "ok" and r.get("metrics") and r.get("dataset_hierarchy")
            and isinstance(r.get("dataset_level"), str) and r["dataset_level"] not in RESERVED]


def _metric(r: dict) -> str | None:
    found = headline_value(r)
    return found[0] if found else None


def level_order(results: list[dict]) -> list[str]:
    """The levels of ``results`` coarse to fine: by the first declared ``dataset_levels`` that names a level,
    then ``UNDECLARED_ORDER``, then first appearance."""
    seen = list(OrderedDict.fromkeys(r["dataset_level"] for r in results))
    declared = [list(r.get("dataset_levels") or ()) for r in results]

    def key(level: str):
        where = next((d.index(level) for d in declared if level in d), None)
        if where is None and level in UNDECLARED_ORDER:
            where = UNDECLARED_ORDER.index(level)
        return (where is None, where if where is not None else 0, seen.index(level))

    return sorted(seen, key=key)


def _matched(cells: dict[str, list[tuple]]) -> list[dict[str, tuple]]:
    """{level: (task, dataset)} of every group: all levels when each has one cell, else the cells that share a
    task name (at the levels where that name appears, two at least)."""
    if all(len(c) == 1 for c in cells.values()):
        return [{lvl: c[0] for lvl, c in cells.items()}]
    out = []
    names = OrderedDict.fromkeys(cell[0] for c in cells.values() for cell in c)
    for name in names:
        per = {lvl: [cell for cell in c if cell[0] == name] for lvl, c in cells.items()}
        per = {lvl: c for lvl, c in per.items() if c}
        if len(per) >= 2:
            out += [dict(zip(per, combo)) for combo in itertools.product(*per.values())]
    return out


def level_pairs(results: list[dict], out_dir=None) -> list[dict]:
    """Every group of levels in the results (a pair for object/part), with each encoder's values (and their 95 %
    bootstrap intervals) and its differences to the supervised baseline (with their paired intervals when
    ``out_dir``, the folder of the per-item files, is given). A (task plugin, hierarchy) group with two or more
    levels takes its (task, dataset) cells of each level when there is one per level, or else the cells that
    share a task name."""
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for r in _ok(results):
        groups.setdefault((r.get("task_plugin") or r["task"], r["dataset_hierarchy"]), []).append(r)
    pairs = []
    for (plugin, hierarchy), rs in groups.items():
        levels = level_order(rs)
        if len(levels) < 2:
            continue
        cells = {lvl: list(OrderedDict.fromkeys((r["task"], r["dataset"]) for r in rs if r["dataset_level"] == lvl))
                 for lvl in levels}
        for match in _matched(cells):
            names = [lvl for lvl in levels if lvl in match]
            by = {lvl: {r["encoder"]: r for r in rs if (r["task"], r["dataset"]) == match[lvl]} for lvl in names}
            encoders = [e for e in by[names[0]] if all(e in by[lvl] for lvl in names)]
            metric = _metric(by[names[0]][encoders[0]]) if encoders else None
            if metric is None:
                continue
            base = next((e for e in encoders if by[names[0]][e].get("encoder_pretraining") == BASELINE_PRETRAINING),
                        None)
            rows = []
            for e in encoders:
                row = {"encoder": e, "pretraining": by[names[0]][e].get("encoder_pretraining")}
                for lvl in names:
                    row[lvl] = float(by[lvl][e]["metrics"].get(metric, math.nan))
                    row[f"{lvl}_ci95"] = ci95(by[lvl][e], metric)
                    if base is not None:
                        row[f"{lvl}_vs_baseline"] = row[lvl] - float(by[lvl][base]["metrics"].get(metric, math.nan))
                        found = None if out_dir is None else paired_difference(by[lvl][e], by[lvl][base], out_dir,
                                                                               metric=metric)
                        row[f"{lvl}_vs_baseline_ci95"] = found["ci95"] if found else None
                rows.append(row)
            pairs.append({"task_plugin": plugin, "hierarchy": hierarchy, "metric": metric, "levels": names,
                          **{lvl: {"task": match[lvl][0], "dataset": match[lvl][1]} for lvl in names},
                          "baseline": base, "rows": rows})
    return pairs


def level_markdown(pairs: list[dict], fmt: str = "github") -> str:
    from tabulate import tabulate

    parts = []
    for p in pairs:
        base, levels = p["baseline"], p["levels"]
        title = (("## " if fmt == "github" else "") + f"{' vs '.join(levels)}: {p['hierarchy']} "
                 f"({' / '.join(p[lvl]['dataset'] for lvl in levels)}), {p['task_plugin']} {p['metric']}")
        header = ["encoder", "pretraining", *levels]
        if base:
            header += [f"{lvl} − {base}" for lvl in levels]
        rows = [[r["encoder"], r["pretraining"] or "",
                 *(with_interval(r[lvl], r.get(f"{lvl}_ci95"), compact=True) for lvl in levels),
                 *([with_interval(r[f"{lvl}_vs_baseline"], r.get(f"{lvl}_vs_baseline_ci95"), compact=True)
                    for lvl in levels] if base else [])] for r in p["rows"]]
        note = "" if base else "\n(no encoder of this run declares supervised pretraining: no baseline)\n"
        if any(r.get(f"{lvl}_ci95") for r in p["rows"] for lvl in levels):
            note += ("\n± half-width of the 95 % bootstrap interval (differences: paired, the same resampled "
                     "items for both encoders)\n")
        parts += [title, "", tabulate(rows, headers=header, tablefmt=fmt, floatfmt=".2f"), note]
    return "\n".join(parts)


def level_figure(pairs: list[dict], path: Path) -> Path | None:
    """One panel per group: for every encoder but the baseline, its difference to the supervised baseline at
    each level (the paper's Fig. 7; one bar per level, coarse to fine). A run without a supervised encoder gets
    the absolute values of every encoder instead, and the panel says so."""
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
        base, levels = p["baseline"], p["levels"]
        rows = [r for r in p["rows"] if r["encoder"] != base]
        key = "_vs_baseline" if base else ""
        xs = range(len(rows))
        bar = 0.8 / len(levels)  # two levels: bars of 0.4 at -0.2 and +0.2
        for k, level in enumerate(levels):
            offset = (k - (len(levels) - 1) / 2) * bar
            ys = [r[f"{level}{key}"] for r in rows]
            ax.bar([x + offset for x in xs], ys, bar, color=COLOURS[k % len(COLOURS)],
                   label=f"{level} ({p[level]['dataset']})",
                   yerr=error_bars(ys, [r.get(f"{level}{key}_ci95") for r in rows]), capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.axhline(0, color="black", linewidth=0.8)
        if any(r.get(f"{lvl}_ci95") for r in rows for lvl in levels):
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
    """Level against level relative to the supervised encoder (the paper's Fig. 7, object vs part), for every
    group of datasets of one family at two or more levels in a run: a table, levels.json and levels.png."""

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
