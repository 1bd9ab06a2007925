"""Bootstrap intervals (harness.bootstrap) and the tasks' statistics: the vectorised statistics equal an explicit
loop over materialised resamples, resamples are seeded and shared by every encoder of a unit, mIoU sums areas,
pose AP equals pycocotools' COCOeval on an explicitly resampled image set."""
import json
import math

import numpy as np
import pytest

from harness import bootstrap
from harness.api import validate_options
from harness.testing import check_resample
from partbench_plugins.tasks import linear_seg as ls
from partbench_plugins.tasks.linear_probe import LinearProbe
from partbench_plugins.tasks.pose_eval import evaluate_keypoints, keypoint_results, resampled_stats
from partbench_plugins.tasks.retrieval import Retrieval
from partbench_plugins.tasks.retrieval_metrics import class_mean_ap, mean_ap

from fixtures_data import COCO_KEYPOINT_NAMES


def _rows(counts):
    """Each resample as the item indices it draws (the explicit, materialised resample)."""
    return [np.repeat(np.arange(counts.shape[1]), c) for c in counts]


def _blocks(n, resamples=200, name="t"):
    items = [f"{name}/{i}" for i in range(n)]
    return np.concatenate(list(bootstrap.count_blocks(bootstrap.resample_key(0, items, resamples), n, resamples)))


def test_resamples_are_seeded_blocked_and_do_not_depend_on_the_encoder():
    counts = _blocks(37, 250)
    assert counts.shape == (250, 37) and (counts.sum(1) == 37).all() and counts.dtype == np.int32
    assert np.array_equal(counts, _blocks(37, 250))  # rerun: identical
    assert not np.array_equal(counts, _blocks(37, 250, name="other items"))
    # the key has no encoder in it: a Resampler hands every encoder of a unit the same blocks
    r = bootstrap.Resampler(seed=0, resamples=250)
    key = r.key([f"t/{i}" for i in range(37)])
    assert key == bootstrap.resample_key(0, [f"t/{i}" for i in range(37)], 250)
    assert key != bootstrap.Resampler(seed=1, resamples=250).key([f"t/{i}" for i in range(37)])
    assert np.array_equal(np.concatenate(list(r.blocks(key, 37))), counts)
    # about n / e items are never drawn in a resample, as sampling with replacement should
    assert abs((counts == 0).mean() - math.exp(-1)) < 0.02


def test_interval_is_the_percentile_interval_and_identical_replicates_differ_by_zero():
    reps = np.arange(1001, dtype=float)
    assert bootstrap.interval(reps) == pytest.approx([25.0, 975.0])
    assert bootstrap.interval(reps - reps) == [0.0, 0.0]
    assert bootstrap.interval(np.full(5, np.nan)) is None


def _image_blocks(rng, n, images=9):
    """Counts of resamples drawn by image (``images`` images of random sizes): rows need not sum to n."""
    clusters = bootstrap.cluster_index(rng.integers(0, images, n))
    counts = np.concatenate(list(bootstrap.Resampler(0, 200).blocks("c" * 16, n, clusters)))
    assert len(set(counts.sum(1).tolist())) > 1
    return counts


@pytest.mark.parametrize("by", ["item", "image"])
def test_retrieval_statistic_equals_an_explicit_loop(by):
    rng = np.random.default_rng(1)
    n = 40
    labels = rng.integers(0, 4, n)
    ap = rng.random(n)
    ap[[3, 17]] = np.nan  # queries without positives count nowhere
    task = Retrieval("r", **validate_options(Retrieval.option_schema(), {}, "t"))
    counts = _blocks(n) if by == "item" else _image_blocks(rng, n)
    got = task.resample({"labels": labels, "AP": ap}, counts)
    for r, idx in enumerate(_rows(counts)):
        assert got["AP"][r] == pytest.approx(round(100 * mean_ap(ap[idx]), 6), abs=2e-6)
        assert got["mAP"][r] == pytest.approx(round(100 * class_mean_ap(ap[idx], labels[idx]), 6), abs=2e-6)


