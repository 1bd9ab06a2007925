"""Threads are set deliberately: cores from the affinity mask and a container's CPU quota, decode workers one
thread each, an explicit setting wins (issue 20.9)."""
import textwrap

import pytest
import torch

from harness import threads
from harness.cli import main
from harness.runner import run_spec


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cgroup(tmp_path, v2=None, v1=None):
    tmp_path.mkdir(exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


@pytest.mark.parametrize("v2, v1, quota", [
    ("150000 100000", None, 1.5),      # cgroup v2: 1.5 cores
    ("max 100000", None, None),        # v2 unlimited
    (None, (200000, 100000), 2.0),     # cgroup v1
    (None, (-1, 100000), None),        # v1 unlimited
    (None, None, None),                # no cgroup files at all
])
def test_cgroup_quota_is_read_from_v2_then_v1(tmp_path, v2, v1, quota):
    assert threads._cgroup_quota(_cgroup(tmp_path, v2, v1)) == quota


def test_available_cores_is_capped_by_the_quota_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert threads.available_cores(_cgroup(tmp_path / "a", v2="150000 100000")) == 2
    assert threads.available_cores(_cgroup(tmp_path / "b", v2="max 100000")) == 64
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert threads.available_cores(_cgroup(tmp_path / "c", v2="800000 100000")) == 3


def test_default_threads_share_the_cores():
    # CPU: the forward keeps every core (the one decode worker mostly waits for it)
    assert threads.default_threads("cpu", workers=1, cores=8) == 8
    # torchrun with 4 processes on the machine: each gets its share
    assert threads.default_threads("cpu", workers=1, local_processes=4, cores=8) == 2
    # accelerator: busy decode workers take their cores from the main process, never below one thread
    assert threads.default_threads("cuda:0", workers=5, cores=8) == 3
    assert threads.default_threads("cuda:0", workers=15, cores=8) == 1


def test_configure_prefers_the_explicit_setting_then_omp_num_threads(monkeypatch, keep_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure("cpu", 1, threads=2) == (2, "set by --threads / extraction.threads")
    assert torch.get_num_threads() == 2
    assert threads.configure("cpu", 1) == (1, "from OMP_NUM_THREADS")
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "available_cores", lambda *a: 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert threads.configure("cpu", 1) == (3, "default for 3 cores")
    assert torch.get_num_threads() == 3


SPEC = """
encoders: {stats: {plugin: toy_stats}}
datasets: {colours: {plugin: toy_colours, options: {n: 6}}}
tasks: {centroid: {plugin: toy_centroid}}
extraction: {threads: 1, workers: 0}
"""


def test_a_run_sets_and_logs_the_spec_threads(tmp_path, toy_plugins, keep_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    lines = []
    run_spec(spec, tmp_path / "out", plugins=toy_plugins, log=lines.append)
    assert torch.get_num_threads() == 1
    assert "threads: 1 in the main process (set by --threads / extraction.threads); 0 decode workers" \
           " of 1 thread each" in lines


@pytest.mark.parametrize("value", [0, -1, True, "2"])
def test_spec_threads_must_be_a_positive_integer(tmp_path, toy_plugins, value):
    from harness.api import SpecError

    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(SPEC).replace("threads: 1", f"threads: {value!r}" if isinstance(value, str)
                                                  else f"threads: {str(value).lower()}"))
    with pytest.raises(SpecError, match=r"extraction\.threads: expected an integer >= 1"):
        run_spec(spec, tmp_path / "out", plugins=toy_plugins)


def test_cli_threads_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "specs/demo.yaml", "--threads", "0", "--dry-run"])
    assert exc.value.code == 2
    assert "argument --threads: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_decode_workers_run_one_thread(keep_threads):
    import signal

    from harness.loading import _worker_init

    torch.set_num_threads(2)
    handler = signal.getsignal(signal.SIGINT)
    try:
        _worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        signal.signal(signal.SIGINT, handler)
