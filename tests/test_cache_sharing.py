"""A feature cache shared by hosts or containers, or read by several runs of one process: a sweep never
removes another live writer's temporary, a changed entry is checked again; `harness cache prune` by size
and by last use (least recently used first)."""
import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from harness import HarnessError
from harness import cache as cache_mod
from harness.cache import FeatureCache
from harness.cli import main


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temporaries(root):
    return sorted(p.name for p in root.rglob("*") if ".tmp-" in p.name)


def test_a_sweep_spares_a_live_writer_in_another_pid_space(tmp_path, monkeypatch):
    """Another host or container writes into the shared cache; its pid means nothing here (here it is
    even the pid of no process). Main swept its temporary at once and the writer's commit failed."""
    cache = FeatureCache(tmp_path)
    key = cache.key(x=1)
    monkeypatch.setattr(cache_mod, "PID_DOMAIN", "otherhost.pidns4026531836", raising=False)
    monkeypatch.setattr(cache_mod.os, "getpid", lambda pid=_dead_pid(): pid)
    w = cache.open_writer(key, (4, 3), np.float32, {"encoder_name": "e"})
    w.write(0, np.ones((4, 3), np.float32))
    monkeypatch.undo()  # back to this process, which starts a run on the shared cache
    assert cache.sweep_stale() == 0 and len(_temporaries(tmp_path)) == 1
    w.commit()
    np.testing.assert_array_equal(cache.get(key), np.ones((4, 3), np.float32))
    assert _temporaries(tmp_path) == []


