"""Synthetic part dataset (``synthetic_parts``): procedurally drawn images written to disk in the
published CUB-200-2011, COCO and mmseg formats, then read back through the real ``cub_parts`` /
``coco_parts`` / ``coco_objects`` / ``coco_persons`` / folder-segmentation loaders.

One module per concern: ``synthetic_drawing`` (shapes, background, noise), the families
``synthetic_birds`` (four species of birds, the default ``kind``) and ``synthetic_objects`` (classes =
configurations of parts), ``synthetic_families`` (what each family writes in each format) and
``synthetic_formats`` (the writers). This module is the plugin: where a generation lives and when it
is made, and what each ``format`` reads back.

``prepare()`` generates ``root`` if it is missing or was made with other parameters: it writes into a
temporary sibling folder and renames it into place, with ``synthetic.json`` recording the parameters
(the marker). Everything is a pure function of the parameters.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

from harness.api import Dataset, HarnessError, Option, hookimpl

from . import coco as coco_mod
from . import cub as cub_mod
from ._common import expand, positive
from .coco_persons import read_persons
from .cub_pairs import read_cub_pairs
from .label_maps import check_label_maps
from .part_crops import crop_samples
from .seg_folders import folder_samples
from .synthetic_families import FAMILIES, family
from .synthetic_formats import generate

MARKER = "synthetic.json"


def params(num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0, kind: str = "birds") -> dict:
    """The generation's parameters, as its marker records them."""
    out = {"generator": "partbench synthetic_parts", "version": family(kind, hue_jitter).version,
           "num_images": num_images, "image_size": image_size, "seed": seed, "hue_jitter": float(hue_jitter)}
    if kind != "birds":  # birds keep their original marker, so existing generations stay valid
        out["kind"] = kind
    return out


def is_generated(root: Path, *args) -> bool:
    """Whether ``root`` holds the generation of these parameters (those of ``params``)."""
    try:
        return json.loads((root / MARKER).read_text()) == params(*args)
    except (OSError, ValueError):
        return False


def ensure(root: Path, num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0,
           kind: str = "birds") -> Path:
    """Generate ``root`` unless it already holds this exact generation (atomic: temp dir + rename)."""
    want = params(num_images, image_size, seed, hue_jitter, kind)
    marker = root / MARKER
    if is_generated(root, num_images, image_size, seed, hue_jitter, kind):
        return root
    if not marker.is_file() and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise HarnessError(f"{root}: exists and is not a synthetic_parts folder (no {MARKER}); "
                           "refusing to overwrite it, choose another 'root'")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, num_images, image_size, seed, hue_jitter, kind)
        (tmp / MARKER).write_text(json.dumps(want, indent=1))
        old = None
        if root.exists():  # a stale generation (other parameters): swap it out, then delete it
            old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # another process won the race; accept its result if it is the same generation
            if not (marker.is_file() and json.loads(marker.read_text()) == want):
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_root(num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0, kind: str = "birds") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "partbench" / "synthetic_parts"
    version = family(kind, hue_jitter).version
    if kind != "birds":
        return base / f"{kind}-n{num_images}-s{image_size}-seed{seed}-v{version}"
    hue = f"-hue{hue_jitter:g}" if hue_jitter else ""
    return base / f"n{num_images}-s{image_size}-seed{seed}{hue}-v{version}"


SEG_FORMATS = {"seg_parts": "parts", "seg_objects": "objects"}


def read_objects(coco_root: Path, split: str):
    """Every object of the split as a square crop around its box (the coco_objects reader with no box
    dropped); ``all`` = train2017 followed by val2017."""
    items, summary, classes = [], {"sets": {}}, None
    for s in ("train", "test") if split == "all" else (split,):
        ann, img = coco_mod.locate(coco_root, None, None, "instances", s)
        its, cls, summ = coco_mod.read_coco_objects(ann, img, 1.0, math.inf)
        if classes is not None and cls != classes:
            raise HarnessError(f"{ann}: categories differ from the train2017 file's")
        classes = cls
        items += its
        summary["sets"][coco_mod.SET_OF_SPLIT[s]] = summ
    per_class = Counter(lab for _, lab, _, _ in items)
    summary.update(kept=len(items), per_class={classes[c]: per_class.get(c, 0) for c in range(len(classes))})
    files = [v["annotation_file"] for v in summary["sets"].values()]
    return items, classes, summary, files


