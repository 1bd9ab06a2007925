"""Feature-cache integrity and faults: checksummed entries (a corrupted entry is reported and recomputed,
never used), `harness cache ls|verify|prune`, a full disk (one line, nothing left behind) and the sweep of
temporaries left by killed runs."""
import errno
import json
import os
import textwrap

import numpy as np
import pytest

from conftest import TOY_PLUGINS
from harness.cache import PID_DOMAIN, FeatureCache, writer_tag
from harness.io import DiskFullError
from harness.cli import main
from harness.runner import run_spec

SPEC = """
encoders:
  stats: {plugin: toy_stats}
datasets:
  colours: {plugin: toy_colours, options: {n: 12}}
tasks:
  centroid: {plugin: toy_centroid}
"""


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(SPEC))
    return p


def run(spec, out, cache, toy_plugins):
    return run_spec(spec, out, plugins=toy_plugins, cache_dir=cache, force=True)


def test_a_corrupted_entry_is_reported_and_recomputed(spec, tmp_path, toy_plugins):
    cache = tmp_path / "cache"
    (first,) = run(spec, tmp_path / "a", cache, toy_plugins)
    (entry,) = FeatureCache(cache).entries()
    meta = json.loads(entry.with_suffix(".json").read_text())
    assert len(meta["blake2b"]) == 32
    (again,) = run(spec, tmp_path / "b", cache, toy_plugins)
    assert again["forwards"] == 0  # verified, reused
    with open(entry, "r+b") as f:  # zero 64 bytes inside the array data
        f.seek(entry.stat().st_size - 64)
        f.write(b"\0" * 64)
    FeatureCache._verified.clear()  # a new process
    with pytest.warns(UserWarning, match=rf"feature cache entry {entry}: checksum mismatch .*recomputed"):
        (third,) = run(spec, tmp_path / "c", cache, toy_plugins)
    assert third["forwards"] == first["forwards"] > 0 and third["metrics"] == first["metrics"]
    assert FeatureCache(cache).check(entry) is None  # rewritten whole


def test_cache_commands(spec, tmp_path, toy_plugins, capsys):
    cache = tmp_path / "cache"
    run(spec, tmp_path / "a", cache, toy_plugins)
    (entry,) = FeatureCache(cache).entries()
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "stats (toy_stats)" in out and "colours (toy_colours)" in out and "1 entries" in out
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert "1 entries checked, 0 bad" in capsys.readouterr().out
    with open(entry, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\1" * 8)
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    assert f"BAD {entry}: checksum mismatch" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", str(cache), "--delete"]) == 0
    assert not entry.exists() and not entry.with_suffix(".json").exists()
    run(spec, tmp_path / "b", cache, toy_plugins)
    assert main(["cache", "prune", "--cache-dir", str(cache), "--match", "toy_stats", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and len(FeatureCache(cache).entries()) == 1
    assert main(["cache", "prune", "--cache-dir", str(cache), "--older-than", "1"]) == 0  # too recent
    assert len(FeatureCache(cache).entries()) == 1
    assert main(["cache", "prune", "--cache-dir", str(cache), "--all"]) == 0
    assert FeatureCache(cache).entries() == []
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2  # a usage error, as argparse's
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: harness cache ") and err[-1] == (
        "harness cache: error: prune needs what to remove: --older-than DAYS, --max-size SIZE, --match TEXT or --all")


def _no_temporaries(folder):
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def test_a_full_cache_disk_is_one_line_and_leaves_nothing(spec, tmp_path, monkeypatch, capsys):
    import harness.cache as cache_mod

    real_write = cache_mod._Writer.write

    def full(self, start, rows):
        self._f.write(b"\0" * 10)  # something reached the disk before it filled up
        raise_enospc = OSError(errno.ENOSPC, "No space left on device")
        self._f.write = lambda *_: (_ for _ in ()).throw(raise_enospc)
        return real_write(self, start, rows)

    monkeypatch.setattr(cache_mod._Writer, "write", full)
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "toy")
    cache, out = tmp_path / "cache", tmp_path / "out"
    code = main(["run", str(spec), "--out", str(out), "--cache-dir", str(cache), "--plugins-dir", str(TOY_PLUGINS),
                 "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error:")]
    assert code == 1 and len(err) == 1
    assert "no space left on device" in err[0] and str(cache) in err[0]
    assert _no_temporaries(cache) == [] and FeatureCache(cache).entries() == []
    assert not (out / "results").exists() or not list((out / "results").glob("*.json"))


def test_a_full_output_disk_is_one_line_and_leaves_no_temporary(spec, tmp_path, monkeypatch, toy_plugins):
    from pathlib import Path

    real = Path.write_text
    out = tmp_path / "out"

    def full(self, text, *a, **k):
        if ".tmp-" in self.name and out in self.parents:
            real(self, "")  # the 0-byte temporary a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError, match=r"centroid__colours__stats\.json: no space left on device"):
        run_spec(spec, out, plugins=toy_plugins, cache_dir=tmp_path / "cache")
    assert _no_temporaries(out) == []


def test_temporaries_of_dead_processes_are_swept_at_once(tmp_path):
    cache = FeatureCache(tmp_path)
    (tmp_path / "ab").mkdir()
    key = "ab" + "0" * 62
    dead = tmp_path / "ab" / f".tmp-{PID_DOMAIN}-999999999-{key}.npy"  # no such pid here
    dead_meta = tmp_path / "ab" / f"{key}.json.tmp-{PID_DOMAIN}-999999999"
    mine = tmp_path / "ab" / f".tmp-{writer_tag()}-{key}.npy"  # a live writer
    for p in (dead, dead_meta, mine):
        p.write_bytes(b"x")
    assert cache.sweep_stale() == 2
    assert not dead.exists() and not dead_meta.exists() and mine.exists()


def test_entries_are_written_without_memory_maps(tmp_path):
    """Ordinary file I/O: rows written out of order at their offsets give the same array."""
    cache = FeatureCache(tmp_path)
    w = cache.open_writer("k" * 64, (5, 3), np.float16, {"n": 5})
    data = np.arange(15, dtype=np.float16).reshape(5, 3)
    w.write(3, data[3:])
    w.write(0, data[:3])
    w.commit()
    assert np.array_equal(cache.get("k" * 64, mmap=False), data)
    assert cache.check(cache.path("k" * 64)) is None
