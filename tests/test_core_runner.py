"""Runner: failure isolation, feature cache reuse, resume after a hard kill, determinism."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from harness.runner import run_spec

from conftest import TOY_PLUGINS


def _spec(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


TWO_ENCODERS = """
encoders:
  good: {plugin: toy_stats}
  bad: {plugin: toy_stats, options: {fail: true}}
datasets:
  colours: {plugin: toy_colours, options: {n: 9}}
tasks:
  centroid: {plugin: toy_centroid}
  patch: {plugin: toy_centroid, options: {representation: mean_patch}}
"""


def test_failure_isolation_records_error_and_others_complete(tmp_path, toy_plugins, capsys, monkeypatch):
    spec = _spec(tmp_path, TWO_ENCODERS)
    res = run_spec(spec, tmp_path / "out", plugins=toy_plugins)
    status = {r["unit"]: r["status"] for r in res}
    assert status == {"centroid__colours__good": "ok", "patch__colours__good": "ok",
                      "centroid__colours__bad": "failed", "patch__colours__bad": "failed"}
    bad = json.loads((tmp_path / "out/results/centroid__colours__bad.json").read_text())
    assert bad["error"] == "encoder 'bad': RuntimeError: toy encoder asked to fail" and "Traceback" in bad["traceback"]
    good = json.loads((tmp_path / "out/results/centroid__colours__good.json").read_text())
    assert good["metrics"]["acc"] > 90
    for key in ("config", "versions", "timings", "forwards", "git_revision", "key", "inputs", "identity"):
        assert key in good
    assert good["config"]["encoder"]["plugin"] == "toy_stats"
    assert good["versions"]["torch"]
    # the CLI exits non-zero when a unit failed, and still prints the table
    from harness.cli import main

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "toy")
    code = main(["run", str(spec), "--out", str(tmp_path / "out2"), "--plugins-dir", str(TOY_PLUGINS),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out and "2 failed" in out


def test_cache_hit_performs_zero_forwards_and_tasks_share_features(tmp_path, toy_plugins):
    spec = _spec(tmp_path, """
        encoders: {stats: {plugin: toy_stats}}
        datasets: {colours: {plugin: toy_colours, options: {n: 9}}}
        tasks:
          a: {plugin: toy_centroid}
          b: {plugin: toy_centroid, options: {crash: false}}
        """)
    res = run_spec(spec, tmp_path / "o1", plugins=toy_plugins)
    assert [r["forwards"] for r in res] == [9, 0]  # the second task reuses the first one's features
    res2 = run_spec(spec, tmp_path / "o2", plugins=toy_plugins)  # new output dir, same cache
    assert [r["forwards"] for r in res2] == [0, 0]
    assert [r["metrics"] for r in res] == [r["metrics"] for r in res2]


def test_resume_skips_completed_units_unless_forced(tmp_path, toy_plugins):
    spec = _spec(tmp_path, TWO_ENCODERS)
    run_spec(spec, tmp_path / "out", plugins=toy_plugins)
    again = run_spec(spec, tmp_path / "out", plugins=toy_plugins)
    assert again.skipped == 2  # the ok units; failed ones are retried
    forced = run_spec(spec, tmp_path / "out", plugins=toy_plugins, force=True)
    assert forced.skipped == 0


def test_changed_config_is_not_resumed(tmp_path, toy_plugins):
    spec = _spec(tmp_path, TWO_ENCODERS)
    run_spec(spec, tmp_path / "out", plugins=toy_plugins)
    changed = run_spec(spec, tmp_path / "out", plugins=toy_plugins, overrides=["datasets.colours.options.n=12"])
    assert changed.skipped == 0


def test_same_spec_twice_gives_identical_metrics(tmp_path, toy_plugins, monkeypatch):
    spec = _spec(tmp_path, TWO_ENCODERS)
    a = run_spec(spec, tmp_path / "a", plugins=toy_plugins)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "fresh_cache"))
    b = run_spec(spec, tmp_path / "b", plugins=toy_plugins)
    assert [r["metrics"] for r in a] == [r["metrics"] for r in b]


@pytest.mark.slow
def test_resume_after_hard_kill(tmp_path):
    """Kill the process (os._exit, no cleanup) while the second dataset's features are being written;
    the rerun has no corrupt cache entry, recomputes nothing already done and gives the same metrics."""
    spec = _spec(tmp_path, """
        encoders: {stats: {plugin: toy_stats, options: {batch_size: 4}}}
        datasets:
          d1: {plugin: toy_colours, options: {n: 8}}
          d2: {plugin: toy_colours, options: {n: 12, seed: 5}}
        tasks: {c: {plugin: toy_centroid}}
        """)
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": "toy", "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "out"),
           "--plugins-dir", str(TOY_PLUGINS), "--no-progress"]
    # d1 takes 2 batches; dying after 3 batches kills the run in the middle of d2's features
    killed = subprocess.run(cmd + ["-o", "encoders.stats.options.die_after_batches=3"], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert (tmp_path / "out/results/c__d1__stats.json").is_file()
    assert not (tmp_path / "out/results/c__d2__stats.json").exists()
    cache_files = list((tmp_path / "cache").rglob("*.npy"))
    assert len([p for p in cache_files if not p.name.startswith(".tmp-")]) == 1  # only d1's entry is real
    for p in cache_files:
        if not p.name.startswith(".tmp-"):
            np.load(p)  # every committed entry is readable
    first = json.loads((tmp_path / "out/results/c__d1__stats.json").read_text())
    resumed = subprocess.run(cmd + ["-o", "encoders.stats.options.die_after_batches=3"], env=env,
                             capture_output=True, text=True)
    # die_after_batches counts per process: the resumed run needs 3 batches for d2 and dies again
    # only if it recomputed d1 (2 batches) too; so success proves d1 was not recomputed.
    assert resumed.returncode == 0, resumed.stderr
    assert "c__d1__stats: done earlier, skipped" in resumed.stderr
    second = json.loads((tmp_path / "out/results/c__d2__stats.json").read_text())
    assert second["forwards"] == 12
    again = json.loads((tmp_path / "out/results/c__d1__stats.json").read_text())
    assert again["metrics"] == first["metrics"]
    # a clean run elsewhere gives the same d2 metrics as the resumed one
    env2 = {**env, "HARNESS_CACHE_DIR": str(tmp_path / "cache2")}
    clean = subprocess.run(cmd[:6] + [str(tmp_path / "clean")] + cmd[7:], env=env2, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert json.loads((tmp_path / "clean/results/c__d2__stats.json").read_text())["metrics"] == second["metrics"]


def test_results_record_each_plugins_distribution_and_version(tmp_path, toy_plugins):
    import importlib.metadata

    from types import SimpleNamespace

    from harness.runner import _plugins_of
    from harness.spec import Unit

    spec = _spec(tmp_path, TWO_ENCODERS)
    run_spec(spec, tmp_path / "out", plugins=toy_plugins)
    good = json.loads((tmp_path / "out/results/centroid__colours__good.json").read_text())
    enc = good["plugins"]["encoder"]
    assert enc == {"plugin": "toy_stats", "origin": enc["origin"], "distribution": None,
                   "distribution_version": None, "version": "1"} and enc["origin"].startswith("file:")
    assert set(good["plugins"]) == {"encoder", "dataset", "task"}
    plan = SimpleNamespace(encoders={"e": SimpleNamespace(version="1")}, datasets={"d": SimpleNamespace(version="1")},
                           tasks={"t": SimpleNamespace(version="3")})
    cfg = {role: {"plugin": "x", "origin": "partbench:x"} for role in ("encoder", "dataset", "task")}
    assert _plugins_of(plan, Unit("e", "d", "t"), cfg)["task"] == {
        "plugin": "x", "origin": "partbench:x", "distribution": "partbench",
        "distribution_version": importlib.metadata.version("partbench"), "version": "3"}
