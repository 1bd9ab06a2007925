"""``DenseHeadTask``: the base of the tasks that train heads on frozen token maps (linear_seg's fast protocol,
linear_pose), and the ``DenseUnit`` a unit of such a task works on.

A unit runs in four steps, each a method a subclass may override:

1. ``prepare(ctx)``: the splits and their views (slide windows, person crops: built once per task, split
   and flip, so ``requests()`` and ``run()`` share them), the representations (``blocks``, or the final-norm
   ``tokens`` with ``blocks: []``), the input size and map grid, the cache size and the mode (cache or
   stream) -> a ``DenseUnit``, which reads the maps of a view through one path.
2. ``decoder(unit)``: the task-specific part, a ``Decoder``: the head, the training targets and loss, and
   the evaluation of every trained head (a label map and mmseg's IoU for segmentation, a heat-map codec and
   COCOeval for pose).
3. ``train(unit, decoder)``: one head per learning rate on a ``HeadBank``, trained in lockstep on batches of
   the training view read from the cache or re-encoded (``mode: stream``), with the ``Training`` the subclass
   describes (steps, batch size, the order items are drawn in, optimiser, schedule).
4. ``report(unit, decoder, bank, results, curve)``: metrics, details and artifacts.

A subclass declares ``samples_type``, ``kind`` and ``item``, its options (``dense_options`` gives the shared
ones) and implements ``make_view``, ``input_size``, ``decoder``, ``training``, ``curve_label`` and
``report``. A task that trains nothing (``correspondence``, ``in_context_seg``) overrides ``run`` and uses
``prepare`` and ``DenseUnit.maps`` alone.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from harness.api import FeatureRequest, HarnessError, Option, Samples, Task

from .dense import DenseMaps, DerivedSamples, tokens_to_maps
from .head_bank import Factory, HeadBank, check_lrs, learning_rates


def _positive(v):
    return None if v > 0 else "must be > 0"


def check_token_map(v) -> str | None:
    """Option check of a token-map representation: 'tokens' or 'block.<i>'."""
    return None if v == "tokens" or (v.startswith("block.") and v[6:].isdigit()) else "expected 'tokens' or 'block.<i>'"


def dense_options(item: str, *, lr: float, batch_size: int, weight_decay: float, warmup: int, test_split: str,
                  notes: dict[str, str] | None = None) -> dict[str, Option]:
    """The options every dense head task has, with the defaults of its protocol; ``notes`` adds a remark to
    an option's help (e.g. the official value)."""
    notes = notes or {}

    def h(key: str, text: str) -> str:
        return f"{text} ({notes[key]})" if key in notes else text

    return {
        "blocks": Option(list, [3, 5, 7, 11], h("blocks", "blocks whose raw outputs are concatenated; [] uses the "
                                                "final-norm 'tokens' (encoders without blocks)"),
                         check=lambda v: None if all(isinstance(b, int) and b >= 0 for b in v) else
                         "expected a list of block indices"),
        "batch_size": Option(int, batch_size, h("batch_size", f"training {item}s per step"), check=_positive),
        "lr": Option(float, lr, h("lr", "AdamW learning rate"), check=_positive),
        "lrs": Option(list, None, h("lrs", "further learning rates, trained in lockstep with `lr` on the same "
                                    "feature reads"), nullable=True, check=check_lrs),
        "weight_decay": Option(float, weight_decay, h("weight_decay", "AdamW weight decay")),
        "warmup": Option(int, warmup, h("warmup", "linear warmup iterations"),
                         check=lambda v: None if v >= 0 else "must be >= 0"),
        "mode": Option(str, "auto", h("mode", f"cache the {item} features (cache), re-encode the training {item}s "
                                      "every epoch (stream), or cache up to max_cache_gb (auto)"),
                       choices=["auto", "cache", "stream"]),
        "max_cache_gb": Option(float, 64.0, h("max_cache_gb", f"mode auto: the largest {item} cache to build")),
        "train_split": Option(str, "train", "split to train on"),
        "test_split": Option(str, test_split, h("test_split", "split to evaluate on")),
    }


@dataclass
class Training:
    """How a subclass trains its heads: ``steps`` optimiser steps of ``batch_size`` items; ``orders`` yields
    item orders of the training view (each cut into batches, a remainder shorter than a batch dropped),
    read until ``steps`` batches were trained; ``optimizer`` a HeadBank factory; ``schedule(base_lr, step)``."""

    steps: int
    batch_size: int
    orders: Iterator[np.ndarray]
    optimizer: Factory
    schedule: Callable[[float, int], float]


