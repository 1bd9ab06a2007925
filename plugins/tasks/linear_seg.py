"""linear_seg: linear semantic segmentation on a frozen encoder, object- and part-level (paper Tables 3, 5,
7, 8, 9 and Fig. 7). Two protocols (docs/segmentation.md):

``protocol: paper`` - the official recipe on mmsegmentation/mmengine (``seg_mmseg.py``): 160k iterations of
  batch 16 with the official augmentation, re-encoding every crop, slide inference, ``IoUMetric``.

``protocol: fast`` - encodes each image once. Every training and validation image is resized as at test
  time (mmcv ``imrescale`` to the dataset's scale, bilinear; labels nearest), padded to the crop if
  smaller, and cut into the test-time slide windows; the raw block outputs of every window (and, with
  ``flip``, of its mirror image) are cached in fp16 through the feature cache. The same head (one 1x1 conv
  on the K concatenated block maps, N(0, 0.01) init) is trained on the cache with the same optimiser
  (AdamW), schedule (linear warmup x poly) and number of samples (iterations x batch), several learning
  rates in one pass (``lrs``: Table 9 costs one feature read per step); each sample is one random window of
  a training image (a random flip with ``flip``), the loss is mmseg's (bilinear to the crop, cross-entropy,
  ignore 255, mean over all pixels). The auxiliary head is dropped: with a frozen backbone its gradient
  never reaches the main head (tested). Evaluation is mmseg's slide inference on the cached validation
  windows (logits summed over windows, divided by the count, padding removed, bilinear to the original
  size, argmax) scored by mmseg's ``IoUMetric``. With ``mode: stream`` only the validation windows are
  cached: every epoch re-encodes one random window per training image (K heads per pass), for datasets
  whose cache would not fit; ``mode: auto`` caches up to ``max_cache_gb`` and refuses beyond it, saying which
  mode to use. The fast protocol runs on ``dense_task.DenseHeadTask`` (views, maps, the training loop); this
  file holds its segmentation parts: the window geometry, the head and loss, and ``LabelMaps`` (targets
  and scoring).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.api import HarnessError, Option, hookimpl
from harness.api import SegSamples

from .dense import DerivedSamples
from .dense_task import Decoder, DenseHeadTask, Training, dense_options
from .head_bank import adamw


# --------------------------------------------------------------------------------------------------
# geometry (mmcv 1.x / mmseg conventions)
# --------------------------------------------------------------------------------------------------
def rescale_size(w: int, h: int, scale) -> tuple[int, int]:
    """mmcv ``rescale_size`` with a (long, short) scale: the largest keep-ratio size within both edges."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def resize_image(img: Image.Image, scale) -> Image.Image:
    """mmcv ``imrescale(img, scale, interpolation='bilinear', backend='cv2')``."""
    import cv2

    w, h = rescale_size(*img.size, scale)
    if (w, h) == img.size:
        return img
    return Image.fromarray(cv2.resize(np.asarray(img), (w, h), interpolation=cv2.INTER_LINEAR))


def resize_label(label: np.ndarray, scale) -> np.ndarray:
    """mmcv ``imrescale(gt_seg_map, scale, interpolation='nearest', backend='cv2')``."""
    import cv2

    h, w = label.shape
    nw, nh = rescale_size(w, h, scale)
    if (nw, nh) == (w, h):
        return label
    return cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)


