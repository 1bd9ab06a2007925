"""The object-vs-part comparison (Fig. 7): pairing rules, differences to the supervised encoder, outputs."""
import json

import pytest

from harness import report
from partbench_plugins.reports.levels import level_pairs


def res(task, dataset, encoder, value, level, hierarchy, pretraining, plugin="linear_seg", status="ok"):
    return {"unit": f"{task}__{dataset}__{encoder}", "task": task, "task_plugin": plugin, "dataset": dataset,
            "encoder": encoder, "status": status, "headline": ["mIoU", "mAcc"],
            "metrics": {"mIoU": value, "mAcc": value + 10} if status == "ok" else {}, "dataset_level": level,
            "dataset_hierarchy": hierarchy, "encoder_pretraining": pretraining, "error": None}


# Table 7 of the paper (ADE20K-Object / ADE20K-Part mIoU): DeiT, DINO, CAE
TABLE7 = [("deit", "supervised", 52.6, 27.3), ("dino", "contrastive", 50.8, 28.9),
          ("cae", "masked image modelling", 47.4, 28.4)]


def ade_results():
    out = []
    for enc, pre, obj, part in TABLE7:
        out.append(res("seg", "ade_object", enc, obj, "object", "ade20k", pre))
        out.append(res("seg", "ade_part", enc, part, "part", "ade20k", pre))
    out.append(res("seg", "ade150", "deit", 34.9, "object", None, "supervised"))  # no hierarchy: not paired
    out.append(res("seg", "lip", "deit", 41.4, "part", "lip", "supervised"))  # no object partner
    return out


def test_differences_to_the_supervised_encoder_match_the_paper_text():
    (pair,) = level_pairs(ade_results())
    assert pair["baseline"] == "deit" and pair["metric"] == "mIoU"
    assert (pair["object"]["dataset"], pair["part"]["dataset"]) == ("ade_object", "ade_part")
    rows = {r["encoder"]: r for r in pair["rows"]}
    # paper, A.6: "DeiT (52.6%) outperforms DINO (50.8%) and CAE (47.4%) by 1.8% and 5.2% ... DINO (28.9%)
    # outperforms DeiT (27.3%) by 1.6% and CAE (28.4%) outperforms DeiT by 1.1%"
    assert rows["dino"]["object_vs_baseline"] == pytest.approx(-1.8)
    assert rows["cae"]["object_vs_baseline"] == pytest.approx(-5.2)
    assert rows["dino"]["part_vs_baseline"] == pytest.approx(1.6)
    assert rows["cae"]["part_vs_baseline"] == pytest.approx(1.1)
    assert rows["deit"]["object_vs_baseline"] == 0


def test_failed_units_and_missing_baseline():
    rs = ade_results()
    rs[2] = res("seg", "ade_object", "dino", 0, "object", "ade20k", "contrastive", status="failed")
    (pair,) = level_pairs(rs)
    assert [r["encoder"] for r in pair["rows"]] == ["deit", "cae"]  # dino lacks its object result
    no_sup = [dict(r, encoder_pretraining="contrastive") for r in ade_results()]
    (pair,) = level_pairs(no_sup)
    assert pair["baseline"] is None and "object_vs_baseline" not in pair["rows"][0]
    assert "no baseline" in report.render(no_sup, "github")


def test_several_tasks_pair_by_task_name():
    rs = []
    for task in ("retr_a", "retr_b"):
        for enc, pre, obj, part in TABLE7:
            rs.append(res(task, "objs", enc, obj, "object", "synth", pre, plugin="retrieval"))
            rs.append(res(task, "parts", enc, part + (task == "retr_b"), "part", "synth", pre, plugin="retrieval"))
    pairs = level_pairs(rs)
    assert [(p["object"]["task"], p["part"]["task"]) for p in pairs] == [("retr_a", "retr_a"), ("retr_b", "retr_b")]
    assert pairs[1]["rows"][0]["part"] == 28.3


def test_report_writes_table_json_and_figure(tmp_path):
    written = report.write_report(tmp_path, ade_results())
    md = (tmp_path / "report.md").read_text()
    assert "object vs part: ade20k (ade_object / ade_part)" in md and "part − deit" in md
    assert json.loads((tmp_path / "levels.json").read_text())[0]["baseline"] == "deit"
    png = written["levels_figure"]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "object vs part" in report.render(ade_results())