@pytest.mark.parametrize("by", ["item", "image"])
def test_probe_statistic_equals_an_explicit_loop(by):
    """Also when images are drawn: then a resample holds as many items as its drawn images have, not n."""
    rng = np.random.default_rng(2)
    n, epochs = 30, 5
    per_item = {"items": np.arange(n).astype(str), "top1": rng.random((n, epochs)) < 0.6,
                "topk": rng.random((n, epochs)) < 0.9, "top1_heldout": rng.random(n) < 0.5,
                "topk_heldout": rng.random(n) < 0.8}
    task = LinearProbe("p", **validate_options(LinearProbe.option_schema(), {}, "t"))
    counts = _blocks(n) if by == "item" else _image_blocks(rng, n)
    got = task.resample(per_item, counts)
    for r, idx in enumerate(_rows(counts)):
        m = len(idx)
        acc = [100.0 * per_item["top1"][idx, e].sum() / m for e in range(epochs)]
        best = int(np.argmax(acc))
        assert got["top1_best_epoch"][r] == pytest.approx(max(acc), abs=1e-12)
        assert got["top3_best_epoch"][r] == pytest.approx(100.0 * per_item["topk"][idx, best].sum() / m, abs=1e-12)
        assert got["top1_final"][r] == pytest.approx(acc[-1], abs=1e-12)
        assert got["top1_heldout"][r] == pytest.approx(100.0 * per_item["top1_heldout"][idx].sum() / m, abs=1e-12)
        assert 0 <= got["top1_best_epoch"][r] <= 100


def _areas(rng, n, C):
    label = rng.integers(0, 50, (n, C))
    pred = rng.integers(0, 50, (n, C))
    inter = np.minimum(label, pred) // 2
    label[0, 1] = pred[0, 1] = inter[0, 1] = 0  # a class absent from an image
    return {"items": np.arange(n).astype(str), "intersect": inter, "union": label + pred - inter, "pred": pred,
            "label": label}


def test_segmentation_statistic_sums_the_resampled_images_areas_as_iou_metric_does():
    import torch
    from mmseg.evaluation import IoUMetric

    rng = np.random.default_rng(3)
    per_item = _areas(rng, 12, 6)
    counts = _blocks(12)
    got = ls.resampled_scores(per_item, counts, decimals=4)
    for r, idx in enumerate(_rows(counts)):
        sums = [torch.tensor(per_item[a][idx].sum(0), dtype=torch.float64) for a in ls.AREAS]
        want = ls.scores_from_areas(sums, [str(c) for c in range(6)])
        assert [got[m][r] for m in ("mIoU", "mAcc", "aAcc")] == [want[m] for m in ("mIoU", "mAcc", "aAcc")]
        assert IoUMetric  # the reference is mmseg's own total_area_to_metrics (through scores_from_areas)


def test_miou_is_summed_intersection_over_summed_union_not_a_mean_of_image_ious():
    # two images, two classes; image 0: class 0 intersect 10 of union 20, class 1 intersect 1 of union 1;
    # image 1: class 0 intersect 90 of union 100, class 1 intersect 0 of union 9
    per_item = {"items": np.array(["a", "b"]), "intersect": np.array([[10, 1], [90, 0]]),
                "union": np.array([[20, 1], [100, 9]]), "pred": np.array([[15, 1], [95, 5]]),
                "label": np.array([[15, 1], [95, 4]])}
    # resample "b, b" and "a, b": by hand
    got = ls.resampled_scores(per_item, np.array([[0, 2], [1, 1]], np.int32), decimals=4)
    assert got["mIoU"][0] == round((180 / 200 + 0 / 18) / 2 * 100, 4) == 45.0
    assert got["mIoU"][1] == round((100 / 120 + 1 / 10) / 2 * 100, 4)
    # averaging the images' IoU instead would give ((0.5 + 1) / 2 + (0.9 + 0) / 2) / 2 = 0.6: not what we do
    assert got["mIoU"][1] != 60.0
    assert got["aAcc"][1] == round(101 / 115 * 100, 4)


