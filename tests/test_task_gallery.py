"""gallery task: neighbours and similarity statistics, the PNG grids (size, validity, content), query
selection, and the cross-encoder figure of finalize."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import HarnessError, Samples, SpecError
from harness.spec import validate_options
from harness.testing import FakeContext, StubDataset, StubEncoder
from partbench_plugins.tasks.gallery import BOX, Gallery, grid_size


class BoxSamples(Samples):
    """Items are boxes on a few source images on disk (like the part datasets)."""

    def __init__(self, root: Path, n: int = 12, with_source: bool = True):
        rng = np.random.default_rng(0)
        self.src = []
        for k in range(3):
            p = root / f"src{k}.png"
            Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(p)
            self.src.append(p)
        self.boxes = [(5 + i, 5, 25 + i, 25) for i in range(n)]
        self.with_source = with_source
        super().__init__([f"k{i}" for i in range(n)], [i % 3 for i in range(n)], ["a", "b", "c"])

    def image(self, i):
        return Image.open(self.src[i % 3]).convert("RGB").crop(self.boxes[i])

    def source(self, i):
        return (str(self.src[i % 3]), self.boxes[i]) if self.with_source else None


def Ctx(samples, feats, out_dir, name="enc"):
    """The shared FakeContext: ``feats`` for every representation of split 'all'."""
    return FakeContext(StubEncoder(name, ("cls", "mean_patch")), samples={"all": samples},
                       arrays={"all": {"cls": feats, "mean_patch": feats}}, out_dir=out_dir)


def _task(**opts):
    return Gallery("gallery", **validate_options(Gallery.option_schema(), opts, "tasks.gallery.options"))


@pytest.fixture
def setup(tmp_path):
    samples = BoxSamples(tmp_path)
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((len(samples), 6)).astype(np.float32)
    feats[4] = feats[1]  # an exact duplicate of query 1: it must come first in its list
    out = tmp_path / "unit"
    out.mkdir()
    return samples, feats, out


def test_neighbours_statistics_and_png(setup):
    samples, feats, out = setup
    res = _task(top_k=4, tile=32).run(Ctx(samples, feats, out))
    d, m = res["details"], res["metrics"]
    assert [q["index"] for q in d["queries"]] == [0, 1, 2]  # first item of each class
    u = feats.astype(np.float64) / np.linalg.norm(feats.astype(np.float64), axis=1, keepdims=True)
    sims_all = []
    for q in d["queries"]:
        s = u @ u[q["index"]]
        s[q["index"]] = -np.inf  # the query itself is excluded
        ref = np.argsort(-s, kind="stable")
        assert [r["index"] for r in q["retrieved"]] == ref[:4].tolist()
        sims_all.append(np.sort(s)[::-1][:10])
    assert d["queries"][1]["retrieved"][0]["index"] == 4
    sims_all = np.array(sims_all)
    for k in (1, 5, 10):
        assert m[f"sim@{k}"] == pytest.approx(sims_all[:, :k].mean(), abs=1e-6)
    same = [np.mean([r["label"] == q["label"] for r in q["retrieved"]]) for q in d["queries"]]
    assert m["same_label@4"] == pytest.approx(100 * np.mean(same), abs=1e-3)
    # PNGs: valid, expected sizes
    full = Path(d["images"]["gallery"])
    with Image.open(full) as im:
        im.verify()
    with Image.open(full) as im:
        # the grid under a caption band (encoder, representation, what the frame colours mean)
        w, h = grid_size(3, 4, 32)
        assert im.format == "PNG" and im.size[0] == w and im.size[1] > h
        arr = np.asarray(im.convert("RGB"))
    band = arr[: arr.shape[0] - h]
    assert (band.sum(axis=2) < 200).any()  # dark caption text
    assert set(res["artifacts"]) == set(d["images"].values())
    # the query tile carries the red box; the first retrieved tile of query 1 is item 4's crop
    assert (np.abs(arr[:, :40].astype(int) - BOX).sum(axis=2) == 0).any()
    with Image.open(d["images"]["retrieved"]) as im:
        assert im.size[1] == grid_size(3, 4, 32)[1]


def test_queries_by_key_and_index_and_errors(setup):
    samples, feats, out = setup
    res = _task(queries=["k5", 7], top_k=2, tile=16).run(Ctx(samples, feats, out))
    assert [q["index"] for q in res["details"]["queries"]] == [5, 7]
    with pytest.raises(HarnessError, match="no sample with key 'nope'"):
        _task(queries=["nope"]).run(Ctx(samples, feats, out))
    with pytest.raises(HarnessError, match="out of range"):
        _task(queries=[99]).run(Ctx(samples, feats, out))
    with pytest.raises(SpecError, match="queries"):
        _task(queries=[1.5])
    res = _task(per_class=2, max_queries=5, top_k=1, tile=16).run(Ctx(samples, feats, out))
    assert [q["index"] for q in res["details"]["queries"]] == [0, 3, 1, 4, 2]


def test_without_source_the_crop_is_the_query_tile(tmp_path):
    samples = BoxSamples(tmp_path, with_source=False)
    feats = np.random.default_rng(0).standard_normal((len(samples), 4)).astype(np.float32)
    res = _task(top_k=3, tile=24).run(Ctx(samples, feats, tmp_path))
    with Image.open(res["details"]["images"]["gallery"]) as im:
        assert im.size[0] == grid_size(3, 3, 24)[0] and im.size[1] > grid_size(3, 3, 24)[1]


def test_check():
    with pytest.raises(ValueError, match="no 'projected'"):
        _task(representation="projected").check(StubEncoder("e"), StubDataset("toy", {"all": None}))
    with pytest.raises(ValueError, match="no split 'val'"):
        _task(split="val").check(StubEncoder("e"), StubDataset("toy", {"all": None}))


def test_finalize_side_by_side(setup, tmp_path):
    samples, feats, _ = setup
    results = []
    for k, name in enumerate(["DeiT", "DINO", "MAE", "CAE"]):
        out = tmp_path / "run" / "artifacts" / f"gallery__toy__{name}"
        out.mkdir(parents=True)
        f = feats + 0.3 * k * np.random.default_rng(k).standard_normal(feats.shape).astype(np.float32)
        res = _task(top_k=3, tile=32).run(Ctx(samples, f, out, name))
        results.append({"encoder": name, "status": "ok", **res})
    fin = tmp_path / "run" / "artifacts" / "gallery__toy"
    fin.mkdir()
    paths = _task().finalize(results, fin)
    assert paths == [str(fin / "gallery.png")]
    with Image.open(paths[0]) as im:
        im.verify()
    with Image.open(paths[0]) as im:
        w, h = im.size
    strip_w = Image.open(results[0]["details"]["images"]["retrieved"]).size[0]
    assert w > 3 * strip_w and h > 2 * grid_size(3, 3, 32)[1]  # 3 panels per row, 2 rows, plus titles
    # artifact paths relative to the run folder are found too (the runner stores them that way)
    for r in results:
        r["artifacts"] = [str(Path(p).relative_to(tmp_path / "run")) for p in r["artifacts"]]
        r["details"]["images"] = {}
    assert _task().finalize(results, fin) == [str(fin / "gallery.png")]
