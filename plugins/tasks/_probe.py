"""Shared machinery of the linear and attentive probes (private to partbench's probe tasks).

Protocol (official ``patch_lincls.py``, see docs/probes.md): SGD momentum 0.9, weight decay 0,
batch 1024, ``init_lr = base_lr * batch / 256``, cosine decay set once per epoch with no warmup,
90 epochs, test top-1 (and top-3) after every epoch.

What differs from the official script, on purpose:
- Features come from the frozen-feature cache: the encoder runs once per image, not once per epoch
  (``feature_source: reencode`` re-runs it every epoch, like the official code, for verification).
- Several base learning rates train in lockstep on the same mini-batches (one feature read per batch):
  a ``head_bank.HeadBank`` with SGD and the cosine schedule, the engine the dense tasks use too.
- Three accuracies are reported side by side: best epoch on test (official, paper-comparable), final
  epoch, and the epoch/lr chosen on a held-out part of the training split.
"""
from __future__ import annotations

import csv
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import HarnessError, Option, Task, clusters_of
from harness.api import FeatureRequest
from harness.api import transforms as _transforms

from .head_bank import HeadBank, check_lrs, learning_rates, sgd
from .resampling import weighted_sums

# Arrays up to this size (as float32) are moved to the device once; larger ones stream per batch.
_RESIDENT_BYTES = 1 << 30


# -- option checks (run by the spec validator through Option.check) ------------------------------
def _positive(v):
    return None if v > 0 else "must be > 0"


def _at_least(n):
    return lambda v: None if v >= n else f"must be >= {n}"


def _check_fraction(v):
    return None if 0.0 <= v < 1.0 else "must be in [0, 1) (0 disables held-out selection)"


def _check_momentum(v):
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def _check_transform(v):
    try:
        _transforms.parse(v)
    except ValueError as exc:
        return str(exc)
    return None


def probe_options(base_lr: float) -> dict[str, Option]:
    """The optimisation/bookkeeping options both probes share (defaults = official protocol)."""
    return {
        "lr": Option(float, base_lr, "base learning rate of the protocol; actual lr = lr * batch_size / 256",
                     check=_positive),
        "lrs": Option(list, None, "extra base learning rates trained in lockstep with `lr` (same batches); "
                      "held-out selection picks among all of them", check=check_lrs, nullable=True),
        "epochs": Option(int, 90, "training epochs (cosine decay per epoch, no warmup)", check=_at_least(1)),
        "batch_size": Option(int, 1024, "training mini-batch size", check=_at_least(2)),
        "eval_batch_size": Option(int, 256, "evaluation batch size (official 256; matters only when "
                                  "BatchNorm uses batch statistics at evaluation)", check=_at_least(2)),
        "momentum": Option(float, 0.9, "SGD momentum", check=_check_momentum),
        "weight_decay": Option(float, 0.0, "SGD weight decay",
                               check=lambda v: None if v >= 0 else "must be >= 0"),
        "heldout_fraction": Option(float, 0.1, "fraction of the training split held out (stratified, seeded) "
                                   "to choose epoch and lr for the `heldout` accuracy; 0 disables",
                                   check=_check_fraction),
        "topk": Option(int, 3, "k of the top-k accuracy reported next to top-1 (official: 3)", check=_at_least(1)),
        "train_split": Option(str, "train", "dataset split to train on"),
        "test_split": Option(str, None, "dataset split to evaluate on (default: 'test', or 'val' for datasets "
                             "without a test split, e.g. ImageNet folders)", nullable=True),
        "train_transform": Option(str, "resize_crop:256:224", "transform of training images (official: "
                                  "Resize 256 + CenterCrop 224, bicubic)", check=_check_transform),
        "test_transform": Option(str, "resize:224", "transform of test images (official: Resize 224, bicubic)",
                                 check=_check_transform),
        "feature_source": Option(str, "cached", "'cached': encode every image once (feature cache); "
                                 "'reencode': run the encoder on every batch of every epoch, as the "
                                 "official code does (slow; for verification and cost benchmarks)",
                                 choices=["cached", "reencode"]),
    }