def test_a_run_without_a_supervised_encoder_still_gets_the_chart(tmp_path):
    no_sup = [dict(r, encoder_pretraining=None) for r in ade_results()]
    written = report.write_report(tmp_path, no_sup)
    assert written["levels_figure"].is_file()
    assert json.loads((tmp_path / "levels.json").read_text())[0]["baseline"] is None


def test_a_failed_units_full_error_is_printed_once_below_its_table():
    long_error = "HarnessError: " + "x" * 70 + " the end of a long message naming /some/file.json"
    rs = ade_results()
    rs[0] = dict(rs[0], status="failed", metrics={}, error=long_error)
    for fmt in ("simple", "github"):
        text = report.render(rs, fmt)
        assert text.count(long_error) == 1  # in full, once
        assert "FAILED: HarnessError: xxx" in text  # the table cell stays short
        assert f"FAILED ade_object / deit: {long_error}" in text


def test_summary_figure_labels_its_axes_and_keeps_the_legend_off_the_bars(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    real = plt.Figure.savefig

    def keep(fig, path, *a, **k):
        if str(path).endswith("summary.png"):
            captured["fig"] = fig
        return real(fig, path, *a, **k)

    plt.Figure.savefig = keep
    try:
        report.write_report(tmp_path, ade_results())
    finally:
        plt.Figure.savefig = real
    ax = captured["fig"].axes[0]
    assert ax.get_xlabel() == "dataset" and ax.get_ylabel() == "mIoU"
    legend_box = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    assert legend_box.x0 >= axes_box.x1  # beside the plotting area, not over the bars


# Tables 2 and 4 of the paper (MoCo v3, COCO objects / COCO parts AP): encoded vs projected
def retrieval(task, dataset, encoder, value, level, representation, options=None, status="ok"):
    opts = {"representation": representation, **(options or {})}
    return {"unit": f"{task}__{dataset}__{encoder}", "task": task, "task_plugin": "retrieval", "dataset": dataset,
            "encoder": encoder, "status": status, "headline": ["AP"], "metrics": {"AP": value} if status == "ok" else {},
            "dataset_level": level, "dataset_hierarchy": "coco", "encoder_pretraining": "contrastive", "error": None,
            "config": {"task": {"name": task, "plugin": "retrieval", "options": opts}}}


def test_encoded_vs_projected_groups_tasks_that_differ_only_in_the_representation(tmp_path):
    from partbench_plugins.reports.representations import representation_groups

    rs = [retrieval("r", "coco_objects", "mocov3", 40.0, "object", "cls"),
          retrieval("r_proj", "coco_objects", "mocov3", 45.0, "object", "projected"),
          retrieval("r", "coco_parts", "mocov3", 30.0, "part", "cls"),
          retrieval("r_proj", "coco_parts", "mocov3", 20.0, "part", "projected"),
          retrieval("r", "coco_parts", "deit", 25.0, "part", "cls"),  # one representation only: no group
          retrieval("r_224", "coco_parts", "mocov3", 99.0, "part", "mean_patch", {"transform": "resize:96"}),  # other options
          retrieval("r_failed", "coco_objects", "mocov3", 0.0, "object", "mean_patch", status="failed")]
    groups = representation_groups(rs)
    assert [(g["dataset"], dict(g["values"])) for g in groups] == [
        ("coco_objects", {"cls": 40.0, "projected": 45.0}), ("coco_parts", {"cls": 30.0, "projected": 20.0})]
    assert groups[0]["level"] == "object" and groups[0]["metric"] == "AP"
    written = report.write_report(tmp_path, rs)
    assert json.loads((tmp_path / "representations.json").read_text()) == json.loads(json.dumps(groups))
    assert written["representations_figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "representations compared" in md and "| mocov3    | coco_parts   | part    | retrieval AP | 30.00 |       20.00 |" in md
    assert "representations compared" not in report.render(rs[:1] + rs[4:5])


REPORT_PLUGIN = '''
from pathlib import Path

from harness.api import Report, hookimpl, write_json_atomic


class CountUnits(Report):
    """Counts the units of a run by status."""

    def render(self, results, fmt="github"):
        return f"units by status: {sorted((r['status'], r['unit']) for r in results)}"

    def write(self, results, out_dir, figures=True):
        path = Path(out_dir) / "count.json"
        write_json_atomic(path, {"n": len(results), "figures": figures})
        return {"count": path}


class Broken(Report):
    def render(self, results, fmt="github"):
        raise RuntimeError("broken render")

    def write(self, results, out_dir, figures=True):
        raise RuntimeError("broken write")


@hookimpl
def register_reports(register):
    register("count_units", CountUnits)
    register("broken", Broken)
'''


def test_hook_register_reports(tmp_path):
    """A report plugin registered through the hook is run by write_report and render with the results; a
    failing one costs one warning, never the rest of the report."""
    from harness.plugins import Plugins

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "count_report.py").write_text(REPORT_PLUGIN)
    plugins = Plugins(plugins_dirs=[folder], allow=["count_report", "levels"])
    assert set(plugins.registry["report"]) == {"count_units", "broken", "levels"}
    assert plugins.registry["report"]["count_units"].origin == f"file:{folder / 'count_report.py'}"
    results = ade_results()
    with pytest.warns(UserWarning, match="report 'broken' failed while writing its files: RuntimeError: broken write"):
        written = report.write_report(tmp_path / "out", results, figure=False, plugins=plugins)
    assert json.loads(written["count"].read_text()) == {"n": len(results), "figures": False}
    assert "levels" in written and "levels_figure" not in written  # the built-in one, without figures
    md = (tmp_path / "out" / "report.md").read_text()
    assert "units by status: [('ok', 'seg__ade150__deit')," in md and "object vs part" in md


def test_a_report_plugin_must_subclass_report(tmp_path):
    from harness.api import HarnessError
    from harness.plugins import Plugins

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "bad_report.py").write_text("from harness.api import hookimpl\n\nclass NotAReport:\n    pass\n\n\n"
                                          "@hookimpl\ndef register_reports(register):\n"
                                          "    register('bad', NotAReport)\n")
    with pytest.raises(HarnessError, match="report 'bad' must be a subclass of harness.Report"):
        Plugins(plugins_dirs=[folder], allow=["bad_report"])


