"""Under torchrun nothing hangs: a rank that dies makes the others exit, non-zero, with one line naming it."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TOY_PLUGINS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_rank_makes_the_other_exit_within_60_s(tmp_path, killed):
    """Two ranks started as torchrun starts them (without the agent, which would kill the survivor itself);
    one is killed (SIGKILL: no chance to say anything) in the middle of its share of the extraction."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        encoders: {slow: {plugin: slow_stats, options: {batch_size: 4}}}
        datasets: {d: {plugin: toy_colours, options: {n: 16}}}
        tasks: {r: {plugin: retrieval, options: {representation: cls, transform: "resize:32"}}}
        """))
    marker = tmp_path / "marker"
    port = _free_port()
    base = {**os.environ, "HARNESS_LOAD_PLUGINS": "toy,slow,retrieval", "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONPATH": str(TOY_PLUGINS), "SLOW_MARKER": str(marker), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    base.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "out"),
           "--plugins-dir", str(TOY_PLUGINS), "--no-progress", "--workers", "0"]
    procs = {}
    for rank in (0, 1):
        # each rank encodes 8 items in 2 batches; the victim stalls in its second one
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "SLOW_MARK_AT": "2" if rank == killed else "0"}
        procs[rank] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, survivor = procs[killed], procs[1 - killed]
    deadline = time.monotonic() + 120
    while not (tmp_path / f"marker.{killed}").exists():
        if victim.poll() is not None or survivor.poll() is not None:
            pytest.fail(f"a rank ended early: {victim.communicate()} {survivor.communicate()}")
        assert time.monotonic() < deadline, "rank never reached its second batch"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    try:
        out, err = survivor.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail(f"rank {1 - killed} still running 60 s after rank {killed} was killed")
    victim.communicate()
    assert time.monotonic() - t0 < 60
    assert survivor.returncode != 0
    last = err.strip().splitlines()[-1]
    prefix = "error: " if killed == 1 else "error: rank 1: "
    assert last.startswith(f"{prefix}rank {killed} stopped (killed, or crashed without a message) while rank "
                           f"{1 - killed} was "), err[-3000:]
    assert "Traceback" not in err
