"""SIGTERM and Ctrl-C during a run: one line, exit 143 / 130, no temporaries left, the rerun resumes."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TOY_PLUGINS

def _start(tmp_path, session: bool):
    marker = tmp_path / "marker"
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{slow: {{plugin: slow_stats, options: {{batch_size: 4}}}}}}
        datasets:
          d1: {{plugin: toy_colours, options: {{n: 8}}}}
          d2: {{plugin: toy_colours, options: {{n: 12, seed: 5}}}}
        tasks: {{c: {{plugin: toy_centroid}}}}
        """))
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": "toy,slow", "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(TOY_PLUGINS), "SLOW_MARK_AT": "4", "SLOW_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "out"),
           "--plugins-dir", str(TOY_PLUGINS), "--no-progress", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=session)
    deadline = time.monotonic() + 120
    while not marker.exists():  # d1 done (2 batches), d2's second batch started
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached d2's second batch"
        time.sleep(0.1)
    return proc, cmd, env


def _temporaries(tmp_path):
    return [str(p) for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name.startswith("harness-rank")]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_signal_stops_the_run_cleanly_and_the_rerun_resumes(tmp_path, signum, code, group):
    """SIGTERM to the process (a scheduler), SIGINT to its whole process group (Ctrl-C in a terminal, which
    the data-loader workers receive too)."""
    proc, cmd, env = _start(tmp_path, session=group)
    t0 = time.monotonic()
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 20, "stopping took too long"
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "interrupted: 1 of 2 units done; rerun the same command to resume"
    assert "Traceback" not in err
    assert _temporaries(tmp_path) == []
    assert (tmp_path / "out/results/c__d1__slow.json").is_file()
    assert not (tmp_path / "out/results/c__d2__slow.json").exists()
    entries = [p for p in (tmp_path / "cache").rglob("*.npy")]
    assert len(entries) == 1  # d1's features; nothing of d2
    rerun = subprocess.run(cmd, env={**env, "SLOW_MARK_AT": "0"}, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "[1/2] c__d1__slow: done earlier, skipped" in rerun.stderr
    assert (tmp_path / "out/results/c__d2__slow.json").is_file()