FORMATS = ["cub", "coco", "coco_objects", "objects", "keypoints", "cub_pairs", *SEG_FORMATS]
#: format cub_pairs: the pairs drawn from the generated CUB files (the cub_pairs reader's count and seed)
SYNTHETIC_PAIRS, SYNTHETIC_PAIR_SEED = 100, 0
PART_FORMATS = ("cub", "coco")


class SyntheticParts(Dataset):
    """Procedural part/object dataset written in CUB / COCO / mmseg formats and read back by the real loaders."""

    options = {
        "root": Option(str, None, "where to write the generated tree (default: "
                       "$XDG_CACHE_HOME/partbench/synthetic_parts/<parameters>)", path="dir",
                       must_exist=False, nullable=True),
        "kind": Option(str, "birds", "generator family: birds (four species, fixed part colours) or objects "
                       "(class = which part types sit where; every part's colour and texture random)",
                       choices=list(FAMILIES)),
        "num_images": Option(int, 80, "number of images", check=positive),
        "image_size": Option(int, 192, "image side in pixels",
                             check=lambda v: None if 64 <= v <= 2048 else "must be in [64, 2048]"),
        "seed": Option(int, 0, "generation seed"),
        "hue_jitter": Option(float, 0.0, "kind birds: per-part random hue rotation, as a fraction of the colour "
                             "circle (0: parts keep their colours; 1: colour carries no part information, only "
                             "shape and texture do)", check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]"),
        "format": Option(str, "cub", "what to read back: part crops (cub, coco = person_keypoints file), object "
                         "crops (coco_objects = instances boxes with the coco_objects square rule; objects = "
                         "every object, all = train+val), or segmentation maps (seg_parts, seg_objects: "
                         "mmseg img_dir/ann_dir, splits train/val), or keypoints (one box per object with its "
                         "COCO-format keypoints, for pose), or cub_pairs (100 image pairs of one species with "
                         "their keypoints, for correspondence)", choices=FORMATS),
        "keypoints": Option(list, None, "formats cub/coco: keypoint ids in the chosen format (default: birds "
                            "CUB 11,12,9,14 / COCO 1,11,16; objects 2,3,4,5 = disc, ring, bar, tee)",
                            nullable=True, check=lambda v: None if v is None else cub_mod._check_ids(v)),
        "distance": Option(str, "within_person", "COCO distance rule (see coco_parts)",
                           choices=["within_person", "official_annid"]),
    }

    # the part crops and part masks are part-level, the object boxes and object masks object-level: the
    # report pairs them (Fig. 7) within this hierarchy
    levels = ("object", "part")

    @property
    def hierarchy(self) -> str:  # type: ignore[override]
        return f"synthetic_{self._o('kind', 'birds')}"  # the birds and the objects are separate pairs

    @property
    def level(self) -> str | None:  # type: ignore[override]
        fmt = self.opts.get("format")
        if fmt in ("keypoints", "cub_pairs"):  # whole-object poses, image pairs: neither level
            return None
        return "object" if fmt in ("coco_objects", "objects", "seg_objects") else "part"

    @property
    def splits(self):  # type: ignore[override]
        return ("train", "val") if self.opts.get("format") in SEG_FORMATS else ("all", "train", "test")

    def _o(self, key, default):
        v = self.opts.get(key)
        return default if v is None else v

    def _params(self) -> tuple:
        return (self._o("num_images", 80), self._o("image_size", 192), self._o("seed", 0),
                self._o("hue_jitter", 0.0), self._o("kind", "birds"))

    def _root(self) -> Path:
        r = self.opts.get("root")
        return expand(r) if r else default_root(*self._params())

    def validate(self) -> None:
        family(self._o("kind", "birds"), self._o("hue_jitter", 0.0))
        fmt = self._o("format", "cub")
        if self.opts.get("keypoints") is not None and fmt not in PART_FORMATS:
            raise ValueError(f"option 'keypoints' applies to formats {', '.join(PART_FORMATS)}, not {fmt!r}")

    def prepare(self) -> None:
        ensure(self._root(), *self._params())

    def check_split(self, split: str) -> None:
        """The masks of a generated seg format go through the label-map check every seg dataset gets (a
        generation that does not exist yet is written by ``prepare`` at run time)."""
        super().check_split(split)
        fmt = self._o("format", "cub")
        if fmt in SEG_FORMATS and is_generated(self._root(), *self._params()):
            samples = self._seg(self._root(), SEG_FORMATS[fmt], split)
            check_label_maps(samples, f"{self.name} {split}: checking label maps")

    def load(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        try:
            self.validate()
        except ValueError as exc:
            raise HarnessError(f"dataset '{self.name}': {exc}") from None
        self.prepare()
        root, fmt, kps = self._root(), self._o("format", "cub"), self.opts.get("keypoints")
        fam = FAMILIES[self._o("kind", "birds")]
        files = [root / MARKER]
        if fmt in SEG_FORMATS:
            return self._seg(root, SEG_FORMATS[fmt], split)
        if fmt == "keypoints":  # top-down pose: one box per object with its COCO-format keypoints
            samples = read_persons(*coco_mod.locate(root / "coco", None, None, "person_keypoints", split))
            samples.summary.update(split=split, format=fmt, root=str(root))
            return samples
        if fmt == "cub_pairs":  # correspondence: pairs of one species' images with their keypoints
            samples = read_cub_pairs(root / "CUB_200_2011", split, SYNTHETIC_PAIRS, SYNTHETIC_PAIR_SEED)
            samples.summary.update(format=fmt, root=str(root))
            samples.files.append(str(root / MARKER))
            return samples
        if fmt == "cub":
            err = cub_mod._check_ids(kps) if kps is not None else None
            if err:
                raise HarnessError(f"dataset '{self.name}': option 'keypoints': {err}")
            items, classes, summary = cub_mod.read_cub_parts(root / "CUB_200_2011", list(kps or fam.cub_keypoints),
                                                             split)
        elif fmt == "coco":
            err = coco_mod._check_ids(kps) if kps is not None else None
            if err:
                raise HarnessError(f"dataset '{self.name}': option 'keypoints': {err}")
            ann, img = coco_mod.locate(root / "coco", None, None, "person_keypoints", split)
            items, classes, summary = coco_mod.read_coco_parts(ann, img, list(kps or fam.coco_keypoints),
                                                               self._o("distance", "within_person"))
        elif fmt == "coco_objects":
            ann, img = coco_mod.locate(root / "coco", None, None, "instances", split)
            items, classes, summary = coco_mod.read_coco_objects(ann, img, 32.0, 1.25)
        else:  # objects
            items, classes, summary, ann_files = read_objects(root / "coco", split)
            files += ann_files
        summary.update(split=split, format=fmt, root=str(root))
        if fam.kind != "birds":
            summary["kind"] = fam.kind
        return crop_samples(items, classes, summary, files=files)

    def _seg(self, root: Path, kind: str, split: str):
        """The part or object masks as an mmseg folder dataset; one window covers the whole image."""
        seg = root / "seg" / kind
        classes = [c.strip() for c in (seg / "classes.txt").read_text().splitlines() if c.strip()][1:]
        side = self._o("image_size", 192)
        crop = max(16, side // 16 * 16)  # a multiple of the usual patch sizes
        defaults = {"scale": [side, side], "crop": [crop, crop], "stride": [crop, crop]}
        samples = folder_samples(root, seg / "img_dir" / split, seg / "ann_dir" / split, classes, defaults, split)
        samples.summary.update(format=f"seg_{kind}", kind=self._o("kind", "birds"), root=str(root))
        samples.files.append(str(root / MARKER))
        return samples


@hookimpl
def register_datasets(register):
    register("synthetic_parts", SyntheticParts)
