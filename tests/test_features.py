"""The feature engine: bit-identical to the plain per-batch path, one decode for many encoders, padding,
data errors as one shared line, progress in logs, and 1 vs 2 torchrun processes giving the same cache."""
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import HarnessError, Samples
from harness import transforms as T
from harness.cache import FeatureCache
from harness.execution import encode
from harness.features import FeatureEngine
from harness.loading import load_batches
from harness.progress import LogProgress
from harness.testing import StubDataset
from partbench_plugins.encoders.baselines import Pixels, RandomViT

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=64)


class NoiseSamples(Samples):
    """Deterministic noise images of varying sizes (so the resize matters); counts decodes."""

    def __init__(self, n=21, seed=0, bad=None):
        super().__init__([f"i{k}" for k in range(n)], [k % 3 for k in range(n)], ["a", "b", "c"])
        self.seed, self.bad, self.decodes = seed, bad, 0

    def image(self, i):
        self.decodes += 1
        if i == self.bad:
            raise HarnessError(f"/data/img{i}.jpg: unreadable image (OSError: broken data stream)")
        rng = np.random.default_rng([self.seed, i])
        w, h = 40 + 7 * (i % 5), 50 + 3 * (i % 4)
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def old_path(enc, samples, transform, bs):
    """Today's reference path: PIL transform -> float/255 -> normalise on the CPU -> forward per batch."""
    enc.load("cpu")
    mean = torch.tensor(enc.opts["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(enc.opts["std"]).view(1, 3, 1, 1)
    rows = []
    for s in range(0, len(samples), bs):
        x = torch.stack([T.apply(transform, samples.image(i)) for i in range(s, min(s + bs, len(samples)))])
        rows.append(encode(enc, (x - mean) / std, ["cls", "block.1"]))
    return {r: torch.cat([o[r] for o in rows]).numpy() for r in ("cls", "block.1")}


def engine(tmp_path, workers=0):
    return FeatureEngine(FeatureCache(tmp_path / "cache"), "cpu", workers=workers, show_progress=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_bit_identical_to_the_plain_path(tmp_path, workers):
    samples = NoiseSamples()
    ds = StubDataset("noise", {"all": samples})
    enc = RandomViT("v", **TINY, batch_size=8)
    ref = old_path(RandomViT("v", **TINY, batch_size=8), samples, "resize:64", 8)
    got, hits, forwards = engine(tmp_path, workers).features(enc, ds, "all", ["cls", "block.1"], "resize:64")
    assert forwards == len(samples) and hits == 0
    assert np.array_equal(got["cls"], ref["cls"])  # float32 vectors: bit for bit
    assert got["block.1"].dtype == np.float16
    assert np.array_equal(got["block.1"], ref["block.1"].astype(np.float16))


def test_one_pass_feeds_every_encoder_with_its_own_batches(tmp_path):
    samples = NoiseSamples(n=23)
    ds = StubDataset("noise", {"all": samples})
    encs = [RandomViT("a", **TINY, batch_size=4, seed=1), RandomViT("b", **TINY, batch_size=6, seed=2),
            Pixels("p", grid=4, batch_size=10)]
    reps = [["cls", "block.0"], ["mean_patch"], ["cls", "tokens"]]
    together = engine(tmp_path / "one")
    counts = together.extract(ds, "all", "resize:64", list(zip(encs, reps)))
    assert samples.decodes == len(samples)  # decoded once for three encoders
    assert sorted(counts.values()) == [23, 23, 23]
    separate = engine(tmp_path / "sep")
    for e, r in zip(encs, reps):
        separate.extract(ds, "all", "resize:64", [(e, r)])
    assert samples.decodes == 4 * len(samples)

    def entries(root):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(root).rglob("*.npy")}

    a, b = entries(tmp_path / "one" / "cache"), entries(tmp_path / "sep" / "cache")
    assert len(a) == 5 and a == b  # the same entries, byte for byte
    # a second request is a cache hit: no decode, no forward
    assert together.extract(ds, "all", "resize:64", list(zip(encs, reps))) == {id(e): 0 for e in encs}
    assert samples.decodes == 4 * len(samples)


def test_two_spec_entries_with_one_identity_share_one_entry_in_one_pass(tmp_path):
    """Two encoders with the same plugin and options (e.g. a spec's ``pixels`` and ``tiny_pixels``) have one
    cache key: one pass encodes it once (it used to write the same temporary twice and fail at commit)."""
    samples = NoiseSamples(n=9)
    ds = StubDataset("noise", {"all": samples})
    a, b = Pixels("p1", grid=4, batch_size=4), Pixels("p2", grid=4, batch_size=4)
    eng = engine(tmp_path)
    counts = eng.extract(ds, "all", "resize:64", [(a, ["cls", "tokens"]), (b, ["cls"])])
    assert counts == {id(a): 9, id(b): 0}
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    assert eng.extract(ds, "all", "resize:64", [(b, ["cls", "tokens"])]) == {id(b): 0}


def test_pad_transform_zeroes_the_padding_after_normalisation(tmp_path):
    class Small(Samples):
        def __init__(self):
            super().__init__(["s0", "s1"], [0, 0], ["x"])

        def image(self, i):
            rng = np.random.default_rng(i)
            h, w = (48, 64) if i == 0 else (64, 32)
            return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    samples = Small()
    enc = RandomViT("v", **TINY, batch_size=2)
    got, _, _ = engine(tmp_path).features(enc, StubDataset("s", {"all": samples}), "all", ["tokens"], "pad:64:64")
    enc.load("cpu")
    mean = torch.tensor(enc.opts["mean"]).view(3, 1, 1)
    std = torch.tensor(enc.opts["std"]).view(3, 1, 1)
    for i in range(2):
        img = torch.from_numpy(np.array(samples.image(i))).permute(2, 0, 1).float() / 255
        canvas = torch.zeros(1, 3, 64, 64)
        canvas[0, :, :img.shape[1], :img.shape[2]] = (img - mean) / std  # mmseg pads with 0 after normalising
        ref = encode(enc, canvas, ["tokens"])["tokens"][0].numpy().astype(np.float16)
        assert np.array_equal(got["tokens"][i], ref)
    with pytest.raises(ValueError, match="does not fit"):
        T.pixels("pad:32:32", samples.image(0))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_item_is_one_line_and_shared(tmp_path, workers):
    samples = NoiseSamples(n=12, bad=7)
    ds = StubDataset("noise", {"all": samples})
    eng = engine(tmp_path, workers)
    with pytest.raises(HarnessError) as err:
        eng.features(RandomViT("a", **TINY), ds, "all", ["cls"], "resize:64")
    msg = str(err.value)
    assert "\n" not in msg and "/data/img7.jpg: unreadable image" in msg and "dataset 'noise' all" in msg
    with pytest.raises(HarnessError) as again:  # the split is marked failed: no second decode attempt
        eng.samples(ds, "all")
    assert str(again.value) == msg
    assert not list((tmp_path / "cache").rglob("*.npy")), "nothing half-written"


def _broken_cub_spec(tmp_path, second_task: bool = False):
    """A tiny CUB tree with one corrupt image, two random ViTs and retrieval on it (a second retrieval task
    on mean_patch with ``second_task``)."""
    from fixtures_data import write_cub

    root = write_cub(tmp_path / "CUB_200_2011")
    (root / "images" / "001.Albatross" / "a_0001.jpg").write_bytes(b"not a jpeg")
    r2 = '\n  r2: {plugin: retrieval, options: {representation: mean_patch, transform: "resize:64"}}' if second_task else ""
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders:
          a: {{plugin: random_vit, options: {{embed_dim: 32, depth: 1, num_heads: 2, img_size: 64}}}}
          b: {{plugin: random_vit, options: {{embed_dim: 32, depth: 1, num_heads: 2, img_size: 64, seed: 1}}}}
        datasets:
          cub: {{plugin: cub_parts, options: {{root: {root}, check_images: false}}}}
        tasks:
          r: {{plugin: retrieval, options: {{representation: cls, transform: "resize:64"}}}}""") + r2 + "\n")
    return spec


def test_data_error_fails_every_unit_once(tmp_path):
    """A corrupt image fails all units of its dataset with one shared message (decoded once)."""
    spec = _broken_cub_spec(tmp_path)
    from harness.runner import run_spec

    res = run_spec(spec, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    errors = {r["unit"]: r["error"] for r in res}
    assert all(r["status"] == "failed" for r in res) and len(set(errors.values())) == 1, errors
    assert "a_0001.jpg" in next(iter(errors.values()))


def test_log_progress_prints_periodic_lines():
    buf = io.StringIO()
    bar = LogProgress(None, desc="features v/ds:all", total=10, unit="img", every=0.0, stream=buf)
    for _ in range(3):
        bar.update(2)
    bar.close()
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("features v/ds:all: 2/10 img (20%)") and "ETA" in lines[0]
    assert "done in" in lines[-1]
    quiet = io.StringIO()
    LogProgress(range(3), desc="x", every=3600, stream=quiet).close()
    assert quiet.getvalue() == ""


def test_load_batches_chunks_are_contiguous():
    samples = NoiseSamples(n=10)
    starts = [(s, len(x)) for s, x, _ in load_batches(samples, "resize:32", range(3, 10), 4, workers=0)]
    assert starts == [(3, 4), (7, 3)]


# ------------------------------------------------------------------------------------------------
# torchrun: 1 process == 2 processes
# ------------------------------------------------------------------------------------------------
SPEC = """
seed: 0
encoders:
  vit: {plugin: random_vit, options: {embed_dim: 32, depth: 2, num_heads: 2, img_size: 64, batch_size: 8}}
  pix: {plugin: pixels, options: {batch_size: 12}}
datasets:
  cub: {plugin: synthetic_parts, options: {num_images: 24, format: cub}}
tasks:
  ret: {plugin: retrieval, options: {representation: best, transform: "resize:64"}}
  lin: {plugin: linear_probe, options: {epochs: 3, train_transform: "resize_crop:72:64", test_transform: "resize:64"}}
"""


def _run(args, env, cwd):
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_cache_and_metrics(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("PYTEST_XDIST_WORKER", None)
    harness = [sys.executable, "-m", "harness.cli"]
    _run([*harness, "run", str(spec), "--out", str(tmp_path / "o1"), "--cache-dir", str(tmp_path / "c1"),
          "--no-progress"], env, tmp_path)
    r2 = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "o2"), "--cache-dir",
               str(tmp_path / "c2"), "--no-progress"], env, tmp_path)

    def cache(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in Path(root).rglob("*.npy")}

    c1, c2 = cache(tmp_path / "c1"), cache(tmp_path / "c2")
    assert c1 and c1 == c2
    assert not [p for p in (tmp_path / "c2").rglob(".tmp*")], "shard files removed"
    for unit in ("ret__cub__vit", "ret__cub__pix", "lin__cub__vit", "lin__cub__pix"):
        a = json.loads((tmp_path / "o1" / "results" / f"{unit}.json").read_text())
        b = json.loads((tmp_path / "o2" / "results" / f"{unit}.json").read_text())
        assert a["status"] == b["status"] == "ok" and a["metrics"] == b["metrics"], unit
        assert a["forwards"] == b["forwards"] and b["world_size"] == 2
    assert r2.stdout.count("4 units: 4 run") == 1  # only rank 0 prints the report


def test_persistent_loader_reuses_its_workers_and_follows_a_new_order():
    from harness.loading import Loader

    samples = NoiseSamples(n=17)
    ref = Loader(samples, "resize:32", 4, workers=0)
    loader = Loader(samples, "resize:32", 4, workers=2)
    try:
        for order in (range(17), [16, 3, 3, 8, 0, 11, 5]):
            want = torch.cat([x.clone() for _, x, _ in ref.batches(order)])
            got = torch.cat([x.clone() for _, x, _ in loader.batches(order)])  # views: copy before the next
            assert torch.equal(got, want)
            pids = sorted(w.pid for w in loader._loader._iterator._workers)
            if order == range(17):
                first = pids
        assert pids == first, "the same worker processes served both passes"
    finally:
        loader.close()


def test_stream_equals_the_cached_features(tmp_path):
    samples = NoiseSamples(n=13)
    ds = StubDataset("noise", {"all": samples})
    eng = engine(tmp_path, workers=2)
    enc = RandomViT("v", **TINY, batch_size=4)
    try:
        cached, _, _ = eng.features(enc, ds, "all", ["cls"], "resize:64")
        order = np.array([12, 0, 5, 5, 7])
        got = {int(i): v for idx, out in eng.stream(enc, ds, "all", ["cls"], "resize:64", order, batch=2)
               for i, v in zip(idx, out["cls"].numpy())}
    finally:
        eng.close()
    for i, v in got.items():
        assert np.array_equal(v, cached["cls"][i])


def test_a_data_error_is_printed_once_per_dataset(tmp_path, capsys):
    """Every unit of a dataset with a corrupt image fails alike: the log and the report print the error once and
    name every unit it failed."""
    from harness.cli import main

    spec = _broken_cub_spec(tmp_path, second_task=True)
    code = main(["run", str(spec), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1
    (line,) = [l for l in err.splitlines() if "a_0001.jpg" in l]
    error = line.split("FAILED: ", 1)[1]
    assert error.startswith("dataset 'cub' all: ") and err.count("FAILED: same error as r__cub__a") == 3, err
    assert out.count(error) == 2 and out.count(f"FAILED cub / a, cub / b: {error}") == 2  # below each task's table
