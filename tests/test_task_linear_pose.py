"""Linear pose (Table 10): codec geometry, decoding and flip test; COCOeval against hand-computed OKS;
a head on informative features far above a shuffled control; coco_persons; an end-to-end spec run."""
import copy
import json
import math
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import COCO_KEYPOINT_NAMES, COCO_TRAIN, instantiate, write_coco
from harness.testing import check_resample
from harness import HarnessError
from partbench_plugins.datasets.coco_persons import CocoPersons, clip_box
from partbench_plugins.tasks.head_bank import HeadBank, adamw
from partbench_plugins.tasks.linear_pose import PoseHead
from partbench_plugins.tasks.pose_codec import PoseCodec, joints_mse_loss
from partbench_plugins.tasks.pose_eval import evaluate_keypoints, keypoint_results

FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def crop_keypoints(rng, codec, k=17):
    """Keypoints well inside the crop, sub-pixel, all visible."""
    H, W = codec.input_size
    return np.column_stack([rng.uniform(20, W - 20, k), rng.uniform(20, H - 20, k), np.full(k, 2.0)])


# classic targets are centred on the rounded heatmap pixel (mmpose), so they carry up to half a pixel of
# quantisation that no decoder can undo; UDP targets keep the sub-pixel centre and DARK recovers it
@pytest.mark.parametrize("udp,tol", [(True, 0.05), (False, 0.5 + 1e-9)])
def test_decoding_a_rendered_heatmap_returns_its_keypoints(udp, tol):
    codec = PoseCodec(udp=udp)
    kps = crop_keypoints(np.random.default_rng(0), codec)
    target, weight = codec.encode(kps)
    assert weight.tolist() == [1.0] * 17
    xy, maxvals = codec.peaks(target[None])
    stride = np.array(codec.stride)
    # heatmap coordinates back to crop pixels, in heatmap pixels
    err = np.abs(xy[0].numpy() * stride - kps[:, :2]) / stride
    assert err.max() < tol, err.max()
    assert torch.all(maxvals > 0.9)


def test_flip_test_swaps_left_and_right():
    codec = PoseCodec()
    kps = crop_keypoints(np.random.default_rng(1), codec)
    direct, _ = codec.encode(kps)
    mirrored, _ = codec.encode(codec.flip_keypoints(kps, FLIP_PAIRS))
    # the mirrored crop's heatmaps, flipped back with left/right swapped, are the original ones
    back = codec.flip_back(mirrored[None], FLIP_PAIRS)[0]
    assert torch.allclose(back, direct, atol=1e-6)
    # without the channel swap the left eye would land on the right eye's position
    plain = mirrored.flip(-1)
    assert not torch.allclose(plain[1], direct[1], atol=1e-3)
    assert torch.allclose(plain[2], direct[1], atol=1e-6)
    assert torch.allclose(codec.fuse_flip(direct[None], mirrored[None], FLIP_PAIRS)[0], direct, atol=1e-6)


@pytest.mark.parametrize("udp", [True, False])
def test_affine_crop_and_its_inverse_round_trip(udp):
    codec = PoseCodec(udp=udp)
    c, s = codec.center_size((37.0, 21.0, 120.0, 200.0))
    pts = np.array([[60.3, 50.7], [140.0, 210.2], [37.0, 21.0]])
    back = codec.to_image(codec.to_crop(np.column_stack([pts, np.ones(3)]), c, s), c, s)[:, :2]
    assert np.abs(back - pts).max() < 1e-9
    # the warped pixels agree with the matrix: a bright dot lands where to_crop says (< 0.5 px)
    img = np.zeros((300, 220, 3), np.uint8)
    img[120:123, 80:83] = 255  # centre (81, 121)
    crop = np.asarray(codec.warp(Image.fromarray(img), c, s), dtype=np.float64).sum(2)
    yy, xx = np.mgrid[: crop.shape[0], : crop.shape[1]]
    found = np.array([(xx * crop).sum(), (yy * crop).sum()]) / crop.sum()
    expected = codec.to_crop(np.array([[81.0, 121.0, 1.0]]), c, s)[0, :2]
    assert np.abs(found - expected).max() < 0.5, (found, expected)


def one_person_file(tmp_path, area=10000.0):
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 300, "height": 300}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 1,
                            "area": area, "bbox": [50.0, 50.0, 100.0, 100.0],
                            "keypoints": [100, 100, 2] + [0, 0, 0] * 16}],
           "categories": [{"id": 1, "name": "person", "keypoints": COCO_KEYPOINT_NAMES, "skeleton": []}]}
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(doc))
    return path


