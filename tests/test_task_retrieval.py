"""retrieval task: metrics against a per-query sklearn reference on a fake context, representation
choice ('best', extra), compatibility checks, and an end-to-end spec on the synthetic dataset."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.testing import check_resample
from harness import Samples, SpecError
from harness.spec import validate_options
from harness.testing import FakeContext, StubDataset, StubEncoder
from partbench_plugins.tasks.retrieval import Retrieval

from oracles import check_retrieval_unit, sklearn_retrieval_metrics


def FakeEncoder(reps=("cls", "mean_patch"), name="enc"):
    return StubEncoder(name, tuple(reps))


def FakeDataset():
    return StubDataset("toy", {"all": None, "train": None})


def FakeCtx(feats: dict, labels, classes, out_dir, encoder=None):
    """The shared FakeContext over fixed in-memory features (the same items for splits all and train)."""
    s = Samples([f"item{i}" for i in range(len(labels))], labels, classes, {"kept": len(labels)})
    return FakeContext(encoder or FakeEncoder(tuple(feats)), samples={"all": s, "train": s},
                       arrays={"all": feats, "train": feats}, out_dir=out_dir)


def _task(**opts):
    return Retrieval("retrieval", **validate_options(Retrieval.option_schema(), opts, "tasks.retrieval.options"))


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    centers = rng.standard_normal((3, 8))
    cls = (rng.standard_normal((60, 8)) + 1.5 * centers[y]).astype(np.float32)  # informative
    mean_patch = rng.standard_normal((60, 8)).astype(np.float32)  # noise
    projected = (rng.standard_normal((60, 4)) + 0.5 * centers[y][:, :4]).astype(np.float32)
    feats = {"cls": cls, "mean_patch": mean_patch, "projected": projected}
    return FakeCtx(feats, y, ["eye", "leg", "tail"], tmp_path), feats, y


def test_metrics_equal_sklearn_per_query_in_percent(toy):
    ctx, feats, y = toy
    res = _task(representation="cls").run(ctx)
    ap, map_ = sklearn_retrieval_metrics(feats["cls"], y)
    assert res["metrics"]["AP"] == pytest.approx(ap, abs=1e-5)
    assert res["metrics"]["mAP"] == pytest.approx(map_, abs=1e-5)
    assert res["metrics"]["AP.cls"] == res["metrics"]["AP"]
    d = res["details"]
    assert d["exclude_self"] is False and d["units"] == "percent" and d["n_items"] == 60
    assert set(d["per_representation"]["cls"]["per_class"]) == {"eye", "leg", "tail"}
    assert sum(c["count"] for c in d["per_representation"]["cls"]["per_class"].values()) == 60
    assert d["dataset_summary"] == {"kept": 60}
    assert ctx.requested == [("all", ("cls",), "resize:224")]
    saved = np.load(res["artifacts"][0])
    assert saved["AP.cls"].shape == (60,) and list(saved["keys"][:2]) == ["item0", "item1"]
    assert 100 * np.nanmean(saved["AP.cls"]) == pytest.approx(res["metrics"]["AP"], abs=1e-5)


def test_best_reports_the_better_of_cls_and_mean_patch_and_records_it(toy):
    ctx, feats, y = toy
    t = _task(representation="best", extra=["projected"])
    res = t.run(ctx)
    m, d = res["metrics"], res["details"]
    # the bootstrap statistic recomputes every AP/mAP exactly on the identity resample
    assert set(check_resample(t, res)) >= {"AP", "mAP", "AP.cls", "mAP.mean_patch", "AP.projected"}
    assert d["representation"]["requested"] == "best"
    assert d["representation"]["reported"] == "cls"  # cls is informative, mean_patch is noise here
    assert set(d["representation"]["candidates"]) == {"cls", "mean_patch"}
    assert m["AP"] == m["AP.cls"] > m["AP.mean_patch"]
    assert m["AP.projected"] == pytest.approx(sklearn_retrieval_metrics(feats["projected"], y)[0], abs=1e-5)
    assert ctx.requested == [("all", ("cls", "mean_patch", "projected"), "resize:224")]


def test_best_with_only_one_candidate(tmp_path):
    rng = np.random.default_rng(0)
    ctx = FakeCtx({"mean_patch": rng.standard_normal((10, 3)).astype(np.float32)}, [0, 1] * 5, ["a", "b"], tmp_path)
    res = _task().run(ctx)
    assert res["details"]["representation"]["reported"] == "mean_patch"


def test_exclude_self_and_queries_without_positives(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([0] * 6 + [1] * 5 + [2])  # class 2 is a singleton
    x = rng.standard_normal((12, 5)).astype(np.float32)
    ctx = FakeCtx({"cls": x}, y, ["a", "b", "c"], tmp_path)
    t = _task(representation="cls", exclude_self=True)
    res = t.run(ctx)
    check_resample(t, res)  # a query without positives counts nowhere, in the metric as in its resamples
    ap, map_ = sklearn_retrieval_metrics(x, y, exclude_self=True)
    assert res["metrics"]["AP"] == pytest.approx(ap, abs=1e-5)
    assert res["metrics"]["mAP"] == pytest.approx(map_, abs=1e-5)
    assert res["details"]["queries_without_positives"] == 1
    c = res["details"]["per_representation"]["cls"]["per_class"]["c"]
    assert c["count"] == 1 and c["queries_with_positives"] == 0 and math.isnan(c["AP"])
    kept = _task(representation="cls").run(ctx)  # self kept: the singleton's AP is 100
    assert kept["details"]["per_representation"]["cls"]["per_class"]["c"]["AP"] == pytest.approx(100.0)


def test_check_rejects_missing_representation_and_split():
    t = _task(representation="projected")
    with pytest.raises(ValueError, match="has no 'projected' representation"):
        t.check(FakeEncoder(("cls", "mean_patch")), FakeDataset())
    with pytest.raises(ValueError, match="extra"):
        _task(extra=["projected"]).check(FakeEncoder(("cls", "mean_patch")), FakeDataset())
    with pytest.raises(ValueError, match="needs cls or mean_patch"):
        _task().check(FakeEncoder(("projected",)), FakeDataset())
    with pytest.raises(ValueError, match="no split 'test'"):
        _task(split="test").check(FakeEncoder(), FakeDataset())
    _task(representation="best", extra=["projected"]).check(FakeEncoder(("cls", "projected")), FakeDataset())


def test_option_validation():
    with pytest.raises(SpecError, match="representation"):
        _task(representation="tokens")
    with pytest.raises(SpecError, match="unknown representation"):
        _task(extra=["cls", "block.3"])
    with pytest.raises(SpecError, match="block_size"):
        _task(block_size=0)


def test_too_few_items(tmp_path):
    from harness import HarnessError

    ctx = FakeCtx({"cls": np.ones((1, 3), dtype=np.float32)}, [0], ["a"], tmp_path)
    with pytest.raises(HarnessError, match="at least 2"):
        _task(representation="cls").run(ctx)


# -- end to end -------------------------------------------------------------------------------------
SPEC = """
encoders:
  pixels: {plugin: pixels, options: {grid: 4}}
  rvit: {plugin: random_vit, options: {embed_dim: 24, depth: 1, num_heads: 2, img_size: 64, batch_size: 64}}
