"""linear_seg: the fast protocol's training steps equal mmseg's train_step (auxiliary head included, so
dropping it is exact), its slide inference + IoU equal mmseg's EncoderDecoder + IoUMetric, the paper
protocol trains through mmengine's Runner in a worker, and the cache/stream modes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.testing import check_resample
from harness import HarnessError
from harness.api import SegSamples
from harness.spec import validate_options
from harness.testing import FakeContext, StubDataset
from partbench_plugins.encoders.baselines import RandomViT
from partbench_plugins.tasks import linear_seg as ls
from partbench_plugins.tasks import seg_mmseg
from partbench_plugins.tasks.head_bank import HeadBank, adamw

CLASSES = ["red", "green", "blue"]
TINY = dict(embed_dim=24, depth=4, num_heads=2, img_size=32, patch_size=8)


def write_seg(root: Path, n: int, seed: int, sizes=((72, 56), (40, 64), (64, 64))) -> SegSamples:
    """Index-PNG segmentation data in mmseg's img_dir/ann_dir layout: coloured rectangles (classes 1..3)
    on noise (0 = background, ignored with reduce_zero_label)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
        lab = np.zeros((h, w), np.uint8)
        for c in range(3):
            x0, y0 = rng.integers(0, w - 12), rng.integers(0, h - 12)
            x1, y1 = x0 + rng.integers(8, 30), y0 + rng.integers(8, 30)
            img[y0:y1, x0:x1] = 0
            img[y0:y1, x0:x1, c] = 200 + rng.integers(0, 50)
            lab[y0:y1, x0:x1] = c + 1
        Image.fromarray(img).save(root / "img" / f"{i:03d}.jpg", quality=95)
        Image.fromarray(lab, mode="L").save(root / "ann" / f"{i:03d}.png")
        keys.append(f"{i:03d}")
    return SegSamples(keys, CLASSES, {}, [str(root / "img" / f"{k}.jpg") for k in keys],
                      [str(root / "ann" / f"{k}.png") for k in keys],
                      defaults={"scale": [96, 48], "crop": [32, 32], "stride": [24, 24]},
                      layout={"data_root": str(root), "img_path": "img", "seg_map_path": "ann",
                              "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": True})


def task(**opts):
    opts = {"blocks": [0, 1, 2, 3], **opts}  # the tiny encoder has 4 blocks
    return ls.LinearSeg("seg", **validate_options(ls.LinearSeg.option_schema(), opts, "t"))


