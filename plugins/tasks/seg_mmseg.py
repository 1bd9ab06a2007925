"""linear_seg's ``protocol: paper`` on mmsegmentation 1.x / mmengine: the official recipe of the paper's
segmentation code (its mmseg 0.11 fork, ``configs_local/<model>/upernet/..._lp_freeze12.py``):

- backbone: the harness encoder, frozen, registered in mmseg as ``PartbenchFrozenEncoder``; it returns
  the raw outputs of blocks [3, 5, 7, 11] (patch tokens, no final norm) as [B, D, H/p, W/p] maps. The
  encoder's own code runs (through ``harness.execution.Executor``): no duplicate model code.
- decode head: ``FCNHead(num_convs=0, concat_input=False, input_transform='resize_concat',
  in_index=[0,1,2,3], channels=4*D, dropout_ratio=0)``: a single 1x1 conv on the concatenated maps, no BN,
  logits at 1/p resized bilinearly to the label (loss) or image (test) size.
- auxiliary head: ``FCNHead(in_index=2, channels=256, num_convs=1, dropout 0.1, loss_weight 0.4)`` (BN;
  SyncBN under torchrun), trained jointly, unused at test.
- AdamW lr 4e-4, betas (0.9, 0.999), weight decay 0.05; linear warmup (ratio 1e-6, 1500 iterations)
  multiplied with poly (power 1, min 0) from iteration 0 = mmcv 1.x's ``poly`` + ``warmup='linear'``;
  160k iterations, batch 16 (16/N per GPU under torchrun); bf16 autocast on CUDA (apex fp16 in the paper).
- pipeline: RandomResize(scale, ratio 0.5-2.0, keep ratio), RandomCrop(crop, cat_max_ratio 0.75),
  RandomFlip 0.5, PhotoMetricDistortion, pad to the crop (0 / 255); test: Resize(scale, keep ratio), slide
  inference with the dataset's crop and stride, ``IoUMetric`` (aAcc, mIoU, mAcc; per-class in details).

Every mmseg/mmengine object (the runner here; models, optimiser wrappers, schedulers, pipelines and metrics
in the tests) is built from its config through ``instantiate``, by mmseg's registries, as the Runner does.

It runs in a subprocess (``python -m partbench_plugins.tasks.seg_mmseg CONFIG.py``): mmseg needs the
``mmcv.ops`` stand-in and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for mmengine's own checkpoints, neither of
which belongs in the harness process. Under torchrun every harness rank starts one worker and the workers
form their own process group through mmengine's ``pytorch`` launcher.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

BACKBONE = "PartbenchFrozenEncoder"
METRIC = "PartbenchIoUMetric"
COUNT_HOOK = "PartbenchForwardCount"


def build_config(*, encoder: dict, blocks: Sequence[int], embed_dim: int, num_classes: int,
                 classes: Sequence[str], layout: dict, scale: Sequence[int], crop: Sequence[int],
                 stride: Sequence[int], train_scale: Sequence[int] | None = None, ratio_range=(0.5, 2.0),
                 cat_max_ratio: float = 0.75, mean: Sequence[float], std: Sequence[float], lr: float = 4e-4,
                 weight_decay: float = 0.05, iters: int = 160000, warmup: int = 1500,
                 warmup_ratio: float = 1e-6, batch_size: int = 16, world_size: int = 1, workers: int = 2,
                 auxiliary: bool = True, augment: bool = True, work_dir: str, device: str = "cpu",
                 seed: int = 0, val_interval: int | None = None, checkpoint_interval: int | None = None) -> dict:
    """An mmengine config (a plain dict) of the paper protocol. ``encoder`` is what the worker needs to
    rebuild the harness encoder: {"plugin", "name", "options", "plugins_dirs"}."""
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
    crop_hw = (int(crop[0]), int(crop[1]))
    train_scale = tuple(train_scale or scale)
    norm = dict(type="SyncBN" if world_size > 1 else "BN", requires_grad=True)
    d = int(embed_dim)
    cuda = device.startswith("cuda")
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[255.0 * m for m in mean],
                               std=[255.0 * s for s in std], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                               size=crop_hw, test_cfg=dict(size=crop_hw)),
        backbone=dict(type=BACKBONE, encoder=encoder, blocks=list(blocks)),
        decode_head=dict(type="FCNHead", in_channels=[d] * len(blocks), in_index=list(range(len(blocks))),
                         input_transform="resize_concat", channels=d * len(blocks), num_convs=0,
                         concat_input=False, dropout_ratio=0.0, num_classes=num_classes, norm_cfg=norm,
                         align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode="slide", crop_size=crop_hw, stride=(int(stride[0]), int(stride[1]))))
    if auxiliary:
        model["auxiliary_head"] = dict(
            type="FCNHead", in_channels=d, in_index=min(2, len(blocks) - 1), channels=256, num_convs=1,
            concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm, align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4))
    if augment:
        train_pipeline = [
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
            dict(type="RandomResize", scale=train_scale, ratio_range=tuple(ratio_range), keep_ratio=True),
            dict(type="RandomCrop", crop_size=crop_hw, cat_max_ratio=cat_max_ratio),
            dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]
    else:  # deterministic: the test-time resize and a centre-less top-left crop (for checks)
        train_pipeline = [
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
            dict(type="Resize", scale=tuple(scale), keep_ratio=True), dict(type="PackSegInputs")]
    test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=tuple(scale), keep_ratio=True),
                     dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    metainfo = dict(classes=tuple(classes))

    def dataset(split_prefix: dict, pipeline, test_mode: bool):
        return dict(type="BaseSegDataset", data_root=layout["data_root"], data_prefix=split_prefix,
                    img_suffix=layout.get("img_suffix", ".jpg"), seg_map_suffix=layout.get("seg_map_suffix", ".png"),
                    reduce_zero_label=layout.get("reduce_zero_label", True), metainfo=metainfo,
                    pipeline=pipeline, test_mode=test_mode)

    per_gpu = batch_size // world_size
    cfg = dict(
        default_scope="mmseg",
        model=model,
        work_dir=work_dir,
        randomness=dict(seed=seed, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl" if cuda else "gloo")),
        launcher="pytorch" if world_size > 1 else "none",
        train_dataloader=dict(batch_size=per_gpu, num_workers=workers, persistent_workers=workers > 0,
                              sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dataset(layout["train"], train_pipeline, False)),
        val_dataloader=dict(batch_size=1, num_workers=workers, persistent_workers=workers > 0,
                            sampler=dict(type="DefaultSampler", shuffle=False),
                            dataset=dataset(layout["val"], test_pipeline, True)),
        val_evaluator=dict(type=METRIC, iou_metrics=["mIoU"], output_dir=str(Path(work_dir) / "metrics")),
        optim_wrapper=dict(
            type="AmpOptimWrapper" if cuda else "OptimWrapper",
            optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay),
            **(dict(dtype="bfloat16") if cuda else {})),
        param_scheduler=[
            # concurrent mmengine schedulers multiply their factors; mmengine's schedules reach their end
            # value at step end-1, hence +1: lr(t) = base * (1 - t/iters) * (r + (1-r) * min(t, warmup)/warmup),
            # mmcv 1.x's poly + linear warmup (the paper's fork)
            dict(type="LinearLR", start_factor=warmup_ratio, by_epoch=False, begin=0, end=max(1, warmup) + 1),
            dict(type="PolyLR", eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=iters + 1)],
        # mmengine's loop validates at the end of training (and every val_interval iterations)
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=val_interval or iters),
        custom_hooks=[dict(type=COUNT_HOOK)],
        val_cfg=dict(type="ValLoop"),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=max(1, min(50, iters // 10)), log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=checkpoint_interval or iters,
                            max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        log_processor=dict(by_epoch=False),
        log_level="WARNING",
    )
    return cfg


# --------------------------------------------------------------------------------------------------
# inside mmseg (the worker process, or a test)
# --------------------------------------------------------------------------------------------------
_REGISTERED = False


def register() -> None:
    """Make mmseg importable here and register the frozen harness backbone and the IoU metric that keeps
    per-class values (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from harness.api import ensure_mmseg

    ensure_mmseg()
    import numpy as np
    import torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModule
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import HOOKS, METRICS, MODELS

    from harness.api import Encoder
    from harness.api import Executor

    class FrozenEncoder(BaseModule):
        """A harness encoder as an mmseg backbone: raw block outputs as [B, D, H/p, W/p] maps. The encoder
        is held outside the module tree, so its weights are neither trained nor saved in checkpoints."""

        def __init__(self, encoder, blocks: Sequence[int], init_cfg=None):
            super().__init__(init_cfg)
            self._encoder = [encoder if isinstance(encoder, Encoder) else build_encoder(encoder)]
            self.blocks = [int(b) for b in blocks]
            self._executor = None
            self.forwards = 0  # images encoded (training crops and validation windows)

        @property
        def encoder(self) -> Encoder:
            return self._encoder[0]

        def forward(self, x):
            enc = self.encoder
            if self._executor is None or self._executor.device != x.device:
                self._executor = Executor(enc, str(x.device))
            p, prefix = int(enc.patch_size), int(enc.prefix_tokens)
            h, w = x.shape[-2] // p, x.shape[-1] // p
            out = self._executor(x, [f"block.{i}" for i in self.blocks])
            self.forwards += int(x.shape[0])
            maps = []
            for i in self.blocks:
                t = out[f"block.{i}"][:, prefix:]
                # clone: inference-mode outputs cannot be saved for the heads' backward pass
                maps.append(t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w).clone())
            return tuple(maps)

    class KeepPerClassIoU(IoUMetric):
        """IoUMetric that also writes its metrics and the per-class IoU and Acc (in %) to
        ``output_dir/metrics.json``, and every image's four areas with its file name to
        ``output_dir/per_image.npz`` (the per-item data of the bootstrap; runs on rank 0, after the results of
        every rank were collected, in dataset order)."""

        def process(self, data_batch, data_samples):
            before = len(self.results)
            super().process(data_batch, data_samples)
            for k, sample in enumerate(data_samples):  # each image's areas carry its file name
                self.results[before + k] = (*self.results[before + k], Path(sample["img_path"]).name)

        def compute_metrics(self, results: list):
            names_of = [r[4] for r in results]
            results = [r[:4] for r in results]
            metrics = super().compute_metrics(results)
            res = tuple(zip(*results))
            ret = self.total_area_to_metrics(sum(res[0]), sum(res[1]), sum(res[2]), sum(res[3]), self.metrics,
                                             self.nan_to_num, self.beta)
            names = list(self.dataset_meta["classes"])
            per_class = {n: {"IoU": _round(ret["IoU"][k] * 100), "Acc": _round(ret["Acc"][k] * 100)}
                         for k, n in enumerate(names)}
            if self.output_dir:
                Path(self.output_dir).mkdir(parents=True, exist_ok=True)
                (Path(self.output_dir) / "metrics.json").write_text(json.dumps(
                    {"metrics": {k: float(v) for k, v in metrics.items()}, "per_class": per_class}, indent=1))
                np.savez(Path(self.output_dir) / "per_image.npz", items=np.asarray(names_of, dtype=str),
                         areas=np.stack([torch.stack(r).long().numpy() for r in results], 1))
            return metrics

    def _round(v):
        v = float(v)
        return None if np.isnan(v) else round(v, 4)

    class ForwardCount(Hook):
        """Records how many images the frozen backbone encoded for training and for validation."""

        def before_val(self, runner):
            self.train = getattr(runner.model, "module", runner.model).backbone.forwards

        def after_val(self, runner):
            total = getattr(runner.model, "module", runner.model).backbone.forwards
            Path(runner.work_dir).mkdir(parents=True, exist_ok=True)
            (Path(runner.work_dir) / f"forwards-rank{runner.rank}.json").write_text(
                json.dumps({"train": self.train, "val": total - self.train}))

    MODELS.register_module(BACKBONE, module=FrozenEncoder, force=True)
    METRICS.register_module(METRIC, module=KeepPerClassIoU, force=True)
    HOOKS.register_module(COUNT_HOOK, module=ForwardCount, force=True)
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)  # configs name mmseg types without a scope prefix
    _REGISTERED = True