@dataclass
class DenseUnit:
    """One unit of a dense task: its splits (``samples``) and views by role ("train", "test"), and how their
    token maps are read."""

    ctx: Any
    samples: dict[str, Samples]
    views: dict[str, DerivedSamples]
    reps: list[str]
    size: tuple[int, int]  # the input size of a view's items (crop)
    grid: tuple[int, int]  # the token map of an item: size / patch
    prefix: int  # leading non-patch tokens, dropped
    mode: str  # "cache" or "stream" (the training view's maps)
    cache_gb: float | None  # the views' cache, None when the encoder's width is unknown before loading
    t0: float = field(default_factory=time.perf_counter)
    # set by DenseHeadTask.train
    steps: int = 0
    batch_size: int = 0
    train_seconds: float = 0.0
    _features: dict = field(default_factory=dict)
    _maps: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return torch.device(self.ctx.device)

    @property
    def transform(self) -> str:
        return f"pad:{self.size[0]}:{self.size[1]}"

    def features(self, role: str) -> dict:
        """The cached fp16 token arrays of a view (extracted on first use when not prefetched)."""
        if role not in self._features:
            self._features[role] = self.ctx.features(self.views[role], self.reps, self.transform)
        return self._features[role]

    @property
    def channels(self) -> int:
        """K*D: the width of the concatenated maps (read off the test view's arrays)."""
        return sum(int(a.shape[2]) for a in self.features("test").values())

    def maps(self, role: str) -> DenseMaps:
        if role not in self._maps:
            self._maps[role] = DenseMaps(self.features(role), self.reps, self.grid, self.prefix, self.device)
        return self._maps[role]

    def batches(self, role: str, orders, batch_size: int):
        """(item indices, [B, K*D, h, w] float32 maps) of consecutive batches of every order, read from the
        cache or, in mode stream, re-encoded (rounded through fp16 as the cache stores them)."""
        for order in orders:
            if self.mode == "stream":
                yield from self._streamed(self.views[role], order, batch_size)
                continue
            maps = self.maps(role)
            for k in range(len(order) // batch_size):
                idx = order[k * batch_size:(k + 1) * batch_size]
                yield idx, maps.batch(idx)

    def _streamed(self, view, order, bs: int):
        """Re-encode ``order`` and regroup the encoder's batches into batches of ``bs`` (a remainder shorter
        than ``bs`` is dropped, as in the cached path)."""
        buf_i, buf_x = [], []
        for idx, out in self.ctx.stream(view, self.reps, self.transform, order):
            buf_i.append(np.asarray(idx))
            buf_x.append(tokens_to_maps(out, self.reps, self.grid, self.prefix).to(self.device))
            while sum(len(b) for b in buf_i) >= bs:
                i_all, x_all = np.concatenate(buf_i), torch.cat(buf_x)
                yield i_all[:bs], x_all[:bs]
                buf_i, buf_x = [i_all[bs:]], [x_all[bs:]]


class Decoder:
    """The task-specific part of a dense head task, for one unit: what a head predicts, what it is trained
    to predict, and how its predictions are scored."""

    def __init__(self, task: "DenseHeadTask", unit: DenseUnit):
        self.task, self.unit = task, unit

    def head(self, channels: int) -> torch.nn.Module:
        """A fresh head on ``channels``-channel maps (the bank seeds the RNG before each)."""
        raise NotImplementedError

    def targets(self, idx: np.ndarray, device) -> Any:
        """The training targets of the training view's items ``idx`` (given to ``loss``)."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, target) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, bank: HeadBank) -> list[dict]:
        """One result per head of ``bank`` on the test view."""
        raise NotImplementedError


class DenseHeadTask(Task):
    """Heads on frozen token maps of derived views of a dataset's images (see the module docstring)."""

    #: the Samples type the task reads (SegSamples, KeypointSamples), and the words for it and its items
    samples_type: type = Samples
    kind = "dense"
    item = "item"
    #: mirror images of the items in the training / test view (cached beside the items)
    train_flip = False
    test_flip = False

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self._views: dict = {}

    # -- hooks ------------------------------------------------------------------------------------
    def make_view(self, samples: Samples, split: str, flip: bool) -> DerivedSamples:
        raise NotImplementedError

    def make_role_view(self, role: str, samples: Samples, split: str, flip: bool) -> DerivedSamples:
        """The view of ``role`` ("train", "test"); a task whose roles differ beyond their split and flip (e.g.
        augmented training views) overrides this instead of ``make_view``."""
        return self.make_view(samples, split, flip)

    def input_size(self, samples: Samples) -> tuple[int, int]:
        """[h, w] of the view's items (encoded padded to it)."""
        raise NotImplementedError

    def decoder(self, unit: DenseUnit) -> Decoder:
        raise NotImplementedError

    def training(self, unit: DenseUnit) -> Training:
        raise NotImplementedError

    def curve_label(self, step: int, steps: int) -> int | None:
        """The iteration number loss.csv shows for the losses of ``step`` (0-based), or None (no row)."""
        return step

    def report(self, unit: DenseUnit, decoder: Decoder, bank: HeadBank, results: list[dict], curve: list) -> dict:
        raise NotImplementedError

    # -- validation and requests ----------------------------------------------------------------------
    def reps(self) -> list[str]:
        blocks = self.opts["blocks"]
        return [f"block.{b}" for b in blocks] if blocks else ["tokens"]

    def lr_list(self) -> list[float]:
        return learning_rates(self.opts["lr"], self.opts["lrs"])

    def view_splits(self) -> list[tuple[str, str, bool]]:
        """(role, split, flip) of every view the task reads."""
        return [("train", self.opts["train_split"], self.train_flip), ("test", self.opts["test_split"], self.test_flip)]

    def view_key(self) -> tuple:
        """What else a view depends on (e.g. an input size that depends on the encoder), beside its split."""
        return ()

    def split_option(self, role: str) -> str:
        """The option that names the split of ``role``."""
        return f"{role}_split"

    def check(self, encoder, dataset) -> None:
        for r in self.reps():
            if not encoder.supports(r):
                raise ValueError(f"encoder '{encoder.name}' has no '{r}' representation (has: "
                                 f"{', '.join(encoder.representations)}"
                                 f"{f', {encoder.num_blocks} blocks' if encoder.num_blocks else ''}); "
                                 "set the task option 'blocks' ([] for final-norm tokens)")
        if not encoder.patch_size:
            raise ValueError(f"encoder '{encoder.name}' does not declare its patch size (dense maps need it)")
        for role, split, _ in self.view_splits():
            if split not in dataset.splits:
                raise ValueError(f"dataset '{dataset.name}' has no split '{split}' "
                                 f"(it has: {', '.join(dataset.splits)}); set the task option {self.split_option(role)}")

    def checked(self, samples: Samples, split: str, dataset_name: str) -> Samples:
        if not isinstance(samples, self.samples_type):
            raise HarnessError(f"{self.name}: dataset '{dataset_name}' split '{split}' is not a {self.kind} dataset "
                               f"(its load() returned {type(samples).__name__}, not {self.samples_type.__name__})")
        return samples

    def view(self, samples: Samples, split: str, flip: bool, dataset_name: str, role: str = "") -> DerivedSamples:
        """The view of a split, built once (the runner's prefetch and every unit of the task share it)."""
        key = (id(samples), role, split, flip, *self.view_key())
        hit = self._views.get(key)
        if hit is None or hit[0] is not samples:
            view = self.make_role_view(role, self.checked(samples, split, dataset_name), split, flip)
            hit = self._views[key] = (samples, view)
        return hit[1]

    def requests(self, encoder, dataset) -> list[FeatureRequest]:
        if self.opts["mode"] == "stream":  # the test view is read (and cached) at run time
            return []
        specs = self.view_splits()
        counts: dict[str, int] = {}

        def make_view(role, split, flip, last):
            def make(samples):
                self.bind(encoder)
                v = self.view(samples, split, flip, dataset.name, role)
                counts[role] = len(v)
                if last:  # refuse a too big cache before anything is extracted
                    self.choose_mode(encoder, sum(counts.values()), self.input_size(samples))
                return v
            return make

        return [FeatureRequest(split, tuple(self.reps()), self.request_transform(encoder),
                               make_view(role, split, flip, k == len(specs) - 1))
                for k, (role, split, flip) in enumerate(specs)]

    def bind(self, encoder) -> None:
        """Called before a view is built for ``encoder`` (a task whose views depend on the encoder, e.g. on
        its patch size, records what they need; the runner asks every encoder's requests before it builds
        any view)."""

    def request_transform(self, encoder):
        """The transform of ``encoder``'s requests: a name, or a function of the view (the default: padding
        to ``input_size``)."""
        return self._transform

    def _transform(self, view: DerivedSamples) -> str:
        h, w = self.input_size(view.base)
        return f"pad:{h}:{w}"

    def cache_gb(self, encoder, n_items: int, size) -> float | None:
        """fp16 token maps of ``n_items`` items of ``size``; None when the encoder's width is unknown."""
        if not encoder.embed_dim:
            return None
        p = int(encoder.patch_size)
        tokens = int(encoder.prefix_tokens) + (size[0] // p) * (size[1] // p)
        return n_items * tokens * 2 * len(self.reps()) * int(encoder.embed_dim) / 1e9

    def choose_mode(self, encoder, n_items: int, size) -> tuple[str, float | None]:
        need = self.cache_gb(encoder, n_items, size)
        mode = self.opts["mode"]
        if mode == "auto":
            if need is not None and need > self.opts["max_cache_gb"]:
                raise HarnessError(
                    f"{self.name}: the {self.item} cache of encoder '{encoder.name}' would take {need:.1f} GB "
                    f"(> max_cache_gb {self.opts['max_cache_gb']:g}); set mode: stream (re-encodes every epoch), "
                    "fewer blocks or raise max_cache_gb")
            mode = "cache"
        return mode, need

    # -- a unit -----------------------------------------------------------------------------------------
    def run(self, ctx) -> dict:
        unit = self.prepare(ctx)
        decoder = self.decoder(unit)
        bank, curve = self.train(unit, decoder)
        return self.report(unit, decoder, bank, decoder.evaluate(bank), curve)

    def prepare(self, ctx) -> DenseUnit:
        enc = ctx.encoder
        samples, views = {}, {}
        for role, split, flip in self.view_splits():
            samples[role] = self.checked(ctx.samples(split), split, ctx.dataset.name)
            views[role] = self.view(samples[role], split, flip, ctx.dataset.name, role)
        h, w = size = tuple(self.input_size(next(iter(samples.values()))))
        p = int(enc.patch_size)
        if h % p or w % p:
            raise HarnessError(f"{self.name}: {self.item} size {h}x{w} is not a multiple of encoder "
                               f"'{enc.name}''s patch size {p}")
        mode, need = self.choose_mode(enc, sum(len(v) for v in views.values()), size)
        unit = DenseUnit(ctx, samples, views, self.reps(), size, (h // p, w // p), int(enc.prefix_tokens), mode, need)
        counts = " and ".join(f"{len(v)} {'training' if role == 'train' else role}" for role, v in views.items())
        ctx.log(f"    {self.name}: {counts} {self.item}s of "
                f"{h}x{w}; {self.item} cache {'of unknown size' if need is None else f'{need:.2f} GB'}; mode {mode}")
        return unit

    def train(self, unit: DenseUnit, decoder: Decoder) -> tuple[HeadBank, list]:
        """Train one head per learning rate; returns the bank and the loss curve rows [iteration, *losses]."""
        t0 = time.perf_counter()
        ctx, lrs, plan = unit.ctx, self.lr_list(), self.training(unit)
        unit.steps, unit.batch_size = plan.steps, plan.batch_size
        channels = unit.channels
        bank = HeadBank(lambda: decoder.head(channels), lrs, plan.optimizer, plan.schedule, seed=ctx.seed,
                        device=unit.device)
        batches = itertools.islice(unit.batches("train", plan.orders, plan.batch_size), plan.steps)
        curve = []
        for it, (idx, x) in enumerate(ctx.progress(batches, desc=f"{self.name} {ctx.encoder.name} ({len(lrs)} lr)",
                                                   total=plan.steps)):
            target = decoder.targets(idx, unit.device)
            bank.set_step(it)
            losses = bank.step(x, lambda head, inp: decoder.loss(head(inp), target))
            label = self.curve_label(it, plan.steps)
            if label is not None:
                curve.append([label, *losses.tolist()])
        unit.train_seconds = time.perf_counter() - t0
        return bank, curve

    # -- artifacts ----------------------------------------------------------------------------------------
    def write_curve(self, unit: DenseUnit, curve: list) -> str:
        path = unit.ctx.out_dir / "loss.csv"
        path.write_text("iteration," + ",".join(f"loss@lr={lr:g}" for lr in self.lr_list()) + "\n" + "".join(
            f"{row[0]}," + ",".join(f"{v:.6g}" for v in row[1:]) + "\n" for row in curve))
        return str(path)

    def save_heads(self, unit: DenseUnit, bank: HeadBank, **meta) -> str:
        path = unit.ctx.out_dir / "heads.pt"
        torch.save({"lrs": self.lr_list(), "heads": bank.state(), **meta}, path)
        return str(path)