def _coco(tmp_path, name, images, persons):
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 400} for i in images],
           "annotations": persons,
           "categories": [{"id": 1, "name": "person", "keypoints": COCO_KEYPOINT_NAMES, "skeleton": []}]}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_pose_statistic_equals_cocoeval_on_an_explicitly_resampled_image_set(tmp_path):
    rng = np.random.default_rng(4)
    images = list(range(1, 9))
    persons, preds = [], []
    for img in images:
        for _ in range(int(rng.integers(0, 4))):  # 0 to 3 persons; some images have none
            kp = np.zeros((17, 3))
            kp[:, :2] = rng.uniform(50, 350, (17, 2))
            kp[:, 2] = rng.integers(0, 3, 17)
            crowd = int(rng.random() < 0.1)
            persons.append({"id": len(persons) + 1, "image_id": img, "category_id": 1, "iscrowd": crowd,
                            "num_keypoints": int((kp[:, 2] > 0).sum()), "area": float(rng.uniform(2000, 20000)),
                            "bbox": [40.0, 40.0, 300.0, 300.0], "keypoints": kp.ravel().tolist()})
            preds.append((img, kp[:, :2] + rng.normal(0, rng.uniform(2, 25), (17, 2))))
        if rng.random() < 0.4:  # a false detection
            preds.append((img, rng.uniform(50, 350, (17, 2))))
    scores = rng.random(len(preds))  # continuous: no ties between detections
    gt = _coco(tmp_path, "gt.json", images, persons)
    results = keypoint_results([p[0] for p in preds], np.stack([p[1] for p in preds]), np.ones((len(preds), 17)),
                               scores)
    data = {}
    stats = evaluate_keypoints(gt, results, image_ids=images, per_image=data)
    assert list(data["items"]) == images
    counts = np.vstack([np.ones((1, len(images)), np.int32), _blocks(len(images), 6)])
    got = resampled_stats(data, counts)
    for name in ("AP", "AP50", "AP75", "AR", "AR50"):
        assert got[name][0] == stats[name] or (math.isnan(got[name][0]) and math.isnan(stats[name]))
    for r, c in enumerate(counts[1:], 1):
        # the resample materialised: image i drawn k times becomes k images (ids in image order, then copy)
        new_ids, new_persons, new_results = [], [], []
        for i, k in zip(images, c):
            for copy in range(k):
                nid = i * 100 + copy
                new_ids.append(nid)
                new_persons += [{**p, "id": len(new_persons) + j + 1, "image_id": nid}
                                for j, p in enumerate(q for q in persons if q["image_id"] == i)]
                new_results += [{**res, "image_id": nid} for res in results if res["image_id"] == i]
        want = evaluate_keypoints(_coco(tmp_path, f"gt{r}.json", new_ids, new_persons), new_results,
                                  image_ids=new_ids)
        for name in ("AP", "AP50", "AP75", "AR", "AR50"):
            assert got[name][r] == want[name] or (math.isnan(got[name][r]) and math.isnan(want[name])), (r, name)


def test_check_resample_names_a_statistic_that_misses_the_metric():
    task = LinearProbe("p", **validate_options(LinearProbe.option_schema(), {}, "t"))
    per_item = {"items": np.array(["a", "b"]), "top1": np.array([[True], [False]]),
                "topk": np.array([[True], [True]])}
    ok = {"metrics": {"top1_best_epoch": 50.0, "top1_final": 50.0, "top3_best_epoch": 100.0}, "per_item": per_item}
    assert check_resample(task, ok)["top1_final"] == 50.0
    with pytest.raises(AssertionError, match="top1_final"):
        check_resample(task, {**ok, "metrics": {**ok["metrics"], "top1_final": 50.1}})

    class OverN(LinearProbe):  # right only while every resample holds n items
        def resample(self, per_item, counts):
            return {"top1_final": 100.0 * (counts @ per_item["top1"][:, -1]) / counts.shape[1]}

    broken = OverN("p", **validate_options(LinearProbe.option_schema(), {}, "t"))
    with pytest.raises(AssertionError, match=r"drawing every item twice changes the statistic .*'top1_final': "
                                             r"\(100.0, 50.0\).*divide by the items drawn"):
        check_resample(broken, ok, metrics=["top1_final"])


