"""linear_pose: a linear top-down pose probe on a frozen encoder (paper Table 10; protocol in docs/pose.md).

The paper trains "one linear layer over the features extracted by the frozen backbones to predict human
keypoints" and reports COCO keypoint AP/AR; it publishes no code, so every choice below is ours, after
ViTPose's simple-head recipe (the closest published linear-ish head on a frozen ViT):

- one person box per sample (ground truth by default, or a detections file: the dataset's option), box ->
  centre/size at aspect 3:4 with padding 1.25 -> an affine crop of 256x192 (``pose_codec``, UDP);
- the encoder runs once per crop (and once per mirrored test crop for the flip test): the raw outputs of
  ``blocks`` (default 3, 5, 7, 11, as the segmentation head; ``[]``: the final-norm tokens, for encoders
  without blocks) are cached in fp16 as 16x12 maps;
- the head is one 1x1 convolution from the concatenated maps to K heatmaps, upsampled x4 bilinearly to
  64x48 (the conv commutes with the upsampling: it is linear), trained with visibility-weighted MSE on
  Gaussian (sigma 2) targets, AdamW with step decay (ViTPose: lr 5e-4, wd 0.1, x0.1 at 170 and 200 of 210
  epochs, linear warmup); several learning rates train in lockstep on the same feature reads;
- test: heatmaps of the crop and of its mirror (flipped back, left/right channels swapped) averaged,
  decoded (argmax + DARK sub-pixel refinement under UDP), mapped back to image pixels; instance score =
  mean keypoint confidence above 0.2 x box score; scored by pycocotools ``COCOeval(iouType="keypoints")``
  against the split's annotation file.

The views, the maps and the training loop are ``dense_task.DenseHeadTask``'s; this file holds the pose
parts: the person crops, the head, the schedule and ``Heatmaps`` (targets and scoring).
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import HarnessError, Option, hookimpl
from harness.api import KeypointSamples

from .dense import DerivedSamples
from .dense_task import Decoder, DenseHeadTask, Training, dense_options
from .head_bank import adamw
from .pose_codec import PoseCodec, instance_scores, joints_mse_loss
from .pose_eval import STAT_NAMES, evaluate_keypoints, keypoint_results, resampled_stats
from .resampling import elementwise

METRICS = ("AP", "AP50", "AP75", "AR", "AR50")


def crop_view(samples: KeypointSamples, codec: PoseCodec, flip: bool, name: str) -> DerivedSamples:
    """Every person crop (and, with ``flip``, its mirror image right after it) as a view."""
    n = len(samples)
    geometry = np.stack([codec.geometry(samples.box(i)) for i in range(n)]) if n else np.zeros((0, 4))
    source = np.repeat(np.arange(n), 2 if flip else 1)
    flips = np.tile([False, True] if flip else [False], n)
    tag = (f"{name}/pose:{codec.input_size[0]}x{codec.input_size[1]}:pad{codec.padding:g}"
           f"{':udp' if codec.udp else ''}{':flip' if flip else ''}")
    return DerivedSamples(samples, source, np.repeat(geometry, 2 if flip else 1, axis=0), flips, codec.render, tag)


class PoseHead(torch.nn.Module):
    """1x1 conv to K heatmaps on the 1/patch token maps, then bilinear to the heat-map size, 1/4 of the crop
    (ViTPose's simple head with no deconvolution, a linear map of the features): x4 for patch 16, x3.5 for
    patch 14."""

    def __init__(self, channels: int, num_keypoints: int, size: tuple[int, int]):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, num_keypoints, 1)
        self.size = tuple(int(v) for v in size)
        torch.nn.init.normal_(self.conv.weight, 0.0, 0.001)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return F.interpolate(self.conv(x), size=self.size, mode="bilinear", align_corners=False)


def step_lr(base: float, epoch_float: float, it: int, steps, warmup: int, warmup_ratio: float) -> float:
    """mmcv ``step`` policy (x0.1 at each epoch in ``steps``) with linear warmup over ``warmup`` iterations."""
    lr = base * (0.1 ** sum(epoch_float >= s for s in steps))
    if it < warmup:
        lr *= warmup_ratio + (1 - warmup_ratio) * it / warmup
    return lr


class Heatmaps(Decoder):
    """Pose's part of a dense head task: Gaussian heat-map targets of the training crops' keypoints (the
    codec), visibility-weighted MSE, and the flip-test heat maps of the test crops decoded to keypoints and
    scored by COCOeval."""

    def __init__(self, task, unit):
        super().__init__(task, unit)
        train, test = unit.samples["train"], unit.samples["test"]
        if not test.annotation_file:
            raise HarnessError(f"{task.name}: split '{task.opts['test_split']}' names no annotation_file to score "
                               "against")
        self.codec = codec = task.codec
        # the training crops' keypoints in crop pixels; their heat maps are rendered per batch
        self.crop_kps = np.zeros((len(train), len(train.keypoint_names), 3))
        for i in range(len(train)):
            c, s = codec.center_size(train.box(i))
            self.crop_kps[i] = codec.to_crop(train.keypoints(i), c, s)

    def head(self, channels: int) -> torch.nn.Module:
        return PoseHead(channels, len(self.unit.samples["test"].keypoint_names), self.codec.heatmap_size)

    def targets(self, idx, device):
        return self.codec.encode(self.crop_kps[np.asarray(idx)], device=device)  # (heat maps, weights)

    def loss(self, out, target):
        return joints_mse_loss(out, *target)

    @torch.no_grad()
    def evaluate(self, bank) -> list[dict]:
        """{"stats": COCOeval's, "predictions": COCO keypoint results} of every head."""
        unit, codec, flip = self.unit, self.codec, self.task.opts["flip_test"]
        samples, maps = unit.samples["test"], unit.maps("test")
        n, step, bs = len(samples), 2 if flip else 1, unit.batch_size
        heatmaps = [[] for _ in bank.heads]
        for a in range(0, n, bs):
            rows = np.arange(a, min(n, a + bs))
            outs = [o.float() for o in bank.outputs(maps.batch(rows * step))]
            if flip:  # the mirror crop follows each crop in the view
                outs = [codec.fuse_flip(o, m.float(), samples.flip_pairs)
                        for o, m in zip(outs, bank.outputs(maps.batch(rows * step + 1)))]
            for hm, o in zip(heatmaps, outs):
                hm.append(o.cpu())
        geo = np.stack([codec.geometry(samples.box(i)) for i in range(n)])
        ids = [samples.image_id(i) for i in range(n)]
        results = []
        for hm in heatmaps:
            xy, maxvals = codec.decode(torch.cat(hm), geo[:, :2], geo[:, 2:4])
            preds = keypoint_results(ids, xy, maxvals, instance_scores(maxvals, [samples.score(i) for i in range(n)]))
            per_image: dict = {}
            stats = evaluate_keypoints(samples.annotation_file, preds, image_ids=sorted(set(ids)), per_image=per_image)
            results.append({"stats": stats, "predictions": preds, "per_image": per_image})
        return results


class LinearPose(DenseHeadTask):
    """Linear top-down pose (1x1 conv on frozen block maps, heatmaps): COCO keypoint AP, AP50, AP75, AR, AR50."""

    headline = METRICS
    seeded = True
    samples_type, kind, item = KeypointSamples, "keypoint", "crop"
    options = {
        **dense_options("crop", lr=5e-4, batch_size=512, weight_decay=0.1, warmup=500, test_split="test", notes={
            "blocks": "[11]: last block only, a quarter of the cache",
            "test_split": "its annotation file is the ground truth"}),
        "input_size": Option(list, [256, 192], "crop [H, W] (multiples of the patch size)"),
        "padding": Option(float, 1.25, "box padding factor"),
        "sigma": Option(float, 2.0, "Gaussian target sigma in heatmap pixels"),
        "udp": Option(bool, True, "unbiased data processing (ViTPose's COCO configs); false: classic crops, "
                      "quarter-pixel refinement and the one-pixel flip shift"),
        "flip_test": Option(bool, True, "average the heatmaps of each test crop and of its mirror image"),
        "epochs": Option(int, 210, "training epochs over the training persons", check=lambda v: None if v > 0 else "must be > 0"),
        "steps": Option(list, [170, 200], "epochs at which the lr drops x0.1"),
    }

    @property
    def codec(self) -> PoseCodec:
        o = self.opts
        return PoseCodec(input_size=tuple(o["input_size"]), heatmap_size=(o["input_size"][0] // 4,
                         o["input_size"][1] // 4), padding=o["padding"], sigma=o["sigma"], udp=o["udp"])

    @property
    def test_flip(self) -> bool:  # type: ignore[override]
        return self.opts["flip_test"]

    def check(self, encoder, dataset) -> None:
        super().check(encoder, dataset)
        p = encoder.patch_size
        h, w = self.opts["input_size"]
        if h % 4 or w % 4 or h % p or w % p:
            raise ValueError(f"input_size {h}x{w} must be a multiple of 4 and of the patch size {p}")

    # -- hooks of DenseHeadTask ----------------------------------------------------------------------
    def make_view(self, samples, split, flip):
        return crop_view(samples, self.codec, flip, split)

    def input_size(self, samples):
        return tuple(self.opts["input_size"])

    def decoder(self, unit):
        return Heatmaps(self, unit)

    def training(self, unit) -> Training:
        """Epochs over the training crops in a random order (full batches); AdamW; linear warmup and x0.1 at
        the ``steps`` epochs (an iteration's epoch is fractional: epoch + batch / batches per epoch)."""
        o, n = self.opts, len(unit.views["train"])
        bs = min(o["batch_size"], n)
        per_epoch = max(1, n // bs)
        rng = np.random.default_rng([unit.ctx.seed, 0x905E])
        orders = (rng.permutation(n)[: per_epoch * bs] for _ in range(o["epochs"]))
        return Training(o["epochs"] * per_epoch, bs, orders, adamw(o["weight_decay"]), lambda base, it: step_lr(
            base, it // per_epoch + it % per_epoch / per_epoch, it, o["steps"], o["warmup"], 0.001))

    def report(self, unit, decoder, bank, results, curve) -> dict:
        o, lrs = self.opts, self.lr_list()
        train_s, test_s = unit.samples["train"], unit.samples["test"]
        preds_paths = []
        for j, (lr, r) in enumerate(zip(lrs, results)):
            path = unit.ctx.out_dir / (f"predictions_lr{lr:g}.json" if j else "predictions.json")
            path.write_text(json.dumps(r["predictions"]))
            preds_paths.append(str(path))
        curve_path = self.write_curve(unit, curve)
        heads_path = self.save_heads(unit, bank, blocks=o["blocks"], codec=decoder.codec.describe())
        stats = [r["stats"] for r in results]
        metrics = {m: _pct(stats[0][m]) for m in METRICS}
        for lr, s in zip(lrs[1:], stats[1:]):
            metrics[f"AP@lr={lr:g}"] = _pct(s["AP"])
        details = {"stats": {n: _pct(stats[0][n]) for n in STAT_NAMES},
                   "per_lr": {f"{lr:g}": {n: _pct(s[n]) for n in STAT_NAMES} for lr, s in zip(lrs, stats)},
                   "persons": {"train": len(train_s), "test": len(test_s)},
                   "dataset_summary": {"train": train_s.summary, "test": test_s.summary},
                   "codec": decoder.codec.describe(), "blocks": o["blocks"], "flip_test": o["flip_test"],
                   "epochs": o["epochs"], "iterations": unit.steps, "batch_size": unit.batch_size, "lrs": lrs,
                   "weight_decay": o["weight_decay"], "mode": unit.mode,
                   "cache_gb": None if unit.cache_gb is None else round(unit.cache_gb, 3),
                   "annotation_file": test_s.annotation_file, "final_loss": curve[-1][1:] if curve else None,
                   "seconds": round(time.perf_counter() - unit.t0, 3)}
        return {"metrics": metrics, "details": details, "artifacts": preds_paths + [curve_path, heads_path],
                "per_item": results[0]["per_image"]}

    def resample(self, per_item, counts):
        """COCO keypoint AP, AP50, AP75, AR, AR50 on resampled test images (``pose_eval.resampled_stats``)."""
        stats = resampled_stats(per_item, counts)
        return {m: elementwise(_pct, stats[m]) for m in METRICS}


def _pct(v) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 2)


@hookimpl
def register_tasks(register):
    register("linear_pose", LinearPose)