def test_a_vanished_temporary_is_named_at_commit(tmp_path):
    cache = FeatureCache(tmp_path)
    w = cache.open_writer(cache.key(x=2), (2, 2), np.float32, {})
    w.write(0, np.zeros((2, 2), np.float32))
    w.tmp.unlink()
    with pytest.raises(HarnessError) as ei:
        w.commit()
    assert str(ei.value).startswith(f"{w.tmp}: removed while it was being written")
    assert _temporaries(tmp_path) == []


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from harness.cache import FeatureCache
    c = FeatureCache(sys.argv[1])
    w = c.open_writer(c.key(x=3), (4, 8), np.float32, {"encoder_name": "e"})
    w.write(0, np.ones((4, 8), np.float32))
    print("written", flush=True)
    sys.stdin.readline()
    w.commit()
    print("committed", flush=True)
    """)


@pytest.mark.allow_skip("needs unshare -p (PID namespaces), which unprivileged containers refuse; the test above "
                        "covers the same sweep with a simulated foreign pid")
def test_a_writer_in_its_own_pid_namespace_survives_a_run_starting_outside(tmp_path):
    """The same with a real PID namespace (as a container has), where unshare is allowed."""
    (tmp_path / "w.py").write_text(WRITER)
    # a few processes first, so the writer's pid in its namespace is not one that is alive out here
    cmd = ["unshare", "-p", "-f", "--mount-proc", "sh", "-c",
           f"for i in $(seq 300); do /bin/true; done; {sys.executable} {tmp_path / 'w.py'} {tmp_path / 'c'}"]
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        pytest.skip(f"no unshare here ({exc})")
    line = p.stdout.readline()
    if line != "written\n":
        p.kill()
        pytest.skip(f"cannot make a PID namespace here: {p.communicate()[1].strip()[:200]}")
    try:
        assert FeatureCache(tmp_path / "c").sweep_stale() == 0
    finally:
        out, err = p.communicate("\n", timeout=60)
    assert p.returncode == 0 and out == "committed\n", err


def _entry(cache, name, mb, used_days_ago):
    key = cache.key(name=name)
    w = cache.open_writer(key, (mb, 1 << 18), np.float32, {"encoder_name": name, "dataset_name": "d"})
    w.write(0, np.zeros((mb, 1 << 18), np.float32))
    w.commit()
    t = time.time() - used_days_ago * 86400
    for p in (cache.path(key), cache.meta_path(cache.path(key))):
        os.utime(p, (t, t))
    return cache.path(key)


def test_prune_to_a_size_removes_the_least_recently_used(tmp_path, capsys):
    cache = FeatureCache(tmp_path)
    old, mid, new = _entry(cache, "old", 1, 30), _entry(cache, "mid", 1, 10), _entry(cache, "new", 1, 1)
    args = ["cache", "prune", "--cache-dir", str(tmp_path), "--max-size", "2.5MB"]
    assert main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {old}" in out and str(mid) not in out and "1 entries" in out
    assert old.exists()
    assert main(args[:-2] + ["--max-size", "1.1MB"]) == 0
    assert not old.exists() and not mid.exists() and new.exists()
    assert main(args[:-2] + ["--max-size", "lots"]) == 1
    assert "expected a size like 500MB" in capsys.readouterr().err


def test_prune_by_age_counts_from_the_last_use(tmp_path, capsys):
    cache = FeatureCache(tmp_path)
    written_long_ago = _entry(cache, "e", 1, 60)
    cache._verified.clear()  # as in a new process: the run that reads it now
    assert cache.get(written_long_ago.stem) is not None
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than", "30"]) == 0
    assert written_long_ago.exists()
    out = capsys.readouterr().out
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(written_long_ago.stem[:12]))
    assert row.split()[-4:] == ["60.0", "d", "0.0", "d"], (out, row)  # age, last used


SPEC = """
encoders: {stats: {plugin: toy_stats}}
datasets: {colours: {plugin: toy_colours, options: {n: 9}}}
tasks: {c: {plugin: toy_centroid, options: {representation: tokens}}}
"""


def test_an_entry_changed_after_its_check_is_checked_again_in_the_same_process(tmp_path, toy_plugins):
    """Two runs in one Python process (a notebook, a script calling run_spec): an entry corrupted between
    them was used silently, because the first check was remembered by path alone."""
    from harness.runner import run_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    (first,) = run_spec(spec, tmp_path / "a", plugins=toy_plugins, cache_dir=tmp_path / "c")
    (entry,) = FeatureCache(tmp_path / "c").entries()
    with open(entry, "r+b") as f:
        f.seek(entry.stat().st_size - 64)
        f.write(b"\0" * 64)
    with pytest.warns(UserWarning, match=rf"feature cache entry {entry}: checksum mismatch"):
        (second,) = run_spec(spec, tmp_path / "b", plugins=toy_plugins, cache_dir=tmp_path / "c")
    assert second["forwards"] == first["forwards"] == 9 and second["metrics"] == first["metrics"]


# --- cache tools beside a live run: what it writes, and what it wrote and is about to read, is kept ---

SLOW_PLUGIN = textwrap.dedent('''
    """An encoder slow enough to run a cache tool while it extracts: SLOW_SECONDS per image."""
    import os
    import time

    from harness import Encoder, Option, hookimpl


    class SlowMean(Encoder):
        """Mean colour of each image, slowly."""

        options = {"batch_size": Option(int, 1)}
        representations = ("cls",)

        def load(self, device="cpu"):
            self.device = device

        def forward(self, x, reps):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
            return {"cls": x.mean((2, 3))}


    @hookimpl
    def register_encoders(register):
        register("slow_mean", SlowMean)
    ''')

SLOW_SPEC = """
encoders: {slow: {plugin: slow_mean}}
datasets: {colours: {plugin: toy_colours, options: {n: 12}}}
tasks: {c: {plugin: toy_centroid}}
extraction: {workers: 0}
"""


def _wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()}")
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("tool", [["verify", "--delete"], ["prune", "--all"]], ids=["verify-delete", "prune-all"])
def test_a_cache_tool_beside_a_live_run_keeps_what_it_writes(tmp_path, capsys, tool):
    """`harness cache verify --delete` (or `prune --all`) while another run extracts: the run's temporary is
    reported in use and kept, and the run ends with the metrics of an undisturbed run. Both tools used to
    delete it (no metadata: "bad"; or a plain entry to prune), and the run failed at commit."""
    import json

    from conftest import TOY_PLUGINS
    from harness.plugins import Plugins
    from harness.runner import run_spec

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "slow.py").write_text(SLOW_PLUGIN)
    spec = tmp_path / "s.yaml"
    spec.write_text(SLOW_SPEC)
    dirs = [TOY_PLUGINS, tmp_path / "plugins"]
    (undisturbed,) = run_spec(spec, tmp_path / "a", plugins=Plugins(plugins_dirs=dirs, allow=["toy", "slow"]),
                              cache_dir=tmp_path / "ca")
    cache = tmp_path / "cb"
    env = {**os.environ, "SLOW_SECONDS": "0.25", "HARNESS_LOAD_PLUGINS": "toy,slow"}
    run = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "b"),
                            "--cache-dir", str(cache), "--no-progress", *[f"--plugins-dir={d}" for d in dirs]],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _temporaries(cache), run)
        (live,) = cache.rglob(".tmp-*")
        code = main(["cache", *tool, "--cache-dir", str(cache)])
        out = capsys.readouterr().out
    finally:
        stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stdout + stderr
    assert code == 0 and f"in use {live}: locked by the run writing it; kept" in out, out
    assert "temporaries: 1 in use, 0 stale" in out.splitlines()[-1], out
    disturbed = json.loads((tmp_path / "b/results/c__colours__slow.json").read_text())
    assert disturbed["status"] == "ok" and disturbed["metrics"] == undisturbed["metrics"]
    assert len(FeatureCache(cache).entries()) == 1 and _temporaries(cache) == []


WRITE_THEN_READ = textwrap.dedent("""
    import sys, numpy as np
    from harness.cache import FeatureCache
    c = FeatureCache(sys.argv[1])
    w = c.open_writer(c.key(x=4), (4, 8), np.float32, {"encoder_name": "e"})
    w.write(0, np.ones((4, 8), np.float32))
    w.commit()
    print("committed", flush=True)
    sys.stdin.readline()
    a = c.get(c.key(x=4))
    print("read" if a is not None and a.sum() == 32 else "gone", flush=True)
    sys.stdin.readline()
    """)


def test_prune_keeps_an_entry_written_and_not_yet_read_by_a_live_run(tmp_path, capsys):
    """A run commits an entry, then reads it: a prune in between used to remove it, and the run failed
    ("vanished right after being written"). The writer keeps it locked until its first read."""
    (tmp_path / "w.py").write_text(WRITE_THEN_READ)
    cache = tmp_path / "c"
    p = subprocess.Popen([sys.executable, str(tmp_path / "w.py"), str(cache)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "committed\n", p.stderr.read()
        (entry,) = FeatureCache(cache).entries()
        assert main(["cache", "prune", "--all", "--cache-dir", str(cache)]) == 0
        out = capsys.readouterr().out
        assert f"in use {entry}: being read, or written and not yet read, by a live run; kept" in out
        assert "0 entries, 0.00 GB freed" in out and "1 in use (kept)" in out and entry.exists()
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "read\n"
        assert main(["cache", "prune", "--all", "--cache-dir", str(cache)]) == 0  # read: no longer held
        assert f"removed {entry}" in capsys.readouterr().out and not entry.exists()
    finally:
        p.communicate("\n", timeout=60)


def test_verify_and_prune_report_stale_temporaries_and_keep_live_ones(tmp_path, capsys, monkeypatch):
    """Temporaries are not entries: a dead writer's is stale (deleted by verify --delete and by prune), a
    live writer's in this pid domain or a young one of another domain is in use (kept), an old unlocked
    one of another domain is stale."""
    cache = FeatureCache(tmp_path)
    (tmp_path / "ab").mkdir()
    key = "ab" + "0" * 62
    dead = tmp_path / "ab" / f".tmp-{cache_mod.PID_DOMAIN}-{_dead_pid()}-{key}.npy"
    mine = tmp_path / "ab" / f".tmp-{cache_mod.writer_tag()}-{key}.npy"
    young = tmp_path / "ab" / f".tmp-otherhost.pidns1-12-{key}.npy"
    old = tmp_path / "ab" / f"{key}.json.tmp-otherhost.pidns1-13"
    for p in (dead, mine, young, old):
        p.write_bytes(b"x")
    t = time.time() - 2 * cache_mod.STALE_AFTER_S
    os.utime(old, (t, t))
    assert cache.entries() == []
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"stale {dead}: its writer, pid {dead.name.split('-')[2]}, is gone\n" in out
    assert f"in use {mine}: its writer, pid {os.getpid()}, is running; kept" in out
    assert re.search(rf"in use {re.escape(str(young))}: last written \d+ s ago by pid 12 on otherhost\.pidns1, "
                     "which cannot be seen from here; kept", out), out
    assert f"stale {old}: last written 2.0 h ago by pid 13 on otherhost.pidns1" in out
    assert out.splitlines()[-1] == "0 entries checked, 0 bad; temporaries: 2 in use, 2 stale"
    assert dead.exists() and old.exists()  # verify without --delete removes nothing
    assert main(["cache", "prune", "--all", "--dry-run", "--cache-dir", str(tmp_path)]) == 0
    assert dead.exists() and old.exists() and "stale" in capsys.readouterr().out
    assert main(["cache", "prune", "--all", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"stale {dead}: its writer, pid {dead.name.split('-')[2]}, is gone (deleted)" in out
    assert sorted(_temporaries(tmp_path)) == sorted([mine.name, young.name])
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("0 entries, 0.00 GB in " + str(tmp_path) +
                                                            "; temporaries: 2 in use, 0 stale")