# -- the training loop ------------------------------------------------------------------------
def cosine_lr(init_lr: float, epoch: int, epochs: int) -> float:
    """Official schedule: set at the start of each epoch (0-based), no warmup."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def batches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive chunks of ``size``; a trailing chunk of one sample joins the previous chunk
    (BatchNorm cannot use batch statistics of a single sample). Each chunk is sorted so cached rows
    are read in file order; the order inside a batch does not change what the step computes."""
    chunks = [indices[i:i + size] for i in range(0, len(indices), size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = np.concatenate([chunks[-1], last])
    return [np.sort(c) for c in chunks]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (rest, heldout): per class round(fraction * n_c) rows, at least one
    from every class with >= 2 rows, never a whole class. Seeded, independent of row order."""
    rng = np.random.default_rng([seed % 2**32, 0x5E1EC7])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        n = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        held.append(rng.permutation(idx)[:n])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held


class FeatureSource:
    """Rows of one split's frozen representation as float32 tensors on the device.

    Cached: an array from ``ctx.features`` (float32 [N,D] or a float16 memmap [N,T,D]); small arrays
    are moved to the device once, large ones are read per batch (float16 travels, float32 is made on
    the device). Reencode: every read runs the encoder on the images again (the official pipeline);
    the result is rounded to the dtype the cache stores, so both sources see the same numbers.
    """

    def __init__(self, ctx, split: str, rep: str, transform: str, mode: str):
        self.ctx, self.split, self.rep, self.transform, self.mode = ctx, split, rep, transform, mode
        self.device = torch.device(ctx.device)
        self.forwards = 0
        self.resident = None
        if mode == "cached":
            self.array = ctx.features(split, [rep], transform=transform)[rep]
            self.n = len(self.array)
            self.shape = tuple(self.array.shape[1:])
            if self.array.size * 4 <= _RESIDENT_BYTES:
                self.resident = torch.from_numpy(np.array(self.array)).to(self.device).float()  # a writable copy
        else:
            self.array = None
            self.n = len(ctx.samples(split))
            self.shape = None
        self.prefetch = mode == "cached" and self.resident is None

    def read_host(self, idx: np.ndarray):
        """The CPU part of a read (runs in a prefetch thread for streamed arrays)."""
        if self.resident is not None or self.mode != "cached":
            return idx
        return torch.from_numpy(np.ascontiguousarray(self.array[idx]))

    def to_device(self, host, idx: np.ndarray) -> torch.Tensor:
        if self.mode == "reencode":
            return self._encode(idx)
        if self.resident is not None:
            return self.resident[torch.from_numpy(idx).to(self.device)]
        return host.to(self.device, non_blocking=True).float()

    def _encode(self, idx: np.ndarray) -> torch.Tensor:
        x = self.ctx.images(self.split, idx, self.transform)
        out = encode(self.ctx, x, self.rep)
        self.forwards += len(idx)
        # the cache stores vectors as float32 and token-like reps as float16
        if out.dim() == 3:
            out = out.half().float()
        return out.to(self.device)

    def iterate(self, chunks: Sequence[np.ndarray]):
        """Yield (idx, tensor) per chunk, reading the next chunk while the current one trains."""
        if not self.prefetch:
            for idx in chunks:
                yield idx, self.to_device(self.read_host(idx), idx)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.read_host, chunks[0]) if chunks else None
            for i, idx in enumerate(chunks):
                host = pending.result()
                if i + 1 < len(chunks):
                    pending = pool.submit(self.read_host, chunks[i + 1])
                yield idx, self.to_device(host, idx)


def encode(ctx, x: torch.Tensor, rep: str) -> torch.Tensor:
    """One frozen forward of normalised images (only the ``reencode`` source uses this), through the
    run context, which loads the encoder once, applies its precision and counts ``ctx.forwards``."""
    out = ctx.encode(x, [rep])[rep]
    return out.float().clone()  # a normal tensor: encoders may return inference-mode tensors


def topk_hits(logits: torch.Tensor, y: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: (top-1 correct, top-k correct), boolean arrays."""
    top = logits.topk(k, dim=1).indices
    hit = top == y[:, None]
    return hit[:, 0].cpu().numpy(), hit.any(1).cpu().numpy()


class Run:
    """One training run: a HeadBank of heads (one per base lr) trained in lockstep on the same batches, SGD
    with the cosine schedule set per epoch, and the per-epoch curves of every head."""

    def __init__(self, name, make_head, lrs, train_idx, labels, opts, seed, device):
        self.name, self.lrs, self.opts, self.seed = name, list(lrs), opts, seed
        self.train_idx = np.asarray(train_idx)
        self.labels = labels  # torch int64 on device, indexed by the train split's row numbers
        bs = opts["batch_size"]
        self.bank = HeadBank(make_head, [lr * bs / 256.0 for lr in self.lrs],
                             sgd(opts["momentum"], opts["weight_decay"]),
                             lambda init_lr, epoch: cosine_lr(init_lr, epoch, opts["epochs"]), seed, device)
        self.curves = {lr: {"lr": [], "train_loss": []} for lr in self.lrs}
        self.hits: dict = {}  # lr -> {"<tag>_top1"/"<tag>_topk": [bool array over the evaluated items] per epoch}

    def train_epoch(self, source: FeatureSource, epoch: int) -> None:
        for lr, now in zip(self.lrs, self.bank.set_step(epoch)):
            self.curves[lr]["lr"].append(now)
        perm = np.random.default_rng([self.seed % 2**32, epoch, len(self.train_idx)]).permutation(self.train_idx)
        chunks = batches(perm, self.opts["batch_size"])
        sums = torch.zeros(len(self.lrs), device=self.labels.device, dtype=torch.float64)
        seen = 0
        for idx, x in source.iterate(chunks):
            y = self.labels[torch.from_numpy(idx).to(self.labels.device)]
            losses = self.bank.step(x, lambda h, inp: F.cross_entropy(h(inp), y))
            sums += losses.double() * len(idx)
            seen += len(idx)
        for lr, s in zip(self.lrs, (sums / seen).tolist()):
            self.curves[lr]["train_loss"].append(s)

    def evaluate(self, source: FeatureSource, idx: np.ndarray, labels: torch.Tensor, k: int, tag: str) -> None:
        idx = np.asarray(idx)
        where = np.zeros(int(idx.max()) + 1 if len(idx) else 0, np.int64)
        where[idx] = np.arange(len(idx))  # row number -> position among the evaluated items
        hit1 = np.zeros((len(self.lrs), len(idx)), bool)
        hitk = np.zeros((len(self.lrs), len(idx)), bool)
        for rows, x in source.iterate(batches(idx, self.opts["eval_batch_size"])):
            y = labels[torch.from_numpy(rows).to(labels.device)]
            for j, logits in enumerate(self.bank.outputs(x)):
                hit1[j, where[rows]], hitk[j, where[rows]] = topk_hits(logits, y, k)
        c1, ck = hit1.sum(1), hitk.sum(1)
        n = len(idx)
        for j, lr in enumerate(self.lrs):
            self.curves[lr].setdefault(f"{tag}_top1", []).append(100.0 * c1[j] / n)
            self.curves[lr].setdefault(f"{tag}_topk", []).append(100.0 * ck[j] / n)
            # which items each epoch got right: the per-item data of the test accuracies
            self.hits.setdefault(lr, {}).setdefault(f"{tag}_top1", []).append(hit1[j])
            self.hits[lr].setdefault(f"{tag}_topk", []).append(hitk[j])


def _postfix(bar, run: Run, tag: str) -> None:
    if hasattr(bar, "set_postfix"):
        c = run.curves[run.lrs[0]]
        bar.set_postfix(loss=f"{c['train_loss'][-1]:.3f}", **{f"{tag}_top1": f"{c[tag + '_top1'][-1]:.1f}"})


# -- the task ------------------------------------------------------------------------------------
class ProbeTask(Task):
    """Base of linear_probe and attentive_probe; subclasses define the head and its input."""

    seeded = True  # the heads' initialisation, batch order and held-out split follow ctx.seed

    default_lr = 0.1

    #: the representation the head reads (subclasses may make it an option)
    def representation(self) -> str:
        raise NotImplementedError

    def make_head(self, dim: int, num_classes: int) -> torch.nn.Module:
        raise NotImplementedError

    def head_details(self) -> dict:
        return {}

    def validate_dim(self, dim: int) -> None:
        """Raise HarnessError if the head cannot be built on features of width ``dim``."""

    # ---------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.opts["topk"]

    headline = ("top1_best_epoch", "top1_final", "top1_heldout")

    def test_split(self, dataset) -> str:
        if self.opts["test_split"]:
            return self.opts["test_split"]
        splits = tuple(dataset.splits)
        return "val" if "test" not in splits and "val" in splits else "test"

    def check(self, encoder, dataset) -> None:
        rep = self.representation()
        if not encoder.supports(rep):
            raise ValueError(f"encoder '{encoder.name}' has no '{rep}' representation "
                             f"(it offers: {', '.join(encoder.representations)})")
        splits = dataset.splits
        chosen = {"train_split": self.opts["train_split"], "test_split": self.test_split(dataset)}
        for key, split in chosen.items():
            if splits and split not in splits:
                raise ValueError(f"dataset '{dataset.name}' has no split '{split}' "
                                 f"(it has: {', '.join(splits)}); set the task option {key}")
        if chosen["train_split"] == chosen["test_split"]:
            raise ValueError(f"train_split and test_split are both '{chosen['train_split']}': "
                             "a probe must be evaluated on data it was not trained on")
        dim = encoder.embed_dim if rep in ("cls", "mean_patch", "tokens") else None
        if isinstance(dim, int):  # else (unknown before loading, or a projection) checked at run time
            try:
                self.validate_dim(dim)
            except HarnessError as exc:
                raise ValueError(str(exc)) from None

    def requests(self, encoder, dataset) -> list[FeatureRequest]:
        if self.opts["feature_source"] != "cached":
            return []
        rep = self.representation()
        return [FeatureRequest(self.opts["train_split"], (rep,), self.opts["train_transform"]),
                FeatureRequest(self.test_split(dataset), (rep,), self.opts["test_transform"])]

    def lr_list(self) -> list[float]:
        return learning_rates(self.opts["lr"], self.opts["lrs"])

    def run(self, ctx) -> dict:
        o, rep = dict(self.opts), self.representation()
        o["test_split"] = self.test_split(ctx.dataset)
        t0 = time.perf_counter()
        device = torch.device(ctx.device)
        tr_s, te_s = ctx.samples(o["train_split"]), ctx.samples(o["test_split"])
        classes = list(tr_s.classes)
        if list(te_s.classes) != classes:
            raise HarnessError(f"{self.name}: splits '{o['train_split']}' and '{o['test_split']}' have different "
                               f"class lists ({classes} vs {list(te_s.classes)})")
        C = len(classes)
        if C < 2:
            raise HarnessError(f"{self.name}: need at least 2 classes to train a probe, got {C}")
        y_tr = torch.as_tensor(np.asarray(tr_s.labels), dtype=torch.long, device=device)
        y_te = torch.as_tensor(np.asarray(te_s.labels), dtype=torch.long, device=device)
        if len(y_tr) < 2 or len(y_te) < 1:
            raise HarnessError(f"{self.name}: split '{o['train_split']}' has {len(y_tr)} and '{o['test_split']}' "
                               f"has {len(y_te)} samples; a probe needs at least 2 and 1")

        train = FeatureSource(ctx, o["train_split"], rep, o["train_transform"], o["feature_source"])
        test = FeatureSource(ctx, o["test_split"], rep, o["test_transform"], o["feature_source"])
        dim = self._feature_dim(train, tr_s)
        self.validate_dim(dim)
        k = min(self.k, C)
        lrs = self.lr_list()
        seed = int(ctx.seed)
        make = lambda: self.make_head(dim, C)  # noqa: E731
        t_feat = time.perf_counter() - t0

        # 1) the official run: train on the full training split, test after every epoch
        full = Run("full", make, lrs, np.arange(len(y_tr)), y_tr, o, seed, device)
        bar = ctx.progress(range(o["epochs"]), desc=f"{self.name}: train ({len(lrs)} lr)")
        for epoch in bar:
            full.train_epoch(train, epoch)
            full.evaluate(test, np.arange(len(y_te)), y_te, k, "test")
            _postfix(bar, full, "test")

        # 2) the selection run: train on the rest of the training split, score the held-out part
        sel, held_idx, rest_idx = None, np.zeros(0, np.int64), np.arange(len(y_tr))
        if o["heldout_fraction"] > 0:
            rest_idx, held_idx = stratified_holdout(np.asarray(tr_s.labels), o["heldout_fraction"], seed)
            if len(held_idx) == 0 or len(rest_idx) < 2:
                raise HarnessError(f"{self.name}: heldout_fraction {o['heldout_fraction']} leaves no held-out rows "
                                   f"in split '{o['train_split']}' ({len(y_tr)} samples); raise it or set 0")
            sel = Run("selection", make, lrs, rest_idx, y_tr, o, seed, device)
            bar = ctx.progress(range(o["epochs"]), desc=f"{self.name}: held-out selection")
            for epoch in bar:
                sel.train_epoch(train, epoch)
                sel.evaluate(train, held_idx, y_tr, k, "heldout")
                _postfix(bar, sel, "heldout")

        metrics, details = self._summarise(full, sel, lrs, k, C)
        details.update({
            "representation": rep,
            "num_classes": C,
            "classes": classes,
            "feature_dim": dim,
            "n": {"train": int(len(y_tr)), "test": int(len(y_te)),
                  "selection_train": int(len(rest_idx)) if sel else None,
                  "heldout": int(len(held_idx)) if sel else None},
            "protocol": {"base_lrs": lrs, "protocol_base_lr": lrs[0],
                         "init_lrs": [lr * o["batch_size"] / 256.0 for lr in lrs],
                         "epochs": o["epochs"], "batch_size": o["batch_size"],
                         "eval_batch_size": o["eval_batch_size"], "momentum": o["momentum"],
                         "weight_decay": o["weight_decay"], "schedule": "cosine per epoch, no warmup",
                         "train_split": o["train_split"], "test_split": o["test_split"],
                         "train_transform": o["train_transform"], "test_transform": o["test_transform"],
                         "heldout_fraction": o["heldout_fraction"], "seed": seed},
            "head": self.head_details(),
            "topk": {"requested": self.k, "used": k,
                     "note": (f"top-{self.k} clamped to the {C} classes" if k < self.k else "")},
            "feature_source": o["feature_source"],
            "encoder_forwards_by_task": train.forwards + test.forwards,
            "seconds": {"features": round(t_feat, 3), "total": round(time.perf_counter() - t0, 3)},
        })
        artifacts = [self._write_curves(ctx.out_dir, full, sel, lrs)]
        return {"metrics": metrics, "details": details, "artifacts": artifacts,
                "per_item": self._per_item(full, details, lrs, te_s)}

    @staticmethod
    def _per_item(full: Run, details: dict, lrs, test_samples) -> dict:
        """Which test items each epoch of the protocol lr got right (top-1, top-k: [n, epochs]), and which the
        held-out choice (its lr and epoch) got right."""
        hits = full.hits[lrs[0]]
        out = {"items": np.asarray(test_samples.keys, dtype=str),
               "top1": np.stack(hits["test_top1"], 1), "topk": np.stack(hits["test_topk"], 1),
               **clusters_of(test_samples)}
        choice = details.get("heldout_choice")
        if choice:
            chosen = full.hits[choice["base_lr"]]
            out["top1_heldout"] = chosen["test_top1"][choice["epoch"] - 1]
            out["topk_heldout"] = chosen["test_topk"][choice["epoch"] - 1]
        return out

    def resample(self, per_item, counts):
        """Accuracies on the resampled test items: at the best epoch (chosen again on each resample, as the
        official best_acc1 is chosen on the test split; top-k at that epoch), at the final epoch, and at the
        held-out choice."""
        # the items drawn per resample: n when items are drawn, the drawn images' items when images are
        n, K = counts.sum(1, dtype=np.int64)[:, None], self.k
        top1 = 100.0 * weighted_sums(counts, per_item["top1"]) / n  # [b, epochs]
        topk = 100.0 * weighted_sums(counts, per_item["topk"]) / n
        best = np.argmax(top1, axis=1)  # the first maximum
        rows = np.arange(len(counts))
        out = {"top1_best_epoch": top1[rows, best], f"top{K}_best_epoch": topk[rows, best],
               "top1_final": top1[:, -1], f"top{K}_final": topk[:, -1]}
        if "top1_heldout" in per_item:
            out["top1_heldout"] = 100.0 * weighted_sums(counts, per_item["top1_heldout"]) / n[:, 0]
            out[f"top{K}_heldout"] = 100.0 * weighted_sums(counts, per_item["topk_heldout"]) / n[:, 0]
        return out

    # ---------------------------------------------------------------------------------------------
    @staticmethod
    def _feature_dim(source: FeatureSource, samples) -> int:
        if source.shape is not None:
            return int(source.shape[-1])
        # reencode: one small forward tells the width (counted in the task's forwards)
        return int(source.to_device(None, np.arange(min(2, len(samples)))).shape[-1])

    def _summarise(self, full: Run, sel: Run | None, lrs, k: int, C: int):
        p = lrs[0]
        c = full.curves[p]
        best = int(np.argmax(c["test_top1"]))  # first maximum, as the official `acc1 > best_acc1`
        last = len(c["test_top1"]) - 1
        K = self.k
        metrics = {
            "top1_best_epoch": float(c["test_top1"][best]),
            f"top{K}_best_epoch": float(c["test_topk"][best]),
            "top1_final": float(c["test_top1"][last]),
            f"top{K}_final": float(c["test_topk"][last]),
        }
        details: dict[str, Any] = {
            "best_epoch": {"epoch": best + 1, "base_lr": p,
                           "meaning": "epoch with the highest test top-1 (chosen on the test split, "
                                      "as the official best_acc1)"},
            "final_epoch": {"epoch": last + 1, "base_lr": p},
            "per_lr": {str(lr): {"top1_best_epoch": float(max(full.curves[lr]["test_top1"])),
                                 "best_epoch": int(np.argmax(full.curves[lr]["test_top1"])) + 1,
                                 "top1_final": float(full.curves[lr]["test_top1"][-1])} for lr in lrs},
        }
        if sel is not None:
            # choose (lr, epoch) on held-out top-1; ties: protocol lr first, then the earlier epoch
            score = np.array([sel.curves[lr]["heldout_top1"] for lr in lrs])  # [L, E]
            flat = int(np.argmax(score))
            li, ei = divmod(flat, score.shape[1])
            lr_star = lrs[li]
            metrics["top1_heldout"] = float(full.curves[lr_star]["test_top1"][ei])
            metrics[f"top{K}_heldout"] = float(full.curves[lr_star]["test_topk"][ei])
            details["heldout_choice"] = {
                "epoch": ei + 1, "base_lr": lr_star, "heldout_top1": float(score[li, ei]),
                "meaning": "epoch and lr chosen on the held-out part of the training split by a selection run "
                           "trained on the rest; the reported test accuracy is the full-train run's at that "
                           "epoch and lr (no test data used for the choice)"}
        return metrics, details

    def _write_curves(self, out_dir, full: Run, sel: Run | None, lrs) -> str:
        path = out_dir / "curves.csv"
        K = self.k
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run", "base_lr", "epoch", "lr", "train_loss", "test_top1", f"test_top{K}",
                        "heldout_top1", f"heldout_top{K}"])
            for run in [full] + ([sel] if sel else []):
                for lr in lrs:
                    cv = run.curves[lr]
                    for e in range(len(cv["lr"])):
                        def g(key):
                            v = cv.get(key)
                            return "" if v is None else f"{v[e]:.4f}"
                        w.writerow([run.name, lr, e + 1, f"{cv['lr'][e]:.6g}", f"{cv['train_loss'][e]:.6f}",
                                    g("test_top1"), g("test_topk"), g("heldout_top1"), g("heldout_topk")])
        return str(path)