def build_encoder(spec: dict):
    """The harness encoder described by ``spec`` (built and validated as the spec loader does)."""
    from harness.api import Plugins
    from harness.api import validate_options

    plugins = Plugins(plugins_dirs=spec.get("plugins_dirs") or ())
    reg = plugins.get("encoder", spec["plugin"])
    opts = validate_options(reg.cls.option_schema(), spec.get("options") or {}, f"encoder '{spec['name']}'")
    enc = reg.cls(spec["name"], **opts)
    enc.plugin_name = reg.name
    enc.validate()
    return enc


def instantiate(config: dict, kind: str, **args):
    """The mmseg/mmengine object that ``config``, a registry-type dict ``{"type": name, **arguments}``,
    describes, built by mmseg's registry of ``kind`` as mmengine's Runner builds it: "model", "dataset",
    "transform", "metric", "param_scheduler" (``args`` are added to the dict: objects a config cannot
    hold, e.g. a scheduler's ``optimizer``), "optim_wrapper" (built for ``args["model"]`` through its
    constructor) or "runner" (``config`` is a whole config, as ``build_config`` returns). Registers
    partbench's modules in mmseg first."""
    register()
    from mmengine.config import Config, ConfigDict
    from mmengine.optim import build_optim_wrapper
    from mmseg import registry

    if kind == "runner":
        return registry.RUNNERS.build(config if isinstance(config, Config) else Config(config))
    if kind == "optim_wrapper":
        return build_optim_wrapper(args["model"], ConfigDict(config))
    registries = {"model": registry.MODELS, "dataset": registry.DATASETS, "transform": registry.TRANSFORMS,
                  "metric": registry.METRICS, "param_scheduler": registry.PARAM_SCHEDULERS}
    if kind not in registries:
        raise ValueError(f"instantiate: unknown kind '{kind}' (known: runner, optim_wrapper, {', '.join(registries)})")
    return registries[kind].build(ConfigDict(dict(config, **args)))