datasets:
  cub: {plugin: synthetic_parts, options: {root: ROOT, num_images: 16, format: cub}}
  coco: {plugin: synthetic_parts, options: {root: ROOT, num_images: 16, format: coco}}
tasks:
  retrieval: {plugin: retrieval, options: {representation: best, transform: "resize:64"}}
"""


def test_end_to_end_spec_on_synthetic_cub_and_coco_formats(tmp_path, monkeypatch):
    # Needs the lead's runner and the synthetic dataset / baseline encoder plugins: if any of them is
    # missing this must fail, not skip.
    from harness.plugins import Plugins
    from harness.runner import run_spec
    from harness.spec import build_plan

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("ROOT", str(tmp_path / "data")))
    first = run_spec(spec, tmp_path / "a")
    assert len(first) == 4 and all(r["status"] == "ok" for r in first), [r.get("error") for r in first]
    plan = build_plan(spec, Plugins())
    for r in first:
        m, d = r["metrics"], r["details"]
        check_retrieval_unit(r, plan, tmp_path)
        assert d["representation"]["reported"] in ("cls", "mean_patch")
        assert m["AP"] == max(m["AP.cls"], m["AP.mean_patch"])
        assert d["n_items"] > 10 and d["dataset_summary"]["kept"] == d["n_items"]
        assert d["n_classes"] == (4 if r["dataset"] == "cub" else 3)
    # deterministic: a fresh output folder and a fresh feature cache give the same numbers
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache2"))
    second = run_spec(spec, tmp_path / "b")
    assert [r["metrics"] for r in second] == [r["metrics"] for r in first]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "AP" in report and "mAP" in report
    saved = json.loads((tmp_path / "a" / "results" / f"{first[0]['unit']}.json").read_text())
    assert saved["metrics"] == first[0]["metrics"]
