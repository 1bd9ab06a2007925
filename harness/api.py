"""Everything a plugin may use: Option, Encoder, Dataset, Samples (+ SegSamples, KeypointSamples, PairSamples), Task,
FeatureRequest and TaskContext (what ``Task.run`` receives).

A plugin subclasses one of Encoder/Dataset/Task, declares its ``options`` and registers the class
from a hook (see ``harness.hookspecs``). The core validates a spec's options against ``options``
before any computation, then instantiates the class with the validated values. Optional members are
declared here with their defaults; the core never probes for undeclared attributes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import HarnessError, SpecError, did_you_mean  # noqa: F401 - part of the public API

REQUIRED = object()  # sentinel: an Option without a default must be given in the spec

#: the core's own version: bump it when the core changes what features or results are (transforms,
#: normalisation, the feature layout, how a result is computed from a task's output). It enters every feature
#: cache key and every result key, as a plugin's ``version`` does for what the plugin computes.
CORE_VERSION = "2"  # 2: results carry bootstrap intervals (intervals, per-item npz)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    """Shared behaviour of encoders, datasets, tasks and reports: a name, validated options, an identity."""

    description = ""
    options: dict[str, Option] = {}
    #: what this plugin computes, as a version string: bump it whenever a change alters its output (features,
    #: items, metrics). It is part of the feature cache keys and result keys, so nothing made by the old code
    #: is reused. The golden-output tests (tests/golden) fail until it is bumped and the goldens regenerated.
    version: str = "1"

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
        """What determines this plugin's output; part of cache and result keys. Extend, don't replace."""
        return {"plugin": self.plugin_name, "version": str(self.version), "options": self.opts}


class Encoder(_Plugin):
    """A frozen image encoder.

    Every forward goes through the core's one executor (``harness.execution.Executor``; ``encode`` for a
    single batch): it loads the encoder lazily, places the batch on the encoder's device, normalises it,
    checks the representation names against ``supports``, runs the encoder under ``torch.inference_mode``
    and autocast for ``precision``, and returns float32 tensors. An encoder implements one of two methods:

    ``forward_intermediates(x, indices, final=True) -> (tokens, {i: block_i})`` (timm's name and convention;
    the built-in encoders): ``x`` is a normalised float batch [B,3,H,W] on the encoder's device, H and W
    multiples of ``patch_size``; ``tokens`` [B, prefix_tokens + N, D] is the sequence after the final norm
    (None when ``final`` is False: only blocks were asked for, and blocks after the last one needed may be
    skipped), ``block_i`` [B, prefix_tokens + N, D] the raw output of block i (0-based, no final norm) for
    each i in ``indices``. The executor derives every named representation from these, in one place:
      cls         [B,D]   tokens[:, 0]: the CLS token after the final norm
      mean_patch  [B,D]   tokens[:, prefix_tokens:].mean(1): the patch tokens after the final norm
      tokens      [B,prefix_tokens+N,D] all tokens after the final norm
      block.<i>   [B,prefix_tokens+N,D] block i's raw output
      projected   [B,P]   ``project(tokens)``: the method's projection head (only where it has one)
      pooled      [B,D']  ``pool(tokens)``: the model's own pooler (only where it has one besides its CLS token)
    ``forward(x, reps) -> dict`` name -> tensor, the same names and meanings: for encoders whose
    representations are not views of one token sequence (the ``pixels`` baseline pools the image at another
    resolution than its tokens) and for plugins written before ``forward_intermediates``. The executor uses
    ``forward_intermediates`` when a class defines it, else ``forward``.

    Token layout: ``prefix_tokens`` leading non-patch tokens (1: the CLS token; 0: none), then the N =
    (H/p)*(W/p) patch tokens in row-major order; register tokens are dropped by the encoder.
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
    #: token width D, when known before loading (lets tasks validate e.g. ``num_heads`` at spec time)
    embed_dim: int | None = None
    #: patch size in pixels (inputs must be multiples of it; dense tasks read maps at 1/patch_size)
    patch_size: int | None = None
    #: leading non-patch tokens in ``tokens`` and ``block.<i>`` (1: the CLS token; 0: none)
    prefix_tokens: int = 1
    #: how the encoder was pretrained, as the paper groups methods: "supervised", "contrastive",
    #: "masked image modelling", "contrastive + masked image modelling", "language-image", or None.
    #: Reports compare object- vs part-level results relative to the supervised encoder of a run.
    pretraining: str | None = None
    #: what loading did (source entry, architecture, missing/unexpected/ignored keys); stored in results
    load_report: dict = {}  # replaced, never mutated: subclasses assign a new dict in load()

    def supports(self, rep: str) -> bool:
        if rep.startswith("block."):
            idx = rep.split(".", 1)[1]
            return "blocks" in self.representations and idx.isdigit() and (
                self.num_blocks is None or int(idx) < self.num_blocks)
        return rep in self.representations

    def load(self, device: str = "cpu") -> None:
        """Build the model, load weights and place it on ``device`` in eval mode with gradients off.
        Called by the core once per run, right before the first forward (and again to move it)."""
        raise NotImplementedError

    def forward_intermediates(self, x, indices: Sequence[int], final: bool = True):
        """(tokens after the final norm or None, {i: raw output of block i}); see the class docstring."""
        raise NotImplementedError

    def project(self, tokens):
        """The projection head's output [B, P] from the final-norm ``tokens`` (``projected``)."""
        raise HarnessError(f"encoder '{self.name}' has no projection head")

    def pool(self, tokens):
        """The model's own pooler output [B, D'] from the final-norm ``tokens`` (``pooled``)."""
        raise HarnessError(f"encoder '{self.name}' has no pooler")

    def forward(self, x, reps: Sequence[str]) -> dict:
        """name -> tensor for each name in ``reps``; only for encoders without ``forward_intermediates``."""
        raise NotImplementedError


def _file_stat(path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\tmissing"
    return f"{st.st_size}\t{st.st_mtime_ns}"


class Samples:
    """One split of a dataset: a list of (image, label) items with stable keys.

    Subclasses implement ``image(i)``; the constructor takes keys, labels and class names.
    ``image(i)`` returns the PIL RGB image of the item *before* the task's resize transform
    (for part datasets: the square crop around the keypoint, out-of-image area black).

    ``files``: every file the items are read from (annotation files, images). The default
    ``fingerprint()`` covers their sizes and modification times, so an edited annotation or image can
    never reuse features cached for the old content. Subclasses that derive items from anything else
    extend ``fingerprint()``.
    """

    #: for a Samples derived from a split (slide windows, person crops, ...): what it is, e.g.
    #: "val/slide:512:341"; names it in cache metadata and logs
    view: str = ""

    def __init__(self, keys: Sequence[str], labels, classes: Sequence[str], summary: dict | None = None,
                 files: Iterable = ()):
        self.keys = list(keys)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.summary = dict(summary or {})
        self.files = [str(f) for f in files]
        if len(self.keys) != len(self.labels):
            raise ValueError("keys and labels differ in length")

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, i: int):
        raise NotImplementedError

    def source(self, i: int):
        """(path of the source image, (x0, y0, x1, y1) box) for galleries, or None."""
        return None

    def clusters(self) -> np.ndarray | None:
        """Which source image each item comes from (an int per item), for tasks to pass among their per-item
        arrays as ``clusters`` (the bootstrap by image, spec ``bootstrap_by: image``); None: every item is its
        own image."""
        return None

    def fingerprint(self) -> str:
        """Hash of the item keys and labels and of the size and mtime of ``files`` (not their paths, so
        a moved dataset keeps its cache): part of the feature cache key."""
        h = hashlib.sha256()
        for k, y in zip(self.keys, self.labels.tolist()):
            h.update(f"{k}\t{y}\n".encode())
        for f in self.files:
            h.update(f"{_file_stat(f)}\n".encode())
        return h.hexdigest()


def clusters_of(samples: Samples) -> dict:
    """``{"clusters": int64 [n]}`` for a task's per-item arrays where the items of ``samples`` share source images
    (``Samples.clusters``), else ``{}``: with it the core can resample by image (``bootstrap_by: image``)."""
    found = samples.clusters()
    return {} if found is None else {"clusters": np.asarray(found, dtype=np.int64)}


class SegSamples(Samples):
    """Images with dense label maps, in mmsegmentation's ``img_dir``/``ann_dir`` convention.

    ``mask(i)`` is the label map as a uint8 array [H, W] of class indices 0..C-1 with 255 = ignore,
    after ``reduce_zero_label`` (file value 0 = background/unlabelled -> 255, k -> k-1), decoded with
    pillow (palette PNGs give indices, never colours). ``labels`` are unused (-1).
    ``defaults``: the dataset's official evaluation geometry, ``{"scale": [long, short], "crop": [h, w],
    "stride": [h, w]}`` (mmseg keep-ratio resize, slide crop and stride).
    ``layout``: what mmseg's ``BaseSegDataset`` needs to read the same files (``data_root``,
    ``img_path``, ``seg_map_path``, ``img_suffix``, ``seg_map_suffix``, ``reduce_zero_label``), or None.
    """

    def __init__(self, keys, classes, summary, image_paths: Sequence[str], mask_paths: Sequence[str],
                 reduce_zero_label: bool = True, defaults: dict | None = None, layout: dict | None = None):
        super().__init__(keys, np.full(len(keys), -1), classes, summary, files=[*image_paths, *mask_paths])
        if not (len(image_paths) == len(mask_paths) == len(self.keys)):
            raise ValueError("keys, image_paths and mask_paths differ in length")
        self.image_paths, self.mask_paths = list(image_paths), list(mask_paths)
        self.reduce_zero_label = reduce_zero_label
        self.defaults = dict(defaults or {})
        self.layout = layout

    def image(self, i: int):
        from PIL import Image

        with Image.open(self.image_paths[i]) as im:
            return im.convert("RGB")

    def mask(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.mask_paths[i]) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise HarnessError(f"{self.mask_paths[i]}: label map has mode {im.mode}; expected a single-channel "
                                   f"index PNG (mode L or P)")
            raw = np.asarray(im)
        n = len(self.classes)
        top = int(raw.max()) if raw.size else 0
        limit = n if self.reduce_zero_label else n - 1
        if top > limit and top != 255:
            raise HarnessError(f"{self.mask_paths[i]}: label {top} > {limit} ({n} classes"
                               f"{', 0 = ignored background' if self.reduce_zero_label else ''})")
        raw = raw.astype(np.int64)
        if self.reduce_zero_label:
            out = np.where((raw == 0) | (raw == 255), 255, raw - 1)
        else:
            out = raw
        return out.astype(np.uint8)


class KeypointSamples(Samples):
    """Person instances for top-down keypoint tasks: one item per (image, box).

    ``image(i)`` is the whole source image (PIL RGB); ``box(i)`` the person box (x, y, w, h) in its
    pixels (ground truth or a detection); ``keypoints(i)`` a float array [K, 3] of (x, y, v) with COCO
    visibility v (0 unlabelled, 1 labelled but hidden, 2 visible; zeros for detections);
    ``image_id(i)`` the COCO image id and ``score(i)`` the box score (1.0 for ground truth).
    ``keypoint_names`` (K names), ``flip_pairs`` (0-based left/right index pairs) and
    ``annotation_file`` (the COCO ground truth that ``COCOeval`` scores against) describe the split.
    """

    keypoint_names: Sequence[str] = ()
    flip_pairs: Sequence[tuple[int, int]] = ()
    annotation_file: str | None = None

    def box(self, i: int) -> tuple[float, float, float, float]:
        raise NotImplementedError

    def keypoints(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def image_id(self, i: int) -> int:
        raise NotImplementedError

    def score(self, i: int) -> float:
        return 1.0


@dataclass(frozen=True)
class KeypointPair:
    """One source/target pair of images of a category with matching keypoints (a ``PairSamples`` entry).

    ``source``, ``target``: item indices of the split's images; ``source_kps``, ``target_kps``: float [N, 2]
    (x, y) in the pixels of ``image(source)`` / ``image(target)`` (row n of one matches row n of the other;
    only keypoints annotated in both); ``target_bbox``: (x1, y1, x2, y2) of the target object, whose
    max(h, w) scales the PCK threshold; ``category``: index into ``classes``; ``kp_ids``: the dataset's
    keypoint ids of the rows; ``viewpoint``: SPair's viewpoint-variation level 0/1/2 (None elsewhere);
    ``name``: the pair's name in its dataset."""

    source: int
    target: int
    source_kps: np.ndarray
    target_kps: np.ndarray
    target_bbox: tuple
    category: int
    kp_ids: tuple = ()
    viewpoint: int | None = None
    name: str = ""


class PairSamples(Samples):
    """Images for keypoint correspondence: the items are the split's distinct images (``labels`` = category
    index into ``classes``; ``image(i)`` the PIL RGB image, keypoints are in its pixels), ``pairs`` the
    ``KeypointPair`` list evaluated on them. The fingerprint covers the pairs, so a changed annotation never
    reuses a result."""

    def __init__(self, keys, labels, classes, summary, pairs: Sequence[KeypointPair], files: Iterable = ()):
        super().__init__(keys, labels, classes, summary, files)
        self.pairs = list(pairs)
        for p in self.pairs:
            if not (0 <= p.source < len(self.keys) and 0 <= p.target < len(self.keys)):
                raise ValueError(f"pair {p.name!r} refers to an image outside the split")

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of ``image(i)``; datasets that know it without decoding override this."""
        return self.image(i).size

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        for p in self.pairs:
            h.update(f"{p.name}\t{p.source}\t{p.target}\t{p.category}\t{p.viewpoint}\t{p.kp_ids}\t"
                     f"{tuple(float(v) for v in p.target_bbox)}\n".encode())
            for a in (p.source_kps, p.target_kps):
                h.update(np.ascontiguousarray(np.asarray(a, dtype="<f8")).tobytes())
        return h.hexdigest()


class Dataset(_Plugin):
    """A dataset family reader. ``load(split)`` returns a Samples."""

    #: split names this dataset offers
    splits: Sequence[str] = ("all",)
    #: the level its labels name, e.g. "object" or "part" (None: neither or both); any name the dataset
    #: chooses, the core gives it no meaning. Datasets of one ``hierarchy`` at different levels (e.g.
    #: ADE20K-Object and ADE20K-Part) are drawn side by side by reports (the paper's Fig. 7).
    level: str | None = None
    hierarchy: str | None = None
    #: every level of the dataset's family, coarse to fine (e.g. ("object", "part", "subpart")); carried in
    #: results (``dataset_levels``) so reports can order levels. Empty: not declared.
    levels: Sequence[str] = ()

    def prepare(self) -> None:
        """Optional one-off work before loading (e.g. generate synthetic files). Idempotent."""

    def check_split(self, split: str) -> None:
        """Cheap validation-time check that ``split`` can be loaded (its annotation files exist, ...);
        raise HarnessError or ValueError naming the file. Called for every split a task requests."""
        if split not in self.splits:
            raise ValueError(f"dataset '{self.name}' has no split '{split}' (it has: {', '.join(self.splits)})")

    def load(self, split: str) -> Samples:
        raise NotImplementedError

    def serve(self, samples_type: type) -> "Dataset":
        """The dataset as a task that reads ``samples_type`` (its ``Task.samples_type``) sees it. A dataset whose
        one entry serves several kinds of task (part crops to retrieval and probes, label maps to segmentation)
        returns a variant whose ``load`` gives that kind, the same object on every call; the default is the
        dataset itself. The core asks this once per unit, before validating and running it."""
        return self


@dataclass(frozen=True)
class FeatureRequest:
    """Frozen features a task will read: the runner extracts every request of a dataset before its units
    run, in one pass over the data for all encoders that need it (and sharded over ranks under torchrun).

    ``view``: optional deterministic function Samples -> Samples (e.g. slide windows, person crops);
    its result's ``fingerprint()`` keys the cache. ``transform``: a transform name, or a function of the
    (viewed) Samples returning one (e.g. a pad size that depends on the dataset's crop)."""

    split: str
    reps: tuple[str, ...]
    transform: "str | Callable[[Samples], str]" = "resize:224"
    view: Callable[[Samples], Samples] | None = None


class Task(_Plugin):
    """An evaluation task. ``run(ctx)`` (ctx: a TaskContext) returns a dict with keys:

    metrics   flat dict name -> number (what tables show)
    details   anything JSON-serialisable (per-class numbers, curves, choices made)
    artifacts list of file paths written under ``ctx.out_dir``
    per_item  optional: name -> numpy array of per-item data the headline metric is computed from (e.g.
              the AP of every query); stored in ``results/<unit>.npz`` beside the result JSON. With
              ``items`` (the keys of the n items the metric averages over) and ``resample`` below, the core
              gives every metric ``resample`` returns a bootstrap interval (``harness.bootstrap``)
    warnings  optional: list of one-line messages for the user (stored in the result, shown by the report)

    The result file's fields are declared in ``harness.results.RESULT_SCHEMA`` (docs/results.md).
    """

    #: metric names shown in summary tables, in order
    headline: Sequence[str] = ()
    #: the Samples class the task reads: Samples (labelled items: images, crops), SegSamples (label maps),
    #: KeypointSamples (person boxes); passed to ``Dataset.serve``
    samples_type: type = Samples
    #: True: ``run`` is called on every rank of a torchrun job and shares its work with ``ctx.shard`` /
    #: ``ctx.gather``; only rank 0's return value is kept. False: only rank 0 runs it.
    distributed: bool = False
    #: True: what ``run`` computes depends on ``ctx.seed`` (a trained head). The task then accepts the option
    #: ``seeds: [0, 1, 2]``: the core runs it once per seed (``ctx.seed`` set to it, artifacts under
    #: ``seed<s>/``), reports each metric's mean over the seeds (and their values and standard deviation) and
    #: the bootstrap interval of the mean.
    seeded: bool = False

    @classmethod
    def option_schema(cls) -> dict[str, Option]:
        schema = super().option_schema()
        if cls.seeded:
            schema["seeds"] = Option(list, None, "train once per seed (e.g. [0, 1, 2]) and report the mean, the "
                                     "standard deviation and the bootstrap interval of the mean; default: the "
                                     "spec's seed, once", nullable=True, check=_check_seeds)
        return schema

    def resample(self, per_item: dict, counts: np.ndarray) -> dict:
        """The metrics recomputed on resamples of the items: ``per_item`` as ``run`` returned it (numpy arrays),
        ``counts`` an int32 matrix [b, n] (row r: how often each of the n ``items`` is drawn in resample r).
        Returns {metric name: float array [b]}, vectorised over the rows. A row of ones is the data itself and
        must give exactly the value ``run`` reported (the runner checks it; the tests check it for every
        built-in task). The default resamples nothing: no intervals."""
        return {}

    def requests(self, encoder: Encoder, dataset: Dataset) -> list[FeatureRequest]:
        """The features ``run`` will read (extracted up front, decoded once for all encoders). Features
        read without a request are computed on first use instead."""
        return []

    def run(self, ctx: "TaskContext") -> dict:
        raise NotImplementedError

    def finalize(self, results: list[dict], out_dir: Path) -> list[str]:
        """Called once per (task, dataset) after all its units ran, with every encoder's successful
        result (cross-encoder figures); returns the paths written."""
        return []


def _check_seeds(value) -> str | None:
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value) \
            or len(set(value)) != len(value):
        return "expected a non-empty list of distinct non-negative integers, e.g. [0, 1, 2]"
    return None


class Report(_Plugin):
    """A report across the units of a run (e.g. the paper's Fig. 7, object vs part), registered with
    ``register_reports``. It runs after every run and on ``harness report DIR``, receives every result (the
    dicts of ``harness.results``, failed ones included) and draws only what the results support (nothing at
    all when they hold nothing for it). Reports have no options."""

    def render(self, results: list[dict], fmt: str = "github") -> str:
        """Text appended to the terminal table and report.md (a tabulate ``fmt``); '' for nothing."""
        return ""

    def write(self, results: list[dict], out_dir: Path, figures: bool = True) -> dict[str, Path]:
        """Write this report's files under ``out_dir`` (JSON, and PNG figures when ``figures``); returns
        {name: path} of what it wrote."""
        return {}


class TaskContext:
    """What ``Task.run`` receives: the unit's encoder, dataset and output folder, and the feature engine.

    Members: ``encoder``, ``dataset``, ``task``, ``out_dir`` (Path, this unit's artifact folder),
    ``device`` ("cpu", "cuda:0", ...), ``seed``, ``rank`` and ``world_size`` (1 outside torchrun),
    ``forwards`` (encoder forwards this unit caused). ``harness.testing.FakeContext`` implements it
    for tests.
    """

    encoder: Encoder
    dataset: Dataset
    task: Task
    out_dir: Path
    device: str = "cpu"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    forwards: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def samples(self, split: str) -> Samples:
        """The dataset's split (loaded once per run)."""
        raise NotImplementedError

    def features(self, source: "str | Samples", reps: Sequence[str], transform: str = "resize:224") -> dict:
        """name -> array [N, ...] of frozen features of every item of ``source`` (a split name or a
        Samples, e.g. a view), in item order: float32 vectors, float16 memory-mapped token maps. Cached."""
        raise NotImplementedError

    def images(self, source: "str | Samples", indices: Sequence[int], transform: str = "resize:224"):
        """A normalised float batch [B,3,H,W] on the CPU (for code that must re-encode)."""
        raise NotImplementedError

    def encode(self, x, reps: Sequence[str]) -> dict:
        """One frozen forward of a normalised batch through the executor (counted in ``forwards``)."""
        raise NotImplementedError

    def stream(self, source: "str | Samples", reps: Sequence[str], transform: str = "resize:224",
               indices: Sequence[int] | None = None, batch: int | None = None):
        """Features computed on the fly and not cached (the streaming modes that re-encode every epoch):
        yields (item indices, {name: float32 tensor on the device}) for ``indices`` (default all)."""
        raise NotImplementedError

    def progress(self, iterable, desc: str = "", total: int | None = None, **kw):
        """Wrap a long loop: a bar on a terminal, periodic one-line progress in logs."""
        return iterable

    def log(self, message: str) -> None:
        """One line to the run's log (rank 0 only)."""

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``range(n)`` (all of it outside torchrun)."""
        per = -(-n // max(1, self.world_size))
        return range(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` outside torchrun)."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank (no-op outside torchrun)."""


@dataclass
class Registration:
    """What a plugin registered under a name."""

    kind: str
    name: str
    cls: type
    origin: str
    description: str = ""
    extra: dict = field(default_factory=dict)


# -- the rest of the public API: helpers that live in their own core modules ------------------------------
from . import transforms  # noqa: E402 - named transforms: parse, pixels, apply
from .compat import ensure_mmseg, import_timm, import_transformers  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .io import DiskFullError, dumps, jsonable, write_json_atomic, write_text_atomic  # noqa: E402
from .progress import progress  # noqa: E402
from .results import RESULT_SCHEMA, ci95, headline_value, load_results, read_result  # noqa: E402
from .threads import available_cores, default_threads  # noqa: E402

# modules that themselves import this one: resolved on first use (PEP 562). The last group is for benchmarks
# and tools that measure the machinery itself (bench/): the engine, its loader and the cache.
_LAZY = {"Executor": "harness.execution", "encode": "harness.execution", "validate_options": "harness.spec",
         "Plugins": "harness.plugins", "build_plan": "harness.spec", "run_spec": "harness.runner",
         "FeatureCache": "harness.cache", "default_cache_dir": "harness.cache", "array_checksum": "harness.cache",
         "taking_turns": "harness.cache", "pid_alive": "harness.cache",
         "FeatureEngine": "harness.features", "default_workers": "harness.loading", "load_batches": "harness.loading",
         "paired_difference": "harness.compare", "paired_differences": "harness.compare",
         "with_interval": "harness.report", "error_bars": "harness.report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.api' has no attribute '{name}'")


__all__ = ["available_cores", "default_threads", "CORE_VERSION", "IMAGENET_MEAN", "IMAGENET_STD", "REQUIRED",
           "Dataset", "DiskFullError", "Encoder", "FeatureRequest", "HarnessError", "KeypointPair", "KeypointSamples",
           "Option", "PairSamples", "Registration", "Report", "RESULT_SCHEMA",
           "Samples", "SegSamples", "SpecError", "Task", "TaskContext", "did_you_mean", "dumps", "ensure_mmseg",
           "ci95", "clusters_of", "file_sha256", "headline_value", "hookimpl", "import_timm", "import_transformers", "jsonable",
           "load_results", "progress", "read_result", "transforms", "write_json_atomic", "write_text_atomic",
           *_LAZY]
