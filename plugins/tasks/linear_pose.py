"""linear_pose: a linear top-down pose probe on a frozen encoder (paper Table 10; protocol in docs/pose.md).

The paper trains "one linear layer over the features extracted by the frozen backbones to predict human
keypoints" and reports COCO keypoint AP/AR; it publishes no code, so every choice below is ours, after
ViTPose's simple-head recipe (the closest published linear-ish head on a frozen ViT):

- one person box per sample (ground truth by default, or a detections file: the dataset's option), box ->
  centre/size at aspect 3:4 with padding 1.25 -> an affine crop of 256x192 (``pose_codec``, UDP);
- the encoder runs once per crop (and once per mirrored test crop for the flip test): the raw outputs of
  ``blocks`` (default 3, 5, 7, 11, as the segmentation head) are cached in fp16 as 16x12 maps;
- the head is one 1x1 convolution from the concatenated maps to K heatmaps, upsampled x4 bilinearly to
  64x48 (the conv commutes with the upsampling: it is linear), trained with visibility-weighted MSE on
  Gaussian (sigma 2) targets, AdamW with step decay (ViTPose: lr 5e-4, wd 0.1, x0.1 at 170 and 200 of 210
  epochs, linear warmup); several learning rates train in lockstep on the same feature reads;
- test: heatmaps of the crop and of its mirror (flipped back, left/right channels swapped) averaged,
  decoded (argmax + DARK sub-pixel refinement under UDP), mapped back to image pixels; instance score =
  mean keypoint confidence above 0.2 x box score; scored by pycocotools ``COCOeval(iouType="keypoints")``
  against the split's annotation file.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from harness import HarnessError, Option, Task, hookimpl
from harness.api import FeatureRequest, KeypointSamples

from .dense import DenseMaps, DerivedSamples, HeadBank, learning_rates, tokens_to_maps
from .pose_codec import PoseCodec, instance_scores, joints_mse_loss
from .pose_eval import STAT_NAMES, evaluate_keypoints, keypoint_results

DEFAULT_BLOCKS = [3, 5, 7, 11]
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
    """1x1 conv to K heatmaps on the 1/16 maps, then bilinear x``upsample`` (ViTPose's simple head with
    no deconvolution, a linear map of the features)."""

    def __init__(self, channels: int, num_keypoints: int, upsample: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, num_keypoints, 1)
        self.upsample = upsample
        torch.nn.init.normal_(self.conv.weight, 0.0, 0.001)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=self.upsample, mode="bilinear", align_corners=False)


def step_lr(base: float, epoch_float: float, it: int, steps, warmup: int, warmup_ratio: float) -> float:
    """mmcv ``step`` policy (x0.1 at each epoch in ``steps``) with linear warmup over ``warmup`` iterations."""
    lr = base * (0.1 ** sum(epoch_float >= s for s in steps))
    if it < warmup:
        lr *= warmup_ratio + (1 - warmup_ratio) * it / warmup
    return lr


class LinearPose(Task):
    """Linear top-down pose (1x1 conv on frozen block maps, heatmaps): COCO keypoint AP, AP50, AP75, AR, AR50."""

    headline = METRICS
    options = {
        "blocks": Option(list, list(DEFAULT_BLOCKS), "blocks whose raw outputs are concatenated ([11]: last block "
                         "only, a quarter of the cache)", check=lambda v: None if v and all(
                             isinstance(b, int) and b >= 0 for b in v) else "expected a non-empty list of block indices"),
        "input_size": Option(list, [256, 192], "crop [H, W] (multiples of the patch size)"),
        "padding": Option(float, 1.25, "box padding factor"),
        "sigma": Option(float, 2.0, "Gaussian target sigma in heatmap pixels"),
        "udp": Option(bool, True, "unbiased data processing (ViTPose's COCO configs); false: classic crops, "
                      "quarter-pixel refinement and the one-pixel flip shift"),
        "flip_test": Option(bool, True, "average the heatmaps of each test crop and of its mirror image"),
        "epochs": Option(int, 210, "training epochs over the training persons", check=lambda v: None if v > 0 else "must be > 0"),
        "steps": Option(list, [170, 200], "epochs at which the lr drops x0.1"),
        "batch_size": Option(int, 512, "persons per step", check=lambda v: None if v > 0 else "must be > 0"),
        "lr": Option(float, 5e-4, "AdamW learning rate"),
        "lrs": Option(list, None, "further learning rates trained in lockstep", nullable=True),
        "weight_decay": Option(float, 0.1, "AdamW weight decay"),
        "warmup": Option(int, 500, "linear warmup iterations"),
        "mode": Option(str, "auto", "cache the crop features (cache), re-encode every epoch (stream), or cache "
                       "up to max_cache_gb (auto)", choices=["auto", "cache", "stream"]),
        "max_cache_gb": Option(float, 64.0, "mode auto: the largest crop cache to build"),
        "train_split": Option(str, "train", "split to train on"),
        "test_split": Option(str, "test", "split to evaluate on (its annotation file is the ground truth)"),
    }

    # -- helpers --------------------------------------------------------------------------------------
    @property
    def codec(self) -> PoseCodec:
        o = self.opts
        return PoseCodec(input_size=tuple(o["input_size"]), heatmap_size=(o["input_size"][0] // 4,
                         o["input_size"][1] // 4), padding=o["padding"], sigma=o["sigma"], udp=o["udp"])

    def _reps(self) -> list[str]:
        return [f"block.{b}" for b in self.opts["blocks"]]

    def lr_list(self) -> list[float]:
        return learning_rates(self.opts["lr"], self.opts["lrs"])

    def check(self, encoder, dataset) -> None:
        for r in self._reps():
            if not encoder.supports(r):
                raise ValueError(f"encoder '{encoder.name}' has no '{r}' representation"
                                 f"{f' ({encoder.num_blocks} blocks)' if encoder.num_blocks else ''}; set the "
                                 "task option 'blocks'")
        p = encoder.patch_size
        if not p:
            raise ValueError(f"encoder '{encoder.name}' does not declare its patch size (dense maps need it)")
        h, w = self.opts["input_size"]
        if h % 4 or w % 4 or h % p or w % p:
            raise ValueError(f"input_size {h}x{w} must be a multiple of 4 and of the patch size {p}")
        for key in ("train_split", "test_split"):
            if self.opts[key] not in dataset.splits:
                raise ValueError(f"dataset '{dataset.name}' has no split '{self.opts[key]}' "
                                 f"(it has: {', '.join(dataset.splits)}); set the task option {key}")

    def _cache_gb(self, encoder, n_crops: int) -> float:
        h, w = self.opts["input_size"]
        p = int(encoder.patch_size)
        tokens = int(encoder.prefix_tokens) + (h // p) * (w // p)
        return n_crops * tokens * len(self.opts["blocks"]) * int(encoder.embed_dim or 0) * 2 / 1e9

    def requests(self, encoder, dataset) -> list[FeatureRequest]:
        o = self.opts
        if o["mode"] == "stream":
            return []
        counts: dict[str, int] = {}
        h, w = o["input_size"]

        def view(split, flip, last):
            def make(samples):
                v = crop_view(self._samples(samples, split), self.codec, flip, split)
                counts[split] = len(v)
                if last and o["mode"] == "auto":  # refuse before anything is extracted
                    self._refuse_if_too_big(encoder, sum(counts.values()))
                return v
            return make

        splits = [(o["train_split"], False), (o["test_split"], o["flip_test"])]
        return [FeatureRequest(s, tuple(self._reps()), f"pad:{h}:{w}", view(s, f, k == 1))
                for k, (s, f) in enumerate(splits)]

    def _refuse_if_too_big(self, encoder, n_crops: int) -> float:
        need = self._cache_gb(encoder, n_crops)
        if self.opts["mode"] == "auto" and need > self.opts["max_cache_gb"]:
            raise HarnessError(f"{self.name}: the crop cache of encoder '{encoder.name}' would take {need:.1f} GB "
                               f"(> max_cache_gb {self.opts['max_cache_gb']:g}); set mode: stream (re-encodes "
                               "every epoch), blocks: [11] (a quarter) or raise max_cache_gb")
        return need

    def _samples(self, samples, split) -> KeypointSamples:
        if not isinstance(samples, KeypointSamples):
            raise HarnessError(f"{self.name}: split '{split}' is not a keypoint dataset (its load() returned "
                               f"{type(samples).__name__}, not KeypointSamples)")
        return samples

    # -- run ------------------------------------------------------------------------------------------
    def run(self, ctx) -> dict:
        o, enc, codec = self.opts, ctx.encoder, self.codec
        t0 = time.perf_counter()
        reps = self._reps()
        h, w = o["input_size"]
        p = int(enc.patch_size)
        grid, prefix, transform = (h // p, w // p), int(enc.prefix_tokens), f"pad:{h}:{w}"
        train_s = self._samples(ctx.samples(o["train_split"]), o["train_split"])
        test_s = self._samples(ctx.samples(o["test_split"]), o["test_split"])
        if not test_s.annotation_file:
            raise HarnessError(f"{self.name}: split '{o['test_split']}' names no annotation_file to score against")
        train_v = crop_view(train_s, codec, False, o["train_split"])
        test_v = crop_view(test_s, codec, o["flip_test"], o["test_split"])
        need = self._refuse_if_too_big(enc, len(train_v) + len(test_v))
        mode = "stream" if o["mode"] == "stream" else "cache"
        ctx.log(f"    {self.name}: {len(train_v)} training and {len(test_v)} test crops of {h}x{w}; crop cache "
                f"{need:.2f} GB; mode {mode}")
        device = torch.device(ctx.device)
        targets_of = self._targets(train_s, codec)
        test_maps = DenseMaps(ctx.features(test_v, reps, transform), reps, grid, prefix, device)
        train_maps = DenseMaps(ctx.features(train_v, reps, transform), reps, grid, prefix, device) \
            if mode == "cache" else None
        K = len(test_s.keypoint_names)
        lrs = self.lr_list()
        bank = HeadBank(lambda: PoseHead(test_maps.channels, K), lrs, o["weight_decay"], seed=ctx.seed,
                        device=device)
        bs = min(o["batch_size"], len(train_v))
        per_epoch = max(1, len(train_v) // bs)
        total = o["epochs"] * per_epoch
        rng = np.random.default_rng([ctx.seed, 0x905E])

        def batches():
            for epoch in range(o["epochs"]):
                order = rng.permutation(len(train_v))[: per_epoch * bs].reshape(per_epoch, bs)
                src = (((idx, train_maps.batch(idx)) for idx in order) if train_maps is not None
                       else self._stream(ctx, train_v, reps, transform, grid, prefix, order, device))
                for k, (idx, x) in enumerate(src):
                    yield epoch + k / per_epoch, idx, x

        losses = []
        bar = ctx.progress(batches(), desc=f"{self.name} {enc.name} ({len(lrs)} lr)", total=total)
        for it, (epoch, idx, x) in enumerate(bar):
            target, weight = targets_of(idx, device)
            bank.set_lr(lambda base: step_lr(base, epoch, it, o["steps"], o["warmup"], 0.001))
            losses.append(bank.step(x, lambda head, x: joints_mse_loss(head(x), target, weight)))
        results, preds_paths = [], []
        for j, head in enumerate(bank.heads):
            preds = self._predict(head.eval(), test_s, test_maps, codec, o["flip_test"], bs)
            stats = evaluate_keypoints(test_s.annotation_file, preds,
                                       image_ids=sorted({test_s.image_id(i) for i in range(len(test_s))}))
            path = ctx.out_dir / (f"predictions_lr{lrs[j]:g}.json" if j else "predictions.json")
            path.write_text(json.dumps(preds))
            preds_paths.append(str(path))
            results.append(stats)
        curve = ctx.out_dir / "loss.csv"
        curve.write_text("iteration," + ",".join(f"loss@lr={lr:g}" for lr in lrs) + "\n" + "".join(
            f"{i}," + ",".join(f"{v:.6g}" for v in row) + "\n" for i, row in enumerate(losses)))
        heads = ctx.out_dir / "heads.pt"
        torch.save({"lrs": lrs, "heads": bank.state(), "blocks": o["blocks"], "codec": codec.describe()}, heads)
        metrics = {m: _pct(results[0][m]) for m in METRICS}
        for lr, r in zip(lrs[1:], results[1:]):
            metrics[f"AP@lr={lr:g}"] = _pct(r["AP"])
        details = {"stats": {n: _pct(results[0][n]) for n in STAT_NAMES},
                   "per_lr": {f"{lr:g}": {n: _pct(r[n]) for n in STAT_NAMES} for lr, r in zip(lrs, results)},
                   "persons": {"train": len(train_s), "test": len(test_s)},
                   "dataset_summary": {"train": train_s.summary, "test": test_s.summary},
                   "codec": codec.describe(), "blocks": o["blocks"], "flip_test": o["flip_test"],
                   "epochs": o["epochs"], "iterations": total, "batch_size": bs, "lrs": lrs,
                   "weight_decay": o["weight_decay"], "mode": mode, "cache_gb": round(need, 3),
                   "annotation_file": test_s.annotation_file, "final_loss": losses[-1] if losses else None,
                   "seconds": round(time.perf_counter() - t0, 3)}
        return {"metrics": metrics, "details": details, "artifacts": preds_paths + [str(curve), str(heads)]}

    @staticmethod
    def _targets(samples: KeypointSamples, codec: PoseCodec):
        """Heatmap targets of training crops, computed per batch from the crop-frame keypoints."""
        n = len(samples)
        crop_kps = np.zeros((n, len(samples.keypoint_names), 3))
        for i in range(n):
            c, s = codec.center_size(samples.box(i))
            crop_kps[i] = codec.to_crop(samples.keypoints(i), c, s)

        def of(idx, device):
            return codec.encode(crop_kps[np.asarray(idx)], device=device)
        return of

    @staticmethod
    def _stream(ctx, view, reps, transform, grid, prefix, order, device):
        """Re-encode the crops of one epoch (mode stream), batch by batch in ``order``."""
        flat = order.reshape(-1)
        bs = order.shape[1]
        buf_i, buf_x = [], []
        for idx, out in ctx.stream(view, reps, transform, flat):
            buf_i.append(np.asarray(idx))
            buf_x.append(tokens_to_maps(out, reps, grid, prefix).to(device))
            while sum(len(b) for b in buf_i) >= bs:
                i_all, x_all = np.concatenate(buf_i), torch.cat(buf_x)
                yield i_all[:bs], x_all[:bs]
                buf_i, buf_x = [i_all[bs:]], [x_all[bs:]]

    @staticmethod
    def _predict(head, samples: KeypointSamples, maps: DenseMaps, codec: PoseCodec, flip: bool, bs: int):
        n = len(samples)
        step = 2 if flip else 1
        heatmaps = []
        with torch.no_grad():
            for a in range(0, n, bs):
                rows = np.arange(a, min(n, a + bs))
                hm = head(maps.batch(rows * step)).float()
                if flip:
                    hm = codec.fuse_flip(hm, head(maps.batch(rows * step + 1)).float(), samples.flip_pairs)
                heatmaps.append(hm.cpu())
        hm = torch.cat(heatmaps)
        geo = np.stack([codec.geometry(samples.box(i)) for i in range(n)])
        xy, maxvals = codec.decode(hm, geo[:, :2], geo[:, 2:4])
        scores = instance_scores(maxvals, [samples.score(i) for i in range(n)])
        return keypoint_results([samples.image_id(i) for i in range(n)], xy, maxvals, scores)


def _pct(v) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 2)


@hookimpl
def register_tasks(register):
    register("linear_pose", LinearPose)