def test_cocoeval_on_ground_truth_and_on_a_hand_computed_shift(tmp_path):
    path = one_person_file(tmp_path)
    kp = np.zeros((1, 17, 2))
    kp[0, 0] = (100.0, 100.0)
    exact = evaluate_keypoints(path, keypoint_results([1], kp, np.ones((1, 17)), [1.0]))
    assert exact["AP"] == exact["AR"] == 100.0
    # OKS = exp(-d^2 / (2 * area * (2 * 0.026)^2)) for the nose alone; d chosen for OKS = 0.72:
    d = math.sqrt(-2 * 10000.0 * (2 * 0.026) ** 2 * math.log(0.72))
    kp[0, 0] = (100.0 + d, 100.0)
    shifted = evaluate_keypoints(path, keypoint_results([1], kp, np.ones((1, 17)), [1.0]))
    # matched at OKS thresholds .50 .55 .60 .65 .70, missed at .75 ... .95: AP = AR = 5/10
    assert shifted["AP"] == pytest.approx(50.0) and shifted["AR"] == pytest.approx(50.0)
    assert shifted["AP50"] == 100.0 and shifted["AP75"] == 0.0


def test_a_head_on_informative_features_beats_a_shuffled_control():
    """Features that carry the keypoint positions (blurred blobs at 1/16) train a head whose decoded
    keypoints are near the truth; the same head trained on other persons' targets is not."""
    codec = PoseCodec(input_size=(64, 48), heatmap_size=(16, 12), sigma=1.0)
    rng = np.random.default_rng(0)
    n, k = 96, 3
    kps = np.zeros((n, k, 3))
    kps[..., 0] = rng.uniform(6, 42, (n, k))
    kps[..., 1] = rng.uniform(6, 58, (n, k))
    kps[..., 2] = 2
    target, weight = codec.encode(kps)
    feats = torch.nn.functional.avg_pool2d(target, 2) * 10  # [n, k, 8, 6] maps: position information

    def train(targets):
        bank = HeadBank(lambda: PoseHead(k, k, size=codec.heatmap_size), [1e-1], adamw(0.0), seed=0)
        for _ in range(600):
            bank.step(feats, lambda head, x: joints_mse_loss(head(x), targets, weight))
        with torch.no_grad():
            xy, _ = codec.peaks(bank.heads[0].eval()(feats))
        return np.abs(xy.numpy() * np.array(codec.stride) - kps[..., :2]).mean()  # crop pixels

    informative = train(target)
    shuffled = train(target[rng.permutation(n)])
    assert informative < 2.5 and shuffled > 4 * informative, (informative, shuffled)


def test_coco_persons_boxes_drops_and_errors(tmp_path):
    train = copy.deepcopy(COCO_TRAIN)
    train["annotations"] += [
        {"id": 40, "image_id": 3, "category_id": 1, "iscrowd": 1, "num_keypoints": 2, "bbox": [0, 0, 5, 5],
         "area": 1.0, "keypoints": [0] * 51},
        {"id": 41, "image_id": 3, "category_id": 1, "iscrowd": 0, "num_keypoints": 0, "bbox": [0, 0, 5, 5],
         "area": 1.0, "keypoints": [0] * 51},
        {"id": 42, "image_id": 3, "category_id": 1, "iscrowd": 0, "num_keypoints": 1, "bbox": [500, 500, 5, 5],
         "area": 1.0, "keypoints": [1, 1, 2] + [0] * 48}]
    root = write_coco(tmp_path / "coco", train=train)
    ds = instantiate(CocoPersons, root=str(root))
    s = ds.load("train")
    assert len(s) == 4 and s.summary["dropped_crowd"] == 1 and s.summary["dropped_no_keypoints"] == 1
    assert s.summary["dropped_box_outside_image"] == 1
    assert s.box(0) == (0.0, 0.0, 99.0, 149.0)  # clipped as mmpose: x2 = min(W-1, x + w - 1)
    assert s.keypoints(0)[0].tolist() == [50.0, 50.0, 2.0] and s.image_id(0) == 1 and s.score(0) == 1.0
    assert (1, 2) in s.flip_pairs and s.annotation_file.endswith("person_keypoints_train2017.json")
    assert clip_box((10, 10, 0, 5), 100, 100) is None
    with pytest.raises(HarnessError, match=r"val2017\.json: no usable person .*'dropped_box_outside_image': 1"):
        ds.load("val")  # val2017 (the alias of test): its one person has a 1x1 box, nothing to crop
    (root / "annotations" / "person_keypoints_val2017.json").unlink()
    with pytest.raises(HarnessError, match=r"person_keypoints_val2017\.json: file not found"):
        ds.check_split("test")
    empty = copy.deepcopy(COCO_TRAIN)
    for a in empty["annotations"]:
        a["num_keypoints"] = 0
    root2 = write_coco(tmp_path / "coco2", train=empty)
    with pytest.raises(HarnessError, match=r"no usable person .*dropped: \{'dropped_no_keypoints': 4\}"):
        instantiate(CocoPersons, root=str(root2)).load("train")


SPEC = """
encoders:
  vit: {{plugin: random_vit, options: {{depth: 2, embed_dim: 48, num_heads: 2, seed: 0}}}}
datasets:
  persons: {{plugin: synthetic_parts, options: {{num_images: 24, image_size: 96, format: keypoints, root: {root}}}}}
tasks:
  pose: {{plugin: linear_pose, options: {{blocks: [0, 1], input_size: [64, 48], epochs: 3, steps: [2],
                                        batch_size: 8, warmup: 2, lr: 5.0e-3, lrs: [1.0e-3]}}}}
reference:
  pose: {{persons: {{vit: {{AP: 6.8, AP50: 27.5, AR: 14.7, AR50: 44.3}}}}}}
"""


