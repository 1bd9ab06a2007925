"""CLI: ls, plugins, report, dry-run, and the one-line errors."""
import json

from harness.cli import main

from conftest import TOY_PLUGINS


def _run(args, capsys, monkeypatch, allow="toy"):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", allow)
    code = main([*args, "--plugins-dir", str(TOY_PLUGINS)] if args[0] not in ("report",) else args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


SPEC = """
encoders: {stats: {plugin: toy_stats}}
datasets: {colours: {plugin: toy_colours, options: {n: 6}}}
tasks: {centroid: {plugin: toy_centroid}}
"""


def test_ls_shows_name_origin_description(capsys, monkeypatch):
    code, out, _ = _run(["ls", "encoders"], capsys, monkeypatch, allow="toy,baselines")
    assert code == 0
    rows = {l.split()[0]: l for l in out.splitlines()[2:]}
    assert "partbench:baselines" in rows["random_vit"]
    assert "file:" in rows["toy_stats"] and "Per-patch colour statistics" in rows["toy_stats"]


def test_plugins_json(capsys, monkeypatch):
    code, out, _ = _run(["plugins"], capsys, monkeypatch)
    data = json.loads(out)
    assert code == 0 and data[0]["hooks"] == ["register_datasets", "register_encoders", "register_tasks"]


def test_dry_run_writes_nothing(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, out, _ = _run(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"], capsys, monkeypatch)
    assert code == 0 and "centroid__colours__stats" in out and not (tmp_path / "o").exists()


def test_run_then_report_rerenders_tables_csv_json_png(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, out, _ = _run(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"], capsys, monkeypatch)
    assert code == 0 and "acc" in out and "1 units: 1 run, 0 resumed, 0 failed; 6 encoder forwards" in out
    for f in ("report.md", "results.csv", "summary.json", "summary.png"):
        assert (tmp_path / "o" / f).is_file(), f
    (tmp_path / "o/report.md").unlink()
    code, out, _ = _run(["report", str(tmp_path / "o"), "--format", "github"], capsys, monkeypatch)
    assert code == 0 and "| colours   | stats     |" in out and (tmp_path / "o/report.md").is_file()
    assert "task,dataset,encoder,metric,value,status" in (tmp_path / "o/results.csv").read_text()


def test_report_on_a_non_output_dir_is_one_line(tmp_path, capsys, monkeypatch):
    code, out, err = _run(["report", str(tmp_path)], capsys, monkeypatch)
    assert code == 1 and err.strip().count("\n") == 0 and "no results/ folder" in err


def test_validate_missing_spec_file(tmp_path, capsys, monkeypatch):
    code, _, err = _run(["validate", str(tmp_path / "nope.yaml")], capsys, monkeypatch)
    assert code == 2 and "nope.yaml: spec file not found" in err


def test_reference_numbers_shown_beside_ours(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + "reference: {centroid: {colours: {stats: {acc: 12.5}}}}\n")
    code, out, _ = _run(["run", str(spec), "--out", str(tmp_path / "o"), "--no-progress"], capsys, monkeypatch)
    assert code == 0
    header = next(l for l in out.splitlines() if l.startswith("dataset"))
    assert header.split() == ["dataset", "encoder", "acc", "acc", "(paper)", "status"]
    assert "12.50" in out


def test_reference_names_are_validated(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + "reference: {centroid: {colours: {stat: {acc: 12.5}}}}\n")
    code, _, err = _run(["validate", str(spec)], capsys, monkeypatch)
    assert code == 2 and "reference.centroid.colours.stat: 'stat' is not defined in encoders; did you mean 'stats'?" in err


def test_ls_one_plugin_shows_its_options(capsys):
    from harness.cli import main

    assert main(["ls", "tasks", "linear_seg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linear_seg (task, partbench:linear_seg, version ")
    row = next(l for l in out.splitlines() if l.startswith("iterations"))
    assert row.split()[:3] == ["iterations", "integer", "160000"] and "training iterations" in row
    assert "[choices: fast, paper]" in out and "headline: mIoU, mAcc, aAcc" in out
    assert main(["ls", "encoders", "dino"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint" in out and "(required)" in out and "pretraining: contrastive" in out
    assert main(["ls", "encoders", "dinoo"]) == 1
    assert "unknown encoder 'dinoo'; did you mean 'dino'?" in capsys.readouterr().err


def test_ls_without_a_kind_lists_all_three_under_headings(capsys, monkeypatch):
    code, out, _ = _run(["ls"], capsys, monkeypatch)
    assert code == 0
    lines = out.splitlines()
    headings = [l for l in lines if l.endswith(")") and not l.startswith(" ")]
    assert headings == ["encoders (1)", "datasets (1)", "tasks (1)"], out
    for heading, name in zip(headings, ["toy_stats", "toy_colours", "toy_centroid"]):
        section = lines[lines.index(heading):]
        assert section[1].split() == ["name", "origin", "description"] and section[3].startswith(name)


def test_ls_accepts_singular_kinds(capsys, monkeypatch):
    for plural, singular in [("encoders", "encoder"), ("datasets", "dataset"), ("tasks", "task")]:
        assert _run(["ls", singular], capsys, monkeypatch)[:2] == _run(["ls", plural], capsys, monkeypatch)[:2]
    code, out, _ = _run(["ls", "dataset", "toy_colours"], capsys, monkeypatch)
    assert code == 0 and out.startswith("toy_colours (dataset, file:")
    code, _, err = _run(["ls", "dataset", "toy_colour"], capsys, monkeypatch)
    assert code == 1 and "unknown dataset 'toy_colour'; did you mean 'toy_colours'?" in err


def test_output_piped_into_head_is_no_error():
    """`harness ls | head -1`: the reader stops early; harness exits quietly, without a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("harness")
    r = subprocess.run(f"'{exe}' ls | head -1", shell=True, capture_output=True, text=True,
                       executable="/bin/bash")
    assert r.stdout.strip() and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