def slide_windows(h: int, w: int, crop, stride) -> list[tuple[int, int, int, int]]:
    """mmseg ``slide_inference`` windows (y1, x1, y2, x2) over an h x w image (already padded to >= crop)."""
    (ch, cw), (sh, sw) = crop, stride
    out = []
    for hi in range(max(h - ch + sh - 1, 0) // sh + 1):
        for wi in range(max(w - cw + sw - 1, 0) // sw + 1):
            y1, x1 = hi * sh, wi * sw
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            out.append((max(y2 - ch, 0), max(x2 - cw, 0), y2, x2))
    return out


class _Geometry:
    """Per image of a split: its original size, resized size and slide windows."""

    def __init__(self, samples: SegSamples, scale, crop, stride):
        self.scale, self.crop, self.stride = tuple(scale), tuple(crop), tuple(stride)
        self.orig, self.resized, self.windows = [], [], []
        for i in range(len(samples)):
            with Image.open(samples.image_paths[i]) as im:
                w, h = im.size
            rw, rh = rescale_size(w, h, self.scale)
            self.orig.append((h, w))
            self.resized.append((rh, rw))
            # an image smaller than the crop is padded (bottom/right) to the crop: full windows
            self.windows.append(slide_windows(max(rh, self.crop[0]), max(rw, self.crop[1]), self.crop, self.stride))


def window_view(samples: SegSamples, geo: _Geometry, flip: bool, name: str) -> "WindowView":
    """Every slide window of every image (and its mirror image with ``flip``), as items of a view."""
    source, boxes, flips = [], [], []
    for i, wins in enumerate(geo.windows):
        for box in wins:
            for f in ((False, True) if flip else (False,)):
                source.append(i)
                boxes.append(box)
                flips.append(f)

    def prepare(i: int, img: Image.Image) -> Image.Image:
        return resize_image(img, geo.scale)

    def render(img: Image.Image, box: np.ndarray) -> Image.Image:
        y1, x1, y2, x2 = (int(v) for v in box)
        # windows may reach into the pad of an image smaller than the crop: cut what exists, the
        # transform pads the rest with normalised zeros
        return img.crop((x1, y1, min(x2, img.width), min(y2, img.height)))

    geometry = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tag = f"{name}/slide:{geo.scale[0]}x{geo.scale[1]}:{geo.crop[0]}x{geo.crop[1]}:{geo.stride[0]}x{geo.stride[1]}"
    return WindowView(geo, samples, source, geometry, flips, render, tag + (":flip" if flip else ""), prepare)


class WindowView(DerivedSamples):
    """The slide windows of a split's images (``window_view``); ``geo`` is the split's geometry."""

    def __init__(self, geo: _Geometry, *args, **kw):
        super().__init__(*args, **kw)
        self.geo = geo


def windows_by_image(view: DerivedSamples) -> list[np.ndarray]:
    """The view's item indices of every image (its windows and their mirror images), by image."""
    by_image: dict[int, list[int]] = {}
    for k, s in enumerate(view.source.tolist()):
        by_image.setdefault(s, []).append(k)
    return [np.asarray(v, dtype=np.int64) for _, v in sorted(by_image.items())]


def window_labels(samples: SegSamples, view: WindowView) -> torch.Tensor:
    """uint8 [N, crop_h, crop_w] labels of the view's windows (255 outside the image), flipped with
    the image."""
    geo = view.geo
    ch, cw = geo.crop
    out = torch.full((len(view), ch, cw), 255, dtype=torch.uint8)
    resized = {}
    for k in range(len(view)):
        i = int(view.source[k])
        if i not in resized:
            resized = {i: resize_label(samples.mask(i), geo.scale)}
        lab = resized[i]
        y1, x1, y2, x2 = (int(v) for v in view.geometry[k])
        part = lab[y1:min(y2, lab.shape[0]), x1:min(x2, lab.shape[1])]
        win = np.full((ch, cw), 255, dtype=np.uint8)
        win[:part.shape[0], :part.shape[1]] = part
        if view.flip[k]:
            win = win[:, ::-1]
        out[k] = torch.from_numpy(np.ascontiguousarray(win))
    return out


# --------------------------------------------------------------------------------------------------
# the head
# --------------------------------------------------------------------------------------------------
class LinearSegHead(torch.nn.Module):
    """mmseg ``FCNHead(num_convs=0, concat_input=False)``'s ``conv_seg``: a 1x1 conv, N(0, 0.01), bias 0."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv_seg = torch.nn.Conv2d(channels, num_classes, 1)
        torch.nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        torch.nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x):
        return self.conv_seg(x)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mmseg's decode-head loss: logits resized bilinearly to the labels, cross-entropy with ignore 255,
    averaged over all pixels (``avg_non_ignore=False``: ignored pixels count as 0)."""
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, labels.long(), ignore_index=255, reduction="none").mean()


def warmup_poly_lr(base: float, it: int, total: int, warmup: int, warmup_ratio: float, power: float = 1.0,
                   min_lr: float = 0.0) -> float:
    """mmcv 1.x ``poly`` with linear warmup (the paper's segmentation schedule), at iteration ``it``
    (0-based, set before the step): poly(it) * (ratio + (1 - ratio) * it / warmup) during the warmup."""
    lr = (base - min_lr) * (1.0 - it / total) ** power + min_lr
    if it < warmup:
        lr *= 1.0 - (1.0 - it / warmup) * (1.0 - warmup_ratio)
    return lr


# --------------------------------------------------------------------------------------------------
# the decoder of the fast protocol: window label maps, mmseg's loss, slide inference + IoUMetric
# --------------------------------------------------------------------------------------------------
class LabelMaps(Decoder):
    """Segmentation's part of a dense head task: the label map of every training window (the targets),
    mmseg's decode-head loss, and mmseg's slide inference on the test windows scored by ``IoUMetric``."""

    def __init__(self, task, unit):
        super().__init__(task, unit)
        train, test = unit.samples["train"], unit.samples["test"]
        if list(test.classes) != list(train.classes):
            raise HarnessError(f"{task.name}: splits '{task.opts['train_split']}' and '{task.opts['test_split']}' "
                               "have different classes")
        self.classes = list(train.classes)
        self.labels = window_labels(train, unit.views["train"])  # at the crop size, 255 outside the image

    def head(self, channels: int) -> torch.nn.Module:
        return LinearSegHead(channels, len(self.classes))

    def targets(self, idx, device):
        return self.labels[torch.from_numpy(idx)].to(device)

    def loss(self, out, target):
        return seg_loss(out, target)

    @torch.no_grad()
    def evaluate(self, bank) -> list[dict]:
        """mmseg's slide inference per image (logits of its windows resized to the crop, summed where they
        overlap and divided by the count, padding removed, bilinear to the label size, argmax) and the
        summed ``IoUMetric`` areas, for every head."""
        from mmseg.evaluation import IoUMetric

        unit, C = self.unit, len(self.classes)
        samples, view = unit.samples["test"], unit.views["test"]
        geo, device, maps = view.geo, unit.device, unit.maps("test")
        areas = [[torch.zeros(C, dtype=torch.float64) for _ in range(4)] for _ in bank.heads]
        per_image = [np.zeros((4, len(samples), C), np.int64) for _ in bank.heads]  # every image's four areas
        windows_of = windows_by_image(view)
        ch, cw = geo.crop
        for i in unit.ctx.progress(range(len(samples)), desc=f"{self.task.name} eval", total=len(samples)):
            rh, rw = geo.resized[i]
            H, W = max(rh, ch), max(rw, cw)
            label = torch.from_numpy(samples.mask(i).astype(np.int64))
            ks = windows_of[i]
            for j, out in enumerate(bank.outputs(maps.batch(ks))):
                logits = F.interpolate(out, size=(ch, cw), mode="bilinear", align_corners=False)
                preds = torch.zeros((C, H, W), device=device)
                count = torch.zeros((1, H, W), device=device)
                for k, l in zip(ks, logits):
                    y1, x1, y2, x2 = (int(v) for v in view.geometry[k])
                    preds[:, y1:y2, x1:x2] += l
                    count[:, y1:y2, x1:x2] += 1
                seg = (preds / count)[:, :rh, :rw]  # padding removed (mmseg postprocess)
                seg = F.interpolate(seg[None], size=label.shape, mode="bilinear", align_corners=False)[0]
                pred = seg.argmax(dim=0).cpu()
                res = IoUMetric.intersect_and_union(pred, label, C, 255)
                for a, r in zip(areas[j], res):
                    a += r.double()
                per_image[j][:, i] = torch.stack(res).long().numpy()
        return [{**scores_from_areas(a, list(samples.classes)), "per_image": p} for a, p in zip(areas, per_image)]


# --------------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------------
def _pair(v):
    return None if v is None else [int(v[0]), int(v[1])] if isinstance(v, (list, tuple)) else [int(v), int(v)]


def _check_pair(v):
    if v is None:
        return None
    if isinstance(v, int) and v > 0:
        return None
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v):
        return None
    return "expected a positive integer or a [h, w] / [long, short] pair"