def test_spec_runs_and_reports_the_table10_columns(tmp_path, capsys):
    from harness.cli import main

    spec = tmp_path / "pose.yaml"
    spec.write_text(SPEC.format(root=tmp_path / "gen"))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    (res,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "results").glob("*.json")]
    assert res["status"] == "ok", res["error"]
    m = res["metrics"]
    assert set(m) >= {"AP", "AP50", "AP75", "AR", "AR50", "AP@lr=0.001"}
    d = res["details"]
    assert d["flip_test"] and d["persons"]["test"] > 0 and len(d["stats"]) == 10
    # one forward per training crop, two per test crop (the flip test)
    assert res["forwards"] == d["persons"]["train"] + 2 * d["persons"]["test"]
    preds = json.loads((tmp_path / "out" / res["artifacts"][0]).read_text())
    assert len(preds) == d["persons"]["test"] and len(preds[0]["keypoints"]) == 51
    # the reported numbers are pycocotools' COCOeval of the written predictions, on the test persons' images
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(d["annotation_file"])
    ev = COCOeval(gt, gt.loadRes(preds), "keypoints")
    ev.params.imgIds = sorted({p["image_id"] for p in preds})
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [m[k] for k in ("AP", "AP50", "AP75")] == [round(100 * float(v), 2) for v in ev.stats[:3]]
    assert [m[k] for k in ("AR", "AR50")] == [round(100 * float(v), 2) for v in ev.stats[5:7]]
    # every number has an interval; the per-image data reproduce them exactly (the runner checks it, and so here)
    assert set(res["intervals"]["ci95"]) >= {"AP", "AP50", "AP75", "AR", "AR50"} and not res["warnings"]
    with np.load(tmp_path / "out" / res["per_item"]["file"]) as f:
        per_item = {k: f[k] for k in f.files if not k.startswith("bootstrap/")}
    from partbench_plugins.tasks.linear_pose import LinearPose

    check_resample(LinearPose("pose", **res["config"]["task"]["options"]), {"metrics": m, "per_item": per_item})
    for col in ("AP (paper)", "AP50 (paper)", "AR (paper)", "AR50 (paper)"):
        assert col in printed
    assert "6.80" in printed and "44.30" in printed


PIXELS_SPEC = """
encoders:
  px: {{plugin: pixels}}
datasets:
  persons: {{plugin: synthetic_parts, options: {{num_images: 12, image_size: 96, format: keypoints, root: {root}}}}}
tasks:
  pose: {{plugin: linear_pose, options: {{blocks: [], input_size: [64, 48], epochs: 2, steps: [1], batch_size: 8,
                                        warmup: 1, lr: 5.0e-3}}}}
"""


def test_no_blocks_reads_the_final_tokens_so_weight_free_encoders_run(tmp_path):
    """``blocks: []`` reads the final-norm tokens, as in linear_seg: the pixels encoder (no blocks) runs."""
    from harness.cli import main

    spec = tmp_path / "pose.yaml"
    spec.write_text(PIXELS_SPEC.format(root=tmp_path / "gen"))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (res,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "results").glob("*.json")]
    assert res["status"] == "ok", res["error"]
    d = res["details"]
    assert d["blocks"] == [] and set(res["metrics"]) == {"AP", "AP50", "AP75", "AR", "AR50"}
    assert d["cache_gb"] is None  # the pixels encoder declares no width before it runs
    heads = torch.load(tmp_path / "out" / next(a for a in res["artifacts"] if a.endswith("heads.pt")))
    # the head reads one 3 x 16 x 16 pixel vector per patch of the 64 x 48 crop
    assert heads["heads"][0]["conv.weight"].shape[1:] == (3 * 16 * 16, 1, 1)
    assert res["forwards"] == d["persons"]["train"] + 2 * d["persons"]["test"]


def test_a_patch_14_encoder_runs(tmp_path):
    """The head upsamples the 1/14 token map to the 1/4 heat maps (x3.5), not by a fixed x4: DINOv2- and
    I-JEPA-like encoders run (they raised a tensor size mismatch)."""
    from harness.cli import main

    spec = tmp_path / "pose.yaml"
    spec.write_text(PIXELS_SPEC.format(root=tmp_path / "gen").replace(
        "px: {plugin: pixels}", "px: {plugin: random_vit, options: {embed_dim: 32, depth: 2, num_heads: 2, "
                                "patch_size: 14, img_size: 56}}").replace(
        "blocks: [], input_size: [64, 48]", "blocks: [1], input_size: [56, 56]"))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (res,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "results").glob("*.json")]
    assert res["status"] == "ok", res["error"]
    heads = torch.load(tmp_path / "out" / next(a for a in res["artifacts"] if a.endswith("heads.pt")))
    assert heads["heads"][0]["conv.weight"].shape[1:] == (32, 1, 1)
