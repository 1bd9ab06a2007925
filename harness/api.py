"""The small core types every plugin builds on: Option, Encoder, Dataset, Samples, Task.

A plugin subclasses one of Encoder/Dataset/Task, declares its ``options`` and registers the class
from a hook (see ``harness.hookspecs``). The core validates a spec's options against ``options``
before any computation, then instantiates the class with the validated values.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

REQUIRED = object()  # sentinel: an Option without a default must be given in the spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HarnessError(Exception):
    """An error the user can fix; the CLI prints it as one line (exit code 1)."""

    exit_code = 1


class SpecError(HarnessError):
    """Bad spec / bad input found before any computation (exit code 2)."""

    exit_code = 2


@dataclass
class Option:
    """One plugin option as it appears in a spec.

    type: int, float, str, bool, list or dict (an int is accepted where float is expected).
    path: "file", "dir" or "any" marks a filesystem path; with ``must_exist`` it is checked at
          validation time.
    check: optional callable returning an error message (str) for a bad value, else None.
    """

    type: type = str
    default: Any = REQUIRED
    help: str = ""
    choices: Sequence[Any] | None = None
    path: str | None = None
    must_exist: bool = True
    check: Callable[[Any], str | None] | None = None
    nullable: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file (used in cache identities of checkpoints and data files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class _Plugin:
    """Shared behaviour of encoders, datasets and tasks: a name, validated options, an identity."""

    description = ""
    options: dict[str, Option] = {}

    def __init__(self, name: str, **options: Any):
        self.name = name  # the spec's name for this instance
        self.plugin_name = type(self).__name__  # the registered plugin name; set by the core
        self.opts = options

    @classmethod
    def option_schema(cls) -> dict[str, Option]:
        """All options, including the ones inherited from base classes."""
        schema: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            schema.update(getattr(klass, "options", {}) or {})
        return schema

    def validate(self) -> None:
        """Cheap checks of the options' content at spec-validation time (e.g. read a checkpoint's
        structure); raise HarnessError or ValueError naming the problem. Runs before any computation."""

    def identity(self) -> dict:
        """What determines this plugin's output; part of cache keys. Extend, don't replace."""
        return {"plugin": self.plugin_name, "options": self.opts}


class Encoder(_Plugin):
    """A frozen image encoder.

    ``forward(x, reps)`` gets a normalised float batch [B,3,H,W] and the list of representation
    names wanted, and returns a dict name -> tensor:
      cls         [B,D]   CLS token after the final norm
      mean_patch  [B,D]   mean of patch tokens (CLS excluded) after the final norm
      tokens      [B,1+N,D] all tokens after the final norm (CLS first)
      projected   [B,P]   projection-head output (only where the method has one)
      block.<i>   [B,1+N,D] raw output of block i (0-based), no final norm
    """

    options = {
        "mean": Option(list, list(IMAGENET_MEAN), "per-channel normalisation mean (RGB, 0..1)"),
        "std": Option(list, list(IMAGENET_STD), "per-channel normalisation std (RGB, 0..1)"),
        "batch_size": Option(int, 64, "images per forward pass", check=lambda v: None if v > 0 else "must be > 0"),
        "precision": Option(str, "fp32", "compute dtype on the device", choices=["fp32", "bf16", "fp16"]),
    }
    #: representation names this encoder can produce (``block.<i>`` is covered by "blocks")
    representations: Sequence[str] = ("cls", "mean_patch", "tokens", "blocks")
    #: number of transformer blocks (for validating ``block.<i>``); None if not applicable
    num_blocks: int | None = None

    def supports(self, rep: str) -> bool:
        if rep.startswith("block."):
            idx = rep.split(".", 1)[1]
            return "blocks" in self.representations and idx.isdigit() and (
                self.num_blocks is None or int(idx) < self.num_blocks)
        return rep in self.representations

    def load(self, device: str = "cpu") -> None:
        """Build the model and load weights (lazy: called once, right before the first forward)."""
        raise NotImplementedError

    def forward(self, x, reps: Sequence[str]) -> dict:
        raise NotImplementedError


class Samples:
    """One split of a dataset: a list of (image, label) items with stable keys.

    Subclasses implement ``image(i)``; the constructor takes keys, labels and class names.
    ``image(i)`` returns the PIL RGB image of the item *before* the task's resize transform
    (for part datasets: the square crop around the keypoint, out-of-image area black).
    """

    def __init__(self, keys: Sequence[str], labels, classes: Sequence[str], summary: dict | None = None):
        self.keys = list(keys)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.summary = dict(summary or {})
        if len(self.keys) != len(self.labels):
            raise ValueError("keys and labels differ in length")

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, i: int):
        raise NotImplementedError

    def source(self, i: int):
        """(path of the source image, (x0, y0, x1, y1) box) for galleries, or None."""
        return None

    def fingerprint(self) -> str:
        """Hash of the item keys and labels: part of the feature cache key."""
        h = hashlib.sha256()
        for k, y in zip(self.keys, self.labels.tolist()):
            h.update(f"{k}\t{y}\n".encode())
        return h.hexdigest()


class Dataset(_Plugin):
    """A dataset family reader. ``load(split)`` returns a Samples."""

    #: split names this dataset offers
    splits: Sequence[str] = ("all",)

    def prepare(self) -> None:
        """Optional one-off work before loading (e.g. generate synthetic files). Idempotent."""

    def load(self, split: str) -> Samples:
        raise NotImplementedError


class Task(_Plugin):
    """An evaluation task. ``run(ctx)`` returns a dict with keys:

    metrics   flat dict name -> number (what tables show)
    details   anything JSON-serialisable (per-class numbers, curves, choices made)
    artifacts list of file paths written under ``ctx.out_dir``
    """

    #: metric names shown in summary tables, in order
    headline: Sequence[str] = ()
    #: optional ``finalize(self, results: list[dict], out_dir: Path) -> list[str]``: called once per
    #: (task, dataset) after all units ran, with every encoder's successful result (cross-encoder figures)
    finalize = None

    def check(self, encoder: Encoder, dataset: Dataset) -> None:
        """Raise SpecError-worthy ValueError if this task cannot run on this pair (validation time)."""

    def run(self, ctx) -> dict:
        raise NotImplementedError


@dataclass
class Registration:
    """What a plugin registered under a name."""

    kind: str
    name: str
    cls: type
    origin: str
    description: str = ""
    extra: dict = field(default_factory=dict)