def test_levels_beyond_two_are_ordered_as_the_datasets_declare_them(tmp_path):
    """SPIN-like results at three levels, declared coarse to fine and listed here fine to coarse: one group of
    three, each level's difference to the supervised encoder; two-level groups keep their object/part keys."""
    declared = ["object", "part", "subpart"]
    rs = []
    for enc, pre, vals in (("deit", "supervised", (60.0, 40.0, 30.0)), ("dino", "contrastive", (55.0, 42.0, 33.5))):
        for lvl, v in reversed(list(zip(declared, vals))):
            rs.append(dict(res("retr", f"spin_{lvl}", enc, v, lvl, "spin", pre, plugin="retrieval"),
                           dataset_levels=declared))
    (group,) = level_pairs(rs)
    assert group["levels"] == declared and [group[lvl]["dataset"] for lvl in declared] == [
        "spin_object", "spin_part", "spin_subpart"]
    dino = group["rows"][1]
    assert (dino["object_vs_baseline"], dino["part_vs_baseline"], dino["subpart_vs_baseline"]) == (-5.0, 2.0, 3.5)
    md = report.render(rs)
    assert "object vs part vs subpart: spin (spin_object / spin_part / spin_subpart)" in md and "subpart − deit" in md
    written = report.write_report(tmp_path, rs)
    assert written["levels_figure"].is_file()
    # undeclared levels: object before part, other names in order of appearance after them
    (pair,) = level_pairs(ade_results())
    assert pair["levels"] == ["object", "part"]
    odd = [dict(r, dataset_level={"object": "whole", "part": "piece"}[r["dataset_level"]]) for r in ade_results()
           if r["dataset_hierarchy"] == "ade20k"]
    assert level_pairs(odd)[0]["levels"] == ["whole", "piece"]
