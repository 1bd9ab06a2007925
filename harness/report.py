"""Tables (terminal + Markdown), CSV and PNG figures from result JSON files."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import OrderedDict
from pathlib import Path

from tabulate import tabulate

from .api import HarnessError
from .io import io_error, write_json_atomic, write_text_atomic
from .levels import level_figure, level_markdown, level_pairs
from .representations import representation_figure, representation_groups, representation_markdown


def load_results(out_dir: str | os.PathLike) -> list[dict]:
    folder = Path(out_dir) / "results"
    if not folder.is_dir():
        raise HarnessError(f"{out_dir}: no results/ folder (expected the --out directory of a 'harness run')")
    results = []
    for p in sorted(folder.glob("*.json")):
        try:
            results.append(json.loads(p.read_text()))
        except ValueError as exc:
            raise HarnessError(f"{p}: not valid JSON ({exc})") from None
    if not results:
        raise HarnessError(f"{folder}: no result files")
    return results


def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return v


def tables(results: list[dict]) -> "OrderedDict[str, tuple[list[str], list[list]]]":
    """One table per task: rows (dataset, encoder), columns the task's headline metrics."""
    by_task: "OrderedDict[str, list[dict]]" = OrderedDict()
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    out = OrderedDict()
    for task, rs in by_task.items():
        metrics: list[str] = []
        for r in rs:
            for m in (r.get("headline") or list(r.get("metrics", {}))):
                if m not in metrics:
                    metrics.append(m)
        # a "(paper)" column right after each metric that has published reference numbers
        with_ref = {m for r in rs for m in (r.get("reference") or {}) if m in metrics}
        header = ["dataset", "encoder"]
        for m in metrics:
            header += [m, f"{m} (paper)"] if m in with_ref else [m]
        header.append("status")
        rows = []
        for r in sorted(rs, key=lambda r: (r["dataset"], r["encoder"])):
            vals = []
            for m in metrics:
                vals.append(_fmt(r.get("metrics", {}).get(m, "")))
                if m in with_ref:
                    vals.append(_fmt((r.get("reference") or {}).get(m, "")))
            status = r["status"] if r["status"] == "ok" else f"FAILED: {(r.get('error') or '')[:60]}"
            rows.append([r["dataset"], r["encoder"], *vals, status])
        out[task] = (header, rows)
    return out


def render(results: list[dict], fmt: str = "simple") -> str:
    parts = []
    for task, (header, rows) in tables(results).items():
        parts.append(f"## {task}\n" if fmt == "github" else f"{task}")
        parts.append(tabulate(rows, headers=header, tablefmt=fmt, floatfmt=".2f"))
        failed = [r for r in results if r["task"] == task and r["status"] != "ok" and r.get("error")]
        if failed:  # the table cuts errors short: each one in full, once, below it
            parts.append("")
            parts += [f"FAILED {r['dataset']} / {r['encoder']}: {r['error']}" for r in
                      sorted(failed, key=lambda r: (r["dataset"], r["encoder"]))]
        parts.append("")
    pairs = level_pairs(results)
    if pairs:
        parts.append(level_markdown(pairs, fmt))
    groups = representation_groups(results)
    if groups:
        parts.append(representation_markdown(groups, fmt))
    return "\n".join(parts)


def _csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "dataset", "encoder", "metric", "value", "status"])
    for r in sorted(results, key=lambda r: (r["task"], r["dataset"], r["encoder"])):
        metrics = r.get("metrics", {}) or {"": ""}
        for m, v in metrics.items():
            w.writerow([r["task"], r["dataset"], r["encoder"], m, v, r["status"]])
    return buf.getvalue()


def _figure(results: list[dict], path: Path) -> Path | None:
    """Grouped bars of each task's first headline metric: datasets on x, one bar per encoder."""
    ok = [r for r in results if r["status"] == "ok" and r.get("metrics")]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(OrderedDict.fromkeys(r["task"] for r in ok))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [r for r in ok if r["task"] == task]
        metric = (rs[0].get("headline") or list(rs[0]["metrics"]))[0]
        datasets = list(OrderedDict.fromkeys(r["dataset"] for r in rs))
        encoders = list(OrderedDict.fromkeys(r["encoder"] for r in rs))
        width = 0.8 / max(1, len(encoders))
        for j, e in enumerate(encoders):
            ys = [next((r["metrics"].get(metric, float("nan")) for r in rs
                        if r["dataset"] == d and r["encoder"] == e), float("nan")) for d in datasets]
            ax.bar([i + j * width for i in range(len(datasets))], ys, width, label=e)
        ax.set_xticks([i + width * (len(encoders) - 1) / 2 for i in range(len(datasets))], datasets)
        ax.set_title(f"{task}: {metric}")
        ax.set_xlabel("dataset")
        ax.set_ylabel(metric)
        # beside the axes, never over the bars
        ax.legend(title="encoder", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps the legend beside the axes in the image
    plt.close(fig)
    return path


def write_report(out_dir: str | os.PathLike, results: list[dict] | None = None, figure: bool = True) -> dict:
    """Write report.md, results.csv, summary.json (and summary.png); return their paths."""
    out = Path(out_dir)
    results = load_results(out) if results is None else results
    written = {}
    pairs = level_pairs(results)  # object vs part (Fig. 7) wherever the run has an object/part pair
    md = out / "report.md"
    write_text_atomic(md, render(results, "github"), "writing the report")
    written["markdown"] = md
    write_text_atomic(out / "results.csv", _csv(results), "writing the report")
    written["csv"] = out / "results.csv"
    summary = [{k: r.get(k) for k in ("unit", "task", "dataset", "encoder", "status", "metrics", "error")}
               for r in results]
    write_json_atomic(out / "summary.json", summary)
    written["json"] = out / "summary.json"
    if pairs:
        write_json_atomic(out / "levels.json", pairs)
        written["levels"] = out / "levels.json"
    groups = representation_groups(results)  # encoded vs projected wherever two tasks differ only in that
    if groups:
        write_json_atomic(out / "representations.json", groups)
        written["representations"] = out / "representations.json"
    if figure:
        figures = (("figure", "summary.png", lambda p: _figure(results, p)),
                   ("levels_figure", "levels.png", lambda p: level_figure(pairs, p)),
                   ("representations_figure", "representations.png", lambda p: representation_figure(groups, p)))
        for name, filename, draw in figures:
            path = out / filename
            try:
                if draw(path):
                    written[name] = path
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise io_error(path, exc, "writing the report") from None
    return written