def run(cfg: dict) -> dict:
    """Train with mmengine's Runner in this process, then validate once: {"metrics": {aAcc, mIoU, mAcc},
    "per_class": {name: {IoU, Acc}}, "checkpoint": path of the head weights, "iterations"}."""
    runner = instantiate(cfg, "runner")
    runner.train()  # validates at the end of training
    work = Path(cfg["work_dir"])
    found = Path(cfg["val_evaluator"]["output_dir"]) / "metrics.json"
    out = json.loads(found.read_text()) if found.is_file() else {"metrics": {}, "per_class": {}}
    areas = found.with_name("per_image.npz")
    out["per_image"] = str(areas) if areas.is_file() else None
    ckpt = work / f"iter_{cfg['train_cfg']['max_iters']}.pth"
    counts = work / f"forwards-rank{runner.rank}.json"
    out.update(checkpoint=str(ckpt) if ckpt.is_file() else None, iterations=cfg["train_cfg"]["max_iters"],
               forwards=json.loads(counts.read_text()) if counts.is_file() else {})  # this process's share
    return out


def main(argv=None) -> int:
    """Worker entry point: ``python -m partbench_plugins.tasks.seg_mmseg CONFIG.py RESULT.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg_path, out_path = Path(argv[0]), Path(argv[1])
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mmengine's checkpoints (this process only)
    from mmengine.config import Config

    result = run(Config.fromfile(str(cfg_path)).to_dict())
    if int(os.environ.get("RANK", "0")) == 0:
        out_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
