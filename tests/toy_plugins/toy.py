"""Tiny plugins for the core's own tests: colour-patch images, a statistics encoder, a centroid task."""
import os

import numpy as np
import torch
from PIL import Image

from harness import Dataset, Encoder, Option, Samples, Task, hookimpl

PALETTE = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


class ToyColours(Dataset):
    """Solid-colour images with noise; label = colour."""

    options = {"n": Option(int, 24, "images per split"), "seed": Option(int, 0),
               "root": Option(str, "unused", path="dir", must_exist=False)}
    splits = ("all", "train", "test")

    def identity(self):
        return {**super().identity(), "version": 1}

    def load(self, split):
        n = self.opts["n"]
        names = list(PALETTE)
        return _ColourSamples([f"{split}/{i}" for i in range(n)], [i % 3 for i in range(n)], names,
                              self.opts["seed"] + {"all": 0, "train": 1, "test": 2}[split])


class _ColourSamples(Samples):
    def __init__(self, keys, labels, classes, seed):
        super().__init__(keys, labels, classes, {"kept": len(keys)})
        self.seed = seed

    def image(self, i):
        rng = np.random.default_rng(self.seed * 1000 + i)
        base = np.array(PALETTE[self.classes[self.labels[i]]], dtype=np.float64)
        arr = np.clip(base + rng.normal(0, 40, size=(20, 20, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr)


class ToyStats(Encoder):
    """Per-patch colour statistics (no weights)."""

    options = {"fail": Option(bool, False, "raise in forward"),
               "die_after_batches": Option(int, 0, "os._exit(9) after this many batches (0 = never)"),
               "batch_size": Option(int, 4)}
    representations = ("cls", "mean_patch", "tokens", "blocks")
    num_blocks = 1
    batches = 0  # class-level counter across instances, for tests

    def load(self, device="cpu"):
        self.device = device

    def forward(self, x, reps):
        if self.opts["fail"]:
            raise RuntimeError("toy encoder asked to fail")
        type(self).batches += 1
        if self.opts["die_after_batches"] and type(self).batches > self.opts["die_after_batches"]:
            os._exit(9)  # a hard kill: no cleanup, no exception handlers
        patches = torch.nn.functional.avg_pool2d(x, 16).flatten(2).transpose(1, 2)  # [B,P,3]
        tokens = torch.cat([patches.mean(1, keepdim=True), patches], 1)
        out = {"cls": tokens[:, 0], "mean_patch": patches.mean(1), "tokens": tokens, "block.0": tokens * 2}
        return {k: v for k, v in out.items() if k in reps}


class ToyCentroid(Task):
    """Nearest-class-centroid accuracy on one representation."""

    options = {"representation": Option(str, "cls", choices=["cls", "mean_patch", "tokens"]),
               "crash": Option(bool, False), "split": Option(str, "all")}
    headline = ("acc",)

    def check(self, encoder, dataset):
        if not encoder.supports(self.opts["representation"]):
            raise ValueError(f"encoder has no '{self.opts['representation']}'")

    def run(self, ctx):
        if self.opts["crash"]:
            raise ValueError("toy task asked to crash")
        rep = self.opts["representation"]
        feats = np.asarray(ctx.features(self.opts["split"], [rep])[rep], dtype=np.float64)
        feats = feats.reshape(len(feats), -1)
        y = ctx.samples(self.opts["split"]).labels
        cents = np.stack([feats[y == c].mean(0) for c in np.unique(y)])
        pred = np.argmin(((feats[:, None] - cents[None]) ** 2).sum(-1), 1)
        path = ctx.out_dir / "pred.txt"
        path.write_text(" ".join(map(str, pred)))
        return {"metrics": {"acc": float((pred == y).mean() * 100)}, "details": {"n": len(y)},
                "artifacts": [str(path)]}


@hookimpl
def register_encoders(register):
    register("toy_stats", ToyStats)


@hookimpl
def register_datasets(register):
    register("toy_colours", ToyColours)


@hookimpl
def register_tasks(register):
    register("toy_centroid", ToyCentroid)