class LinearSeg(DenseHeadTask):
    """Linear semantic segmentation (1x1 conv on frozen block maps): mIoU, mAcc, aAcc."""

    seeded = True

    headline = ("mIoU", "mAcc", "aAcc")
    samples_type, kind, item = SegSamples, "segmentation", "window"
    options = {
        "protocol": Option(str, "fast", "fast: encode each image once, train on the cache; paper: the official "
                           "mmseg recipe, re-encoding every augmented crop", choices=["fast", "paper"]),
        **dense_options("window", lr=4e-4, batch_size=16, weight_decay=0.05, warmup=1500, test_split="val", notes={
            "blocks": "official: [3, 5, 7, 11]", "batch_size": "official: 16", "lr": "official: 4e-4",
            "weight_decay": "official: 0.05", "warmup": "official: 1500", "mode": "protocol fast",
            "lrs": "Table 9; protocol paper runs mmengine once per rate"}),
        "iterations": Option(int, 160000, "training iterations (official: 160k)", check=lambda v: None if v > 0 else "must be > 0"),
        "bias_decay": Option(bool, True, "weight decay on the head's bias too (mmengine's AdamW default; the "
                             "MAE/BEiT/CAE configs' layer-decay constructor exempts 1-D parameters)"),
        "warmup_ratio": Option(float, 1e-6, "warmup start factor (official: 1e-6)"),
        "scale": Option(list, None, "test-time resize (long, short), keep ratio; default: the dataset's",
                        nullable=True, check=_check_pair),
        "crop": Option(list, None, "slide window / training crop [h, w]; default: the dataset's",
                       nullable=True, check=_check_pair),
        "stride": Option(list, None, "slide stride [h, w]; default: the dataset's", nullable=True, check=_check_pair),
        "flip": Option(bool, False, "fast: also cache the mirror image of every training window and draw a "
                       "random flip per sample (closer to the paper's RandomFlip 0.5; doubles the training "
                       "encodes and cache)"),
        "workers": Option(int, 2, "paper: mmseg data-loader workers per process"),
        "isolation": Option(str, "subprocess", "paper: run mmengine in a worker process (isolates mmseg's global "
                            "state and logging) or in this process (starts faster)",
                            choices=["subprocess", "inprocess"]),
        "auxiliary": Option(bool, True, "paper: train the auxiliary FCN head on block index 2 (as the configs)"),
    }

    @property
    def train_flip(self) -> bool:  # type: ignore[override]
        return self.opts["flip"]

    def check(self, encoder, dataset) -> None:
        super().check(encoder, dataset)
        if self.opts["protocol"] == "paper" and not self.opts["blocks"]:
            raise ValueError("protocol 'paper' needs blocks (the mmseg backbone returns block maps)")

    def geometry(self, samples: SegSamples) -> tuple:
        d = samples.defaults or {}
        scale = _pair(self.opts["scale"]) or _pair(d.get("scale"))
        crop = _pair(self.opts["crop"]) or _pair(d.get("crop"))
        stride = _pair(self.opts["stride"]) or _pair(d.get("stride"))
        if not (scale and crop and stride):
            raise HarnessError(f"{self.name}: scale, crop and stride are neither options nor dataset defaults")
        return scale, crop, stride

    def requests(self, encoder, dataset):
        return [] if self.opts["protocol"] == "paper" else super().requests(encoder, dataset)

    def run(self, ctx) -> dict:
        return self._run_paper(ctx) if self.opts["protocol"] == "paper" else super().run(ctx)

    # -- the fast protocol: hooks of DenseHeadTask ------------------------------------------------------
    def make_view(self, samples, split, flip):
        return window_view(samples, _Geometry(samples, *self.geometry(samples)), flip, split)

    def input_size(self, samples):
        return self.geometry(samples)[1]  # windows are encoded at the crop size, padded where smaller

    def decoder(self, unit):
        return LabelMaps(self, unit)

    def training(self, unit) -> Training:
        o = self.opts
        iters, bs = o["iterations"], o["batch_size"]
        return Training(iters, bs, self._orders(unit, bs), adamw(o["weight_decay"], bias_decay=o["bias_decay"]),
                        lambda base, it: warmup_poly_lr(base, it, iters, o["warmup"], o["warmup_ratio"]))

    @staticmethod
    def _orders(unit, bs: int):
        """cache: batches of one random window (a flip variant included) of each of ``bs`` random training
        images; stream: epochs of one random window of every training image, in a random order."""
        windows_of = windows_by_image(unit.views["train"])
        rng = np.random.default_rng([unit.ctx.seed, 0x5E6])
        while True:
            if unit.mode == "stream":
                yield np.asarray([rng.choice(windows_of[i]) for i in rng.permutation(len(windows_of))], np.int64)
            else:
                yield np.asarray([rng.choice(windows_of[i]) for i in rng.integers(0, len(windows_of), bs)], np.int64)

    def curve_label(self, step, steps):
        return step + 1 if step % max(1, steps // 100) == 0 or step == steps - 1 else None

    def report(self, unit, decoder, bank, results, curve) -> dict:
        o, lrs = self.opts, self.lr_list()
        main = results[0]
        metrics = {k: main[k] for k in ("mIoU", "mAcc", "aAcc")}
        for lr, r in zip(lrs[1:], results[1:]):
            metrics[f"mIoU@lr={lr:g}"] = r["mIoU"]
        heads_path = self.save_heads(unit, bank, classes=decoder.classes, blocks=o["blocks"], grid=unit.grid,
                                     channels=unit.channels)
        curve_path = self.write_curve(unit, curve)
        geo = unit.views["train"].geo
        details = {
            "protocol": "fast", "mode": unit.mode,
            "window_cache_gb": None if unit.cache_gb is None else round(unit.cache_gb, 3),
            "per_lr": {f"{lr:g}": {k: r[k] for k in ("mIoU", "mAcc", "aAcc")} for lr, r in zip(lrs, results)},
            "per_class": main["per_class"], "classes": decoder.classes,
            "iterations": unit.steps, "batch_size": unit.batch_size, "samples": unit.steps * unit.batch_size,
            "lr": lrs[0], "lrs": lrs,
            "optimizer": {"type": "AdamW", "betas": [0.9, 0.999], "weight_decay": o["weight_decay"],
                          "bias_decay": o["bias_decay"]},
            "schedule": {"warmup": o["warmup"], "warmup_ratio": o["warmup_ratio"], "poly_power": 1.0,
                         "form": "poly(it) x linear warmup factor, from iteration 0 (mmcv 1.x)"},
            "geometry": {"scale": list(geo.scale), "crop": list(geo.crop), "stride": list(geo.stride),
                         "train_windows": len(unit.views["train"]), "test_windows": len(unit.views["test"]),
                         "flip": o["flip"], "grid": list(unit.grid)},
            "features": {"representations": unit.reps, "channels": unit.channels, "dtype": "float16"},
            "head": "1x1 conv (mmseg FCNHead num_convs=0 conv_seg), N(0, 0.01), bias 0; no auxiliary head",
            "n": {"train_images": len(unit.samples["train"]), "test_images": len(unit.samples["test"])},
            "seconds": {"total": round(time.perf_counter() - unit.t0, 3), "train": round(unit.train_seconds, 3)},
        }
        return {"metrics": metrics, "details": details, "artifacts": [heads_path, curve_path],
                "per_item": area_arrays(unit.samples["test"].keys, main["per_image"])}

    def resample(self, per_item, counts):
        """mIoU, mAcc, aAcc of the resampled test images: their intersection, union, prediction and label
        areas summed per class (as IoUMetric sums them over the images), then IoUMetric's formulas and
        rounding (the paper protocol's two decimals)."""
        return resampled_scores(per_item, counts, decimals=2 if self.opts["protocol"] == "paper" else 4)

    # -- paper ----------------------------------------------------------------------------------------
    def _run_paper(self, ctx) -> dict:
        from . import seg_mmseg

        o, enc = self.opts, ctx.encoder
        train_s = ctx.samples(o["train_split"])
        test_s = ctx.samples(o["test_split"])
        for s, split in ((train_s, o["train_split"]), (test_s, o["test_split"])):
            if not isinstance(s, SegSamples) or not s.layout:
                raise HarnessError(f"{self.name}: protocol 'paper' reads the files with mmseg: dataset "
                                   f"'{ctx.dataset.name}' split '{split}' must give SegSamples with a layout")
        scale, crop, stride = self.geometry(train_s)
        layout = dict(train_s.layout)
        for key, s in (("train", train_s), ("val", test_s)):  # absolute: the splits' roots may differ
            layout[key] = {k: os.path.join(s.layout["data_root"], s.layout[k]) for k in ("img_path", "seg_map_path")}
        lrs = self.lr_list()
        runs, t0 = [], time.perf_counter()
        for lr in lrs:  # the paper trains one model per learning rate (Table 9): one mmengine run each
            work = ctx.out_dir / "mmseg" / (f"lr={lr:g}" if len(lrs) > 1 else "")
            cfg = seg_mmseg.build_config(
                encoder={"plugin": enc.plugin_name, "name": enc.name, "options": enc.opts,
                         "plugins_dirs": os.environ.get("HARNESS_PLUGINS_DIRS", "").split(os.pathsep) if
                         os.environ.get("HARNESS_PLUGINS_DIRS") else []},
                blocks=o["blocks"], embed_dim=int(enc.embed_dim), num_classes=len(train_s.classes),
                classes=train_s.classes, layout=layout, scale=scale, crop=crop, stride=stride,
                train_scale=(train_s.defaults or {}).get("train_scale"), mean=enc.opts["mean"],
                std=enc.opts["std"], lr=lr, weight_decay=o["weight_decay"], iters=o["iterations"],
                warmup=o["warmup"], warmup_ratio=o["warmup_ratio"], batch_size=o["batch_size"],
                world_size=ctx.world_size, workers=o["workers"], auxiliary=o["auxiliary"], work_dir=str(work),
                device=ctx.device, seed=ctx.seed)
            work.mkdir(parents=True, exist_ok=True)
            cfg_path, res_path = work / "config.py", work / "result.json"
            from mmengine.config import Config

            Config(cfg).dump(str(cfg_path))  # a .py config keeps tuples (mmseg's transforms insist on them)
            if o["isolation"] == "inprocess":  # under torchrun mmengine uses this process group
                res = seg_mmseg.run(cfg)
            else:
                self._worker(ctx, cfg_path, res_path)
                ctx.barrier()
                res = json.loads(res_path.read_text()) if ctx.is_main else {}
            worker_forwards = res.get("forwards", {})
            ctx.forwards += sum(worker_forwards.values())  # encoded in the worker (rank 0's share under torchrun)
            runs.append((lr, cfg_path, res))
        main_lr, main_cfg, main_res = runs[0]
        metrics = {k: round(v, 2) for k, v in main_res.get("metrics", {}).items()}
        for lr, _, res in runs[1:]:
            if "mIoU" in res.get("metrics", {}):
                metrics[f"mIoU@lr={lr:g}"] = round(res["metrics"]["mIoU"], 2)
        details = {"protocol": "paper", "per_class": main_res.get("per_class", {}),
                   "checkpoint": main_res.get("checkpoint"), "worker_forwards": main_res.get("forwards", {}),
                   "per_lr": {f"{lr:g}": {k: round(v, 2) for k, v in res.get("metrics", {}).items()}
                              for lr, _, res in runs},
                   "iterations": o["iterations"], "batch_size": o["batch_size"], "lr": main_lr, "lrs": lrs,
                   "geometry": {"scale": scale, "crop": crop, "stride": stride}, "world_size": ctx.world_size,
                   "config": str(main_cfg), "seconds": round(time.perf_counter() - t0, 3),
                   "note": "mmseg's IoUMetric rounds to 2 decimals"}
        artifacts = [str(c) for _, c, _ in runs] + [r["checkpoint"] for _, _, r in runs if r.get("checkpoint")]
        out = {"metrics": metrics, "details": details, "artifacts": artifacts}
        if main_res.get("per_image"):  # mmseg's per-image areas, in its dataset order (rank 0 has them)
            with np.load(main_res["per_image"]) as f:
                out["per_item"] = area_arrays(f["items"], f["areas"])
        return out

    @property
    def distributed(self) -> bool:  # type: ignore[override]
        """The paper protocol trains on every rank (mmengine's launcher); the fast one on rank 0."""
        return self.opts["protocol"] == "paper"

    def _worker(self, ctx, cfg_path: Path, res_path: Path) -> None:
        """Run the mmseg worker in a subprocess; under torchrun every rank starts one and the workers form
        their own process group (mmengine's ``pytorch`` launcher) on a port rank 0 chose."""
        # the worker gets this process's threads (the harness decided them, and waits meanwhile); without a
        # setting torch would size its pool from the host's cores and mmengine would force one thread
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                  "TORCHELASTIC_RUN_ID"):
            env.pop(k, None)
        if ctx.world_size > 1:
            port = ctx.gather(_free_port() if ctx.is_main else None)[0]
            env.update(RANK=str(ctx.rank), WORLD_SIZE=str(ctx.world_size), MASTER_PORT=str(port),
                       LOCAL_RANK=os.environ.get("LOCAL_RANK", str(ctx.rank)),
                       MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"))
        else:
            env.pop("MASTER_ADDR", None)
        cmd = [sys.executable, "-m", "partbench_plugins.tasks.seg_mmseg", str(cfg_path), str(res_path)]
        log = cfg_path.parent / "worker.log"
        with open(log, "w") as f:
            r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise HarnessError(f"{self.name}: mmseg worker failed (exit {r.returncode}): {tail[0][:300]} "
                               f"(full log: {log})")


def scores_from_areas(areas, classes: list[str]) -> dict:
    """aAcc, mIoU, mAcc (in %, classes absent from labels and predictions skipped as NaN) and per-class
    IoU/Acc from the summed (intersect, union, pred, label) areas, through mmseg's ``IoUMetric``."""
    from mmseg.evaluation import IoUMetric

    ret = IoUMetric.total_area_to_metrics(*areas, ["mIoU"])
    return {"aAcc": float(np.round(ret["aAcc"] * 100, 4)),
            "mIoU": float(np.round(np.nanmean(ret["IoU"]) * 100, 4)),
            "mAcc": float(np.round(np.nanmean(ret["Acc"]) * 100, 4)),
            "per_class": {n: {"IoU": _num(ret["IoU"][k] * 100), "Acc": _num(ret["Acc"][k] * 100)}
                          for k, n in enumerate(classes)}}


AREAS = ("intersect", "union", "pred", "label")


def area_arrays(keys, per_image) -> dict:
    """The per-item data of a segmentation result: the test images' keys and their per-class areas (pixel
    counts: intersection and union of prediction and label, prediction, label), int64 [images, classes]."""
    return {"items": np.asarray(keys, dtype=str), **{a: np.asarray(v, np.int64) for a, v in zip(AREAS, per_image)}}


def resampled_scores(per_item: dict, counts: np.ndarray, decimals: int) -> dict:
    """aAcc, mIoU, mAcc (percent) of each resample (counts [b, images]): the images' areas summed, then
    ``IoUMetric.total_area_to_metrics`` (IoU = intersect / union, Acc = intersect / label per class, classes
    without a label or prediction pixel NaN and left out of the means) rounded as the protocol rounds."""
    from .resampling import nanmean_rows, weighted_sums

    inter, union, label = (weighted_sums(counts, per_item[a]).astype(np.float64) for a in ("intersect", "union", "label"))
    with np.errstate(invalid="ignore", divide="ignore"):
        a_acc = inter.sum(1) / label.sum(1)
        iou, acc = inter / union, inter / label
    out = {"aAcc": np.round(a_acc * 100, decimals), "mIoU": np.round(nanmean_rows(iou) * 100, decimals),
           "mAcc": np.round(nanmean_rows(acc) * 100, decimals)}
    if decimals == 2:  # the paper protocol's metrics pass through Python's round(v, 2) once more
        from .resampling import elementwise

        out = {k: elementwise(lambda x: round(x, 2), v) for k, v in out.items()}
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


@hookimpl
def register_tasks(register):
    register("linear_seg", LinearSeg)