def enc(**kw):
    return RandomViT("rv", **{**TINY, "batch_size": 16, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    return write_seg(base / "train", 6, 0), write_seg(base / "val", 3, 1)


def test_geometry_follows_mmcv_and_mmseg():
    assert ls.rescale_size(640, 480, (2048, 512)) == (683, 512)  # short edge bound
    assert ls.rescale_size(3000, 500, (2048, 512)) == (2048, 341)  # long edge bound
    wins = ls.slide_windows(512, 683, (512, 512), (341, 341))
    assert wins == [(0, 0, 512, 512), (0, 171, 512, 683)]
    assert ls.slide_windows(40, 40, (32, 32), (24, 24)) == [(0, 0, 32, 32), (0, 8, 32, 40), (8, 0, 40, 32),
                                                            (8, 8, 40, 40)]


def _mmseg_model(encoder, C, crop, stride, aux=True, lr=4e-4, iters=160000, warmup=1500):
    cfg = seg_mmseg.build_config(encoder=encoder, blocks=[0, 1, 2, 3], embed_dim=TINY["embed_dim"], num_classes=C,
                                 classes=CLASSES, layout={"data_root": "/", "train": {}, "val": {}},
                                 scale=(96, 48), crop=crop, stride=stride, mean=encoder.opts["mean"],
                                 std=encoder.opts["std"], work_dir="/tmp", auxiliary=aux, lr=lr, iters=iters,
                                 warmup=warmup)
    return seg_mmseg.instantiate(cfg["model"], "model"), cfg


def fp16_like_the_cache(model):
    """The fast protocol reads block maps stored in fp16: give mmseg's backbone the same rounding, so the
    comparison is of the two training/inference paths, not of the storage precision."""
    forward = model.backbone.forward
    model.backbone.forward = lambda x: tuple(m.half().float() for m in forward(x))


def test_fast_steps_equal_mmseg_train_steps_with_the_auxiliary_head(data, tmp_path):
    """k optimiser steps on cached window features == k mmseg train_steps on the same windows with the
    auxiliary head training alongside (no augmentation): same conv_seg weights to 1e-6."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    train, _ = data
    e = enc(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # the two normalisations are then bit-identical
    t = task(iterations=6, warmup=3, lr=0.05, weight_decay=0.05)
    geo = ls._Geometry(train, (96, 48), (32, 32), (24, 24))
    view = ls.window_view(train, geo, True, "train")
    ctx = FakeContext(e, StubDataset("s", {"train": train}), out_dir=tmp_path)
    feats = ctx.features(view, ["block.0", "block.1", "block.2", "block.3"], "pad:32:32")
    labels = ls.window_labels(train, view)
    from partbench_plugins.tasks.dense import DenseMaps

    maps = DenseMaps(feats, ["block.0", "block.1", "block.2", "block.3"], (4, 4), 1, "cpu")

    model, cfg = _mmseg_model(e, 3, (32, 32), (24, 24), lr=0.05, iters=6, warmup=3)
    fp16_like_the_cache(model)
    model.init_weights()
    model.train()
    torch.manual_seed(0)
    bank = HeadBank(lambda: ls.LinearSegHead(4 * TINY["embed_dim"], 3), [0.05], adamw(0.05),
                    lambda base, it: ls.warmup_poly_lr(base, it, 6, 3, 1e-6))
    with torch.no_grad():  # the same initial weights on both sides
        model.decode_head.conv_seg.weight.copy_(bank.heads[0].conv_seg.weight)
        model.decode_head.conv_seg.bias.copy_(bank.heads[0].conv_seg.bias)
    aux_before = [p.detach().clone() for p in model.auxiliary_head.parameters()]
    wrapper = seg_mmseg.instantiate(cfg["optim_wrapper"], "optim_wrapper", model=model)
    scheds = [seg_mmseg.instantiate(s, "param_scheduler", optimizer=wrapper) for s in cfg["param_scheduler"]]
    rng = np.random.default_rng(0)
    for it in range(6):
        idx = rng.choice(len(view), 4, replace=False)
        # mmseg side: the same windows as uint8 BGR images with their labels, through train_step
        imgs = [torch.from_numpy(np.array(view.image(int(k)).convert("RGB"))[:, :, ::-1].copy()).permute(2, 0, 1)
                for k in idx]
        samples = []
        for k in idx:
            s = SegDataSample(metainfo={"img_shape": (32, 32), "ori_shape": (32, 32), "pad_shape": (32, 32)})
            s.gt_sem_seg = PixelData(data=labels[int(k)][None].long())
            samples.append(s)
        model.train_step({"inputs": imgs, "data_samples": samples}, wrapper)
        for s in scheds:
            s.step()
        # ours
        y = labels[torch.from_numpy(idx)]
        bank.set_step(it)
        bank.step(maps.batch(idx), lambda h, x: ls.seg_loss(h(x), y))
    ours = bank.heads[0].conv_seg
    theirs = model.decode_head.conv_seg
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.bias, theirs.bias, atol=1e-6, rtol=0)
    aux_after = list(model.auxiliary_head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(aux_before, aux_after)), "the auxiliary head did train"


def test_slide_inference_and_iou_equal_mmseg(data, tmp_path):
    """Our evaluation (cached windows, stitching, resize, argmax, IoU) == mmseg's EncoderDecoder slide
    inference + IoUMetric for the same head, on images larger and smaller than the crop."""
    _, val = data
    e = enc(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    t = task(iterations=1)
    ctx = FakeContext(e, StubDataset("s", {"train": val, "val": val}), out_dir=tmp_path)
    unit = t.prepare(ctx)  # the dataset's geometry: scale 96x48, crop 32x32, stride 24x24
    assert unit.views["test"].geo.crop == (32, 32) and unit.grid == (4, 4)
    bank = HeadBank(lambda: ls.LinearSegHead(4 * TINY["embed_dim"], 3), [1.0], adamw(0.0), seed=3)
    ours = t.decoder(unit).evaluate(bank)[0]

    model, cfg = _mmseg_model(e, 3, (32, 32), (24, 24), aux=False)
    fp16_like_the_cache(model)
    with torch.no_grad():
        model.decode_head.conv_seg.load_state_dict(bank.heads[0].conv_seg.state_dict())
    model.eval()
    pipe = seg_mmseg.instantiate(dict(type="Compose", transforms=[
        dict(type="LoadImageFromFile"), dict(type="Resize", scale=(96, 48), keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=True), dict(type="PackSegInputs")]), "transform")
    metric = seg_mmseg.instantiate(dict(type="IoUMetric"), "metric")
    metric.dataset_meta = {"classes": CLASSES}
    for i in range(len(val)):
        d = pipe({"img_path": val.image_paths[i], "seg_map_path": val.mask_paths[i], "reduce_zero_label": True,
                  "seg_fields": []})
        out = model.test_step({"inputs": [d["inputs"]], "data_samples": [d["data_samples"]]})
        metric.process({}, [o.to_dict() for o in out])
    theirs = metric.compute_metrics(metric.results)
    for k in ("mIoU", "mAcc", "aAcc"):
        assert round(ours[k], 2) == pytest.approx(theirs[k], abs=1e-9), (k, ours[k], theirs[k])


def test_fast_protocol_runs_with_an_lr_sweep_and_saves_heads(data, tmp_path):
    train, val = data
    ctx = FakeContext(enc(), StubDataset("s", {"train": train, "val": val}), out_dir=tmp_path)
    t = task(iterations=30, warmup=5, lrs=[1e-3], blocks=[0, 1, 2, 3], flip=True)
    res = t.run(ctx)
    check_resample(t, res)  # mIoU, mAcc, aAcc from the test images' summed areas
    assert res["per_item"]["union"].shape == (len(val), 3) and list(res["per_item"]["items"]) == val.keys
    m, d = res["metrics"], res["details"]
    assert "mIoU@lr=0.001" in m
    # the mean over the classes present of the per-class IoU reported beside it (whose computation
    # test_slide_inference_and_iou_equal_mmseg pins), not another lr's or an unrounded one
    assert m["mIoU"] == pytest.approx(np.mean([c["IoU"] for c in d["per_class"].values() if c["IoU"] is not None]),
                                      abs=1e-4)
    assert d["geometry"]["train_windows"] == 2 * sum(len(w) for w in ls._Geometry(train, (96, 48), (32, 32), (24, 24)).windows)
    assert ctx.forwards == d["geometry"]["train_windows"] + d["geometry"]["test_windows"]  # one encode per window
    saved = torch.load(tmp_path / "heads.pt")
    assert saved["lrs"] == [4e-4, 1e-3] and saved["heads"][0]["conv_seg.weight"].shape == (3, 96, 1, 1)
    assert set(d["per_class"]) == set(CLASSES)


def test_stream_mode_reencodes_and_auto_refuses_a_too_big_cache(data, tmp_path):
    train, val = data
    ctx = FakeContext(enc(), StubDataset("s", {"train": train, "val": val}), out_dir=tmp_path)
    res = task(iterations=4, batch_size=4, warmup=1, mode="stream", flip=False).run(ctx)
    assert res["details"]["mode"] == "stream"
    ious = [c["IoU"] for c in res["details"]["per_class"].values() if c["IoU"] is not None]
    assert res["metrics"]["mIoU"] == pytest.approx(np.mean(ious), abs=1e-4)
    assert ctx.forwards >= 4 * 4  # every sample re-encoded (+ the validation windows)
    with pytest.raises(HarnessError, match="would take .* GB .*mode: stream"):
        task(iterations=1, max_cache_gb=1e-6).run(FakeContext(enc(), StubDataset("s", {"train": train, "val": val}),
                                                              out_dir=tmp_path))


def test_checks():
    from harness.testing import StubEncoder

    with pytest.raises(ValueError, match="no 'block.5'"):
        task(blocks=[5]).check(enc(), StubDataset("s", {"train": None, "val": None}))
    with pytest.raises(ValueError, match="no split 'val'"):
        task().check(enc(), StubDataset("s", {"train": None}))


@pytest.mark.slow
def test_paper_protocol_trains_through_mmengine_in_a_worker(data, tmp_path):
    train, val = data
    ctx = FakeContext(enc(), StubDataset("s", {"train": train, "val": val}), out_dir=tmp_path)
    ctx.encoder.plugin_name = "random_vit"
    t = task(protocol="paper", iterations=20, warmup=5, batch_size=4, workers=0)
    res = t.run(ctx)
    # mmseg's own per-image areas (IoUMetric's results) reproduce its rounded metrics
    check_resample(t, res)
    items = list(res["per_item"]["items"])
    assert len(items) == len(set(items)) == len(res["per_item"]["union"]) and items[0].endswith(".jpg")
    m = res["metrics"]
    assert set(m) == {"aAcc", "mIoU", "mAcc"}
    per_class = [c["IoU"] for c in res["details"]["per_class"].values() if c["IoU"] is not None]
    assert m["mIoU"] == pytest.approx(np.mean(per_class), abs=0.005 + 1e-4)  # mmseg rounds to 2 decimals
    assert res["details"]["checkpoint"] and Path(res["details"]["checkpoint"]).is_file()
    sd = torch.load(res["details"]["checkpoint"], weights_only=False)["state_dict"]
    assert "decode_head.conv_seg.weight" in sd and not any(k.startswith("backbone.") for k in sd)
    from mmengine.config import Config

    cfg = Config.fromfile(str(tmp_path / "mmseg" / "config.py"))
    assert cfg.model.decode_head.num_convs == 0 and cfg.model.auxiliary_head.in_index == 2


@pytest.mark.slow
def test_paper_protocol_runs_mmengine_once_per_learning_rate(data, tmp_path):
    train, val = data
    ctx = FakeContext(enc(), StubDataset("s", {"train": train, "val": val}), out_dir=tmp_path)
    ctx.encoder.plugin_name = "random_vit"
    res = task(protocol="paper", iterations=3, warmup=1, batch_size=2, workers=0, isolation="inprocess",
               lr=4e-4, lrs=[1e-3]).run(ctx)
    assert set(res["details"]["per_lr"]) == {"0.0004", "0.001"}
    assert "mIoU@lr=0.001" in res["metrics"] and res["details"]["lrs"] == [4e-4, 1e-3]
    from mmengine.config import Config

    for lr in ("0.0004", "0.001"):
        cfg = Config.fromfile(str(tmp_path / "mmseg" / f"lr={lr}" / "config.py"))
        assert cfg.optim_wrapper.optimizer.lr == float(lr)


def test_iou_scores_equal_an_independent_numpy_computation():
    from mmseg.evaluation import IoUMetric

    rng = np.random.default_rng(0)
    C = 5
    areas = [torch.zeros(C, dtype=torch.float64) for _ in range(4)]
    preds, labels = [], []
    for _ in range(3):
        label = rng.integers(0, C - 1, (17, 23))  # class 4 never in the labels ...
        label[rng.random(label.shape) < 0.2] = 255  # ... and some pixels ignored
        pred = rng.integers(0, C, label.shape)
        pred[label == 2] = 2  # class 2 predicted perfectly
        preds.append(pred)
        labels.append(label)
        for a, r in zip(areas, IoUMetric.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), C, 255)):
            a += r.double()
    got = ls.scores_from_areas(areas, [f"c{k}" for k in range(C)])

    p, lab = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in labels])
    keep = lab != 255
    p, lab = p[keep], lab[keep]
    conf = np.zeros((C, C), np.int64)  # rows: label, columns: prediction
    np.add.at(conf, (lab, p), 1)
    tp = np.diag(conf).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (conf.sum(0) + conf.sum(1) - tp)
        acc = tp / conf.sum(1)
    assert got["aAcc"] == pytest.approx(100 * tp.sum() / conf.sum(), abs=1e-4)
    assert got["mIoU"] == pytest.approx(100 * np.nanmean(iou), abs=1e-4)
    assert got["mAcc"] == pytest.approx(100 * np.nanmean(acc), abs=1e-4)
    assert got["per_class"]["c2"]["IoU"] == pytest.approx(100 * iou[2], abs=1e-4) and iou[2] < 1  # false positives
    assert got["per_class"]["c2"]["Acc"] == 100.0
    assert got["per_class"]["c4"]["IoU"] == 0.0 and got["per_class"]["c4"]["Acc"] is None  # never labelled