DONE_WHEN = """
seed: 0
encoders:
  rv_a: {{plugin: random_vit, options: {{depth: 2, embed_dim: 32, num_heads: 2, patch_size: 16, img_size: 64}}}}
  rv_b: {{plugin: random_vit, options: {{depth: 2, embed_dim: 32, num_heads: 2, patch_size: 16, img_size: 64}}}}
  px: {{plugin: pixels, options: {{patch_size: 16, grid: 8}}}}
datasets:
  parts: {{plugin: synthetic_parts, options: {{num_images: 30, format: cub, root: {root}}}}}
tasks:
  ret: {{plugin: retrieval, options: {{representation: cls, transform: "resize:64"}}}}
  lin: {{plugin: linear_probe, options: {{epochs: 4, batch_size: 32, train_transform: "resize:64",
                                        test_transform: "resize:64"{seeds}}}}}
"""


def _run(tmp_path, out, seeds="", extra=()):
    from harness.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(DONE_WHEN.format(root=tmp_path / "gen", seeds=seeds))
    assert main(["run", str(spec), "--out", str(out), "--no-progress", *extra]) == 0
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}


@pytest.mark.slow
def test_done_when_two_identical_encoders_differ_by_exactly_zero(tmp_path, capsys):
    from harness.cli import main

    results = _run(tmp_path, tmp_path / "out")
    printed = capsys.readouterr().out
    assert len(results) == 6
    for unit, r in results.items():
        assert r["status"] == "ok" and not r["warnings"], (unit, r["warnings"])
        metric = r["headline"][0]
        lo, hi = r["intervals"]["ci95"][metric]
        assert lo <= r["metrics"][metric] <= hi and hi > lo, (unit, metric, lo, hi)
        assert r["intervals"]["resamples"] == 1000
    # the report prints every headline number with its interval, and the paired table
    assert "[" in printed and "paired differences" in printed and "excludes 0" in printed
    pairs = json.loads((tmp_path / "out" / "comparisons.json").read_text())
    same = [p for p in pairs if {p["a"], p["b"]} == {"rv_a", "rv_b"}]
    assert {p["task"] for p in same} == {"ret", "lin"}
    for p in same:
        assert p["difference"] == 0.0 and p["ci95"] == [0.0, 0.0] and not p["excludes_zero"]
    assert any(p["b"] == "px" for p in pairs)
    # seeded: a rerun gives identical intervals and replicates
    again = _run(tmp_path, tmp_path / "again", extra=["--force"])
    for unit, r in results.items():
        assert again[unit]["intervals"] == r["intervals"] and again[unit]["metrics"] == r["metrics"]
        with np.load(tmp_path / "out" / r["per_item"]["file"]) as a, \
                np.load(tmp_path / "again" / r["per_item"]["file"]) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # harness compare: the same units of two folders, paired; identical runs differ by exactly 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "out"), str(tmp_path / "again"), "--json", str(tmp_path / "c.json")]) == 0
    rows = json.loads((tmp_path / "c.json").read_text())
    assert len(rows) == 6 and all(r["difference"] == 0.0 and r["ci95"] == [0.0, 0.0] for r in rows)
    assert "A − B" in capsys.readouterr().out
    # folders whose units differ: one line naming them
    (tmp_path / "again" / "results" / "ret__parts__px.json").unlink()
    assert main(["compare", str(tmp_path / "out"), str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hold different units" in err and "ret__parts__px" in err


@pytest.mark.slow
def test_seeds_report_mean_std_and_the_interval_of_the_mean(tmp_path):
    results = _run(tmp_path, tmp_path / "out", seeds=", seeds: [0, 1, 2]")
    r = results["lin__parts__rv_a"]
    assert r["status"] == "ok" and not r["warnings"], r["warnings"]
    s = r["seeds"]
    assert s["seeds"] == [0, 1, 2]
    for m in r["headline"]:
        assert r["metrics"][m] == pytest.approx(np.mean(s["values"][m]), abs=1e-12)
        assert s["std"][m] == pytest.approx(np.std(s["values"][m], ddof=1))
        lo, hi = r["intervals"]["ci95"][m]
        assert lo <= r["metrics"][m] <= hi
    assert len(set(s["values"]["top1_final"])) > 1 or s["std"]["top1_final"] == 0.0
    assert any(a.startswith(f"artifacts/lin__parts__rv_a/seed{k}/") for a in r["artifacts"] for k in (0, 1, 2))
    with np.load(tmp_path / "out" / r["per_item"]["file"]) as f:
        assert {"seed0/top1", "seed1/top1", "seed2/top1", "items", "bootstrap/top1_final"} <= set(f.files)
    # retrieval trains nothing: no seeds option
    assert "seeds" not in results["ret__parts__rv_a"]


@pytest.mark.parametrize("override, message", [
    ("bootstrap=5", "bootstrap: expected the number of bootstrap resamples"),
    ("bootstrap=yes", "bootstrap: expected the number of bootstrap resamples"),
    ("tasks.tiny_linear.options.seeds=[0, 0]", "seeds: .*distinct non-negative integers"),
    ("tasks.tiny_retrieval.options.seeds=[0, 1]", "seeds.*unknown option"),  # retrieval trains nothing
])
def test_bad_bootstrap_and_seeds_settings_are_one_line_spec_errors(override, message):
    from harness.api import Plugins, SpecError, build_plan

    from test_demo import DEMO

    with pytest.raises(SpecError, match=message) as err:
        build_plan(DEMO, Plugins(), [override])
    assert "\n" not in str(err.value)


def test_bootstrap_zero_means_no_intervals_and_the_default_is_1000():
    from harness.api import Plugins, build_plan

    from test_demo import DEMO

    assert build_plan(DEMO, Plugins()).bootstrap == 1000
    assert build_plan(DEMO, Plugins(), ["bootstrap=0"]).bootstrap == 0


def test_runner_refuses_an_interval_whose_statistic_misses_the_metric_and_survives_a_failing_one():
    from harness.api import Task
    from harness.runner import _intervals

    class Mean(Task):
        def resample(self, per_item, counts):
            return {"m": counts @ per_item["x"] / counts.shape[1], "other": np.zeros(len(counts))}

    class Broken(Task):
        def resample(self, per_item, counts):
            raise ValueError("boom")

    per_item = [{"items": np.array(["a", "b", "c", "d"]), "x": np.array([1.0, 2.0, 3.0, 6.0])}]
    resampler = bootstrap.Resampler(0, 200)
    arrays, found, warnings = _intervals(Mean("t"), per_item, {"m": 3.0, "other": 0.0}, None, resampler)
    assert not warnings and set(found["ci95"]) == {"m", "other"} and arrays["bootstrap/m"].shape == (200,)
    arrays, found, warnings = _intervals(Mean("t"), per_item, {"m": 3.5, "other": 0.0}, None, resampler)
    assert set(found["ci95"]) == {"other"} and "bootstrap/m" not in arrays
    assert warnings == ["no interval for m: its bootstrap statistic gives 3.0 on the data itself, the metric is 3.5"]
    arrays, found, warnings = _intervals(Broken("t"), per_item, {"m": 3.0}, None, resampler)
    assert found is None and "boom" in warnings[0] and "x" in arrays  # the per-item data are still written


# -- by image: the items of one source image drawn together (bootstrap_by: image) ---------------------------------
def test_by_image_every_item_of_an_image_gets_its_images_count():
    clusters = bootstrap.cluster_index(np.array([7, 7, 3, 9, 3, 7]))
    assert clusters.tolist() == [1, 1, 0, 2, 0, 1]
    r = bootstrap.Resampler(0, 300, by="image")
    items = [f"i{k}" for k in range(6)]
    key = r.key(items, clusters)
    assert key != r.key(items) and key == bootstrap.Resampler(0, 300).key(items, clusters)
    blocks = list(r.blocks(key, 6, clusters))
    counts = np.concatenate(blocks)
    assert counts.shape == (300, 6) and counts.dtype == np.int32
    for c in range(3):  # equal counts within an image ...
        members = counts[:, clusters == c]
        assert (members == members[:, :1]).all()
    per_image = counts[:, [2, 0, 3]]  # ... and the images' counts are a draw of 3 images out of 3
    assert (per_image.sum(1) == 3).all() and len({tuple(row) for row in per_image}) > 5


def test_by_image_intervals_widen_when_an_images_items_move_together():
    """Ten crops per image sharing their image's score: resampling crops treats 200 items as independent, resampling
    images sees 20; the interval by image is about sqrt(10) wider."""
    from harness.api import Task
    from harness.runner import _intervals

    class Mean(Task):
        def resample(self, per_item, counts):
            return {"m": counts @ per_item["x"] / counts.shape[1]}

    rng = np.random.default_rng(0)
    per_image = rng.normal(size=20)
    x = np.repeat(per_image, 10)
    per_item = [{"items": np.array([f"c{k}" for k in range(200)]), "x": x, "clusters": np.repeat(np.arange(20), 10)}]
    metrics = {"m": float((np.ones((1, 200)) @ x / 200)[0])}
    _, by_item, _ = _intervals(Mean("t"), per_item, metrics, None, bootstrap.Resampler(0, 1000))
    _, by_image, _ = _intervals(Mean("t"), per_item, metrics, None, bootstrap.Resampler(0, 1000, by="image"))
    width = lambda found: found["ci95"]["m"][1] - found["ci95"]["m"][0]  # noqa: E731
    assert by_item["by"] == "item" and "clusters" not in by_item
    assert by_image["by"] == "image" and by_image["clusters"] == 20 and by_image["items"] == 200
    assert 2.5 < width(by_image) / width(by_item) < 4.5
    # a task without clusters (e.g. segmentation: its items are images already) is drawn by item either way
    plain = [{"items": per_item[0]["items"], "x": x}]
    _, found, _ = _intervals(Mean("t"), plain, metrics, None, bootstrap.Resampler(0, 1000, by="image"))
    assert found["by"] == "item" and found["ci95"] == by_item["ci95"]


@pytest.mark.slow
def test_by_image_on_part_crops_identical_encoders_still_differ_by_zero_and_a_switch_reruns(tmp_path):
    from harness.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(DONE_WHEN.format(root=tmp_path / "gen", seeds="") + "bootstrap_by: image\n")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    by_image = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    r = by_image["ret__parts__rv_a"]
    with np.load(out / r["per_item"]["file"]) as f:
        images = len(np.unique(f["clusters"]))
    assert r["intervals"]["by"] == "image" and r["intervals"]["clusters"] == images < r["intervals"]["items"]
    assert r["config"]["bootstrap_by"] == "image"
    pairs = json.loads((out / "comparisons.json").read_text())
    same = [p for p in pairs if {p["a"], p["b"]} == {"rv_a", "rv_b"}]
    assert len(same) == 2 and all(p["difference"] == 0.0 and p["ci95"] == [0.0, 0.0] for p in same)
    # back to the default: every unit is recomputed (the intervals changed), the metrics are the same
    spec.write_text(DONE_WHEN.format(root=tmp_path / "gen", seeds=""))
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    by_item = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    for unit, r in by_item.items():
        assert r["intervals"]["by"] == "item" and "bootstrap_by" not in r["config"]
        assert r["metrics"] == by_image[unit]["metrics"] and r["key"] != by_image[unit]["key"]


def test_bootstrap_by_must_be_item_or_image():
    from harness.api import Plugins, SpecError, build_plan

    from test_demo import DEMO

    assert build_plan(DEMO, Plugins()).bootstrap_by == "item"
    assert build_plan(DEMO, Plugins(), ["bootstrap_by=image"]).bootstrap_by == "image"
    with pytest.raises(SpecError, match="bootstrap_by: expected item or image .*got 'images'.*did you mean 'image'"):
        build_plan(DEMO, Plugins(), ["bootstrap_by=images"])
