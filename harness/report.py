"""Tables (terminal + Markdown; numbers with their bootstrap intervals), CSV, the summary figure (error bars
from the intervals) and the paired differences between encoders (comparisons.json) from result JSON files, then
every registered report plugin (``register_reports``: e.g. object vs part, encoded vs projected) over the same results."""
from __future__ import annotations

import csv
import io
import warnings
import math
import os
from collections import OrderedDict
from pathlib import Path

from tabulate import tabulate

from . import compare
from .api import Report
from .io import io_error, write_json_atomic, write_text_atomic
from .results import ci95, load_results


def report_plugins(plugins=None) -> list[Report]:
    """One instance of every registered report plugin, in registration order."""
    if plugins is None:
        from .plugins import Plugins

        plugins = Plugins()
    out = []
    for name, reg in plugins.registry["report"].items():
        rep = reg.cls(name)
        rep.plugin_name = name
        out.append(rep)
    return out


def _guarded(rep: Report, what: str, fn, default):
    """A report plugin's failure is one warning line, never a lost report."""
    try:
        return fn()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - isolate plugin failures
        warnings.warn(f"report '{rep.name}' failed while {what}: {type(exc).__name__}: {exc}")
        return default


def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return v


def with_interval(value, ci, compact: bool = False) -> str:
    """``78.90 [77.60, 80.10]``, or ``78.90 ± 1.25`` (the interval's half-width) when ``compact``."""
    text = _fmt(value)
    if ci is None or not isinstance(value, (int, float)):
        return text
    return f"{text} ± {(ci[1] - ci[0]) / 2:.2f}" if compact else f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]"


def legend(results: list[dict], compact: bool = False) -> str:
    """What the intervals beside the numbers are (empty when no result has any)."""
    found = next((r["intervals"] for r in results if r.get("intervals")), None)
    if not found:
        return ""
    shape = "± half-width of the" if compact else "[lo, hi]:"
    seeds = " With seeds: the mean over the seeds and the interval of that mean." if any(
        r.get("seeds") for r in results) else ""
    return (f"{shape} 95 % {found['method']} interval ({found['resamples']} resamples of the test items: queries, "
            f"test images or test crops; paired across encoders).{seeds}")


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
                vals.append(with_interval(r.get("metrics", {}).get(m, ""), ci95(r, m)))
                if m in with_ref:
                    vals.append(_fmt((r.get("reference") or {}).get(m, "")))
            status = r["status"] if r["status"] == "ok" else f"FAILED: {(r.get('error') or '')[:60]}"
            rows.append([r["dataset"], r["encoder"], *vals, status])
        out[task] = (header, rows)
    return out


def render(results: list[dict], fmt: str = "simple", reports: list[Report] | None = None, out_dir=None,
           pairs: list[dict] | None = None) -> str:
    """The tables of every task (numbers with their intervals), the paired differences between the encoders of
    each (task, dataset) (``pairs``, else computed when ``out_dir``, the folder of the per-item files, is given),
    then every report plugin's text."""
    parts = []
    for task, (header, rows) in tables(results).items():
        parts.append(f"## {task}\n" if fmt == "github" else f"{task}")
        parts.append(tabulate(rows, headers=header, tablefmt=fmt, floatfmt=".2f"))
        failed = [r for r in results if r["task"] == task and r["status"] != "ok" and r.get("error")]
        if failed:  # the table cuts errors short: each distinct one in full, once, below it
            parts.append("")
            by_error: "OrderedDict[str, list[dict]]" = OrderedDict()
            for r in sorted(failed, key=lambda r: (r["dataset"], r["encoder"])):
                by_error.setdefault(r["error"], []).append(r)
            for error, rs in by_error.items():
                who = ", ".join(f"{r['dataset']} / {r['encoder']}" for r in rs)
                parts.append(f"FAILED {who}: {error}")
        parts.append("")
    if legend(results):
        parts += [legend(results), ""]
    if pairs is None and out_dir is not None:
        pairs = compare.paired_differences(results, out_dir)
    if pairs:
        parts.append(compare.markdown(pairs, fmt))
    for rep in reports if reports is not None else report_plugins():
        text = _guarded(rep, "rendering", lambda rep=rep: rep.render(results, fmt), "")
        if text:
            parts.append(text)
    return "\n".join(parts)


def _csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "dataset", "encoder", "metric", "value", "status", "ci95_lo", "ci95_hi"])
    for r in sorted(results, key=lambda r: (r["task"], r["dataset"], r["encoder"])):
        metrics = r.get("metrics", {}) or {"": ""}
        for m, v in metrics.items():
            ci = ci95(r, m) or ["", ""]
            w.writerow([r["task"], r["dataset"], r["encoder"], m, v, r["status"], *ci])
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
            cell = [next((r for r in rs if r["dataset"] == d and r["encoder"] == e), None) for d in datasets]
            ys = [float("nan") if r is None else _number(r["metrics"].get(metric)) for r in cell]
            ax.bar([i + j * width for i in range(len(datasets))], ys, width, label=e,
                   yerr=error_bars(ys, [None if r is None else ci95(r, metric) for r in cell]), capsize=2,
                   error_kw={"elinewidth": 0.8})
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


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def error_bars(values: list[float], intervals: list) -> list[list[float]]:
    """matplotlib's asymmetric ``yerr`` ([below], [above]) of bars from their intervals (0 where none)."""
    below = [0.0 if ci is None or math.isnan(v) else max(0.0, v - ci[0]) for v, ci in zip(values, intervals)]
    above = [0.0 if ci is None or math.isnan(v) else max(0.0, ci[1] - v) for v, ci in zip(values, intervals)]
    return [below, above]


def write_report(out_dir: str | os.PathLike, results: list[dict] | None = None, figure: bool = True,
                 plugins=None) -> dict:
    """Write report.md, results.csv, summary.json (and summary.png), then every report plugin's files;
    return their paths."""
    out = Path(out_dir)
    results = load_results(out) if results is None else results
    reports = report_plugins(plugins)
    written = {}
    md = out / "report.md"
    pairs = compare.paired_differences(results, out)
    write_text_atomic(md, render(results, "github", reports, pairs=pairs), "writing the report")
    written["markdown"] = md
    write_text_atomic(out / "results.csv", _csv(results), "writing the report")
    written["csv"] = out / "results.csv"
    summary = [{k: r.get(k) for k in ("unit", "task", "dataset", "encoder", "status", "metrics", "intervals",
                                      "seeds", "error")} for r in results]
    write_json_atomic(out / "summary.json", summary)
    written["json"] = out / "summary.json"
    write_json_atomic(out / "comparisons.json", pairs)
    written["comparisons"] = out / "comparisons.json"
    if figure:
        path = out / "summary.png"
        try:
            if _figure(results, path):
                written["figure"] = path
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise io_error(path, exc, "writing the report") from None
    for rep in reports:
        try:
            written.update(_guarded(rep, "writing its files", lambda rep=rep: rep.write(results, out, figure), {}))
        except OSError as exc:
            raise io_error(out, exc, f"writing report '{rep.name}'") from None
    return written
