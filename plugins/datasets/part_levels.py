"""Part datasets with several levels (object, part, subpart) whose one entry serves every task kind: a public
helper for dataset plugins (PartImageNet, PACO, SPIN, Pascal-Part-116, ADE20K-Part-234).

``LevelledDataset`` takes ``root`` and ``level`` (one of the family's ``levels``, coarse to fine) and answers
``Dataset.serve``: a task that reads ``SegSamples`` (``linear_seg``) gets the level's label maps, every other
task (retrieval, probes, galleries) gets crops of the level's regions. Crops follow the rules of the paper's
code for CUB and COCO (``part_crops``, ``coco.square_box``):

- part-like levels (``point_levels``): each region's centroid is its keypoint; d_min is the distance to the
  nearest other region centroid of the same group (the image, or for instance annotations the object the
  part belongs to: COCO's ``within_person``); kept when 20 < d_min/2 < 1000; square crop of half-side
  round(d_min/4), black outside the image;
- object levels: the square of side max(w, h) around the region's box (``coco_objects``), boxes whose
  shorter side is under ``MIN_OBJECT_SIDE`` pixels dropped.

A region of a label map is every pixel of one value (instances of a class in one image are merged); a region
of an instance file is one annotation (polygons or RLE, decoded with pycocotools). Subclasses implement
``map_levels`` (levels that have label maps), ``map_samples(split)`` (``SegSamples``) and
``read_items(split)`` -> ``(items, classes, summary, files)``; the split ``all`` is every official split's
items together (crops only; segmentation reads one split at a time).
"""
from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.api import Dataset, HarnessError, Option, Samples, SegSamples

from ._common import expand
from .coco import load_coco, square_box
from .label_maps import check_label_maps
from .part_crops import CROP_RULE_COUNTERS, crop_samples, half_distances, kept_crops
from .seg_folders import pair_files
from .written_maps import decode, paint_regions, written_maps

#: object crops: boxes whose shorter side is smaller are dropped (coco_objects' default min_size)
MIN_OBJECT_SIDE = 32.0
#: how far (pixels) a polygon vertex may lie outside its image before the file is rejected (edge rounding)
EDGE_TOLERANCE = 1.0


def level_option(levels: Sequence[str], default: str) -> dict[str, Option]:
    """The ``level`` option of a family with ``levels`` (coarse to fine)."""
    return {"level": Option(str, default, f"which level's labels: {', '.join(levels)} (coarse to fine)",
                            choices=list(levels))}


class LevelledDataset(Dataset):
    """Base of the multi-level part datasets (see the module docstring)."""

    levels: Sequence[str] = ("object", "part")
    #: the level used when the spec gives none (the finest part level)
    default_level: str = "part"
    #: levels cropped around region centroids with the keypoint rule; the others are cropped around boxes
    point_levels: Sequence[str] = ("part", "subpart")
    base_splits: Sequence[str] = ("train", "val", "test")
    #: where the release is published (named in missing-file errors)
    source: str = ""
    options = {"root": Option(str, help="the release's folder", path="dir"),  # subclasses say which
               **level_option(levels, default_level)}  # a family with other levels declares its own

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.level = options.get("level") or self.default_level
        self.serving = "items"
        self._variants: dict = {"items": self}
        #: what read_items gave per split, shared by the variants: validation and the run read each file once
        self._read: dict = {}

    # -- what a task is served ------------------------------------------------------------------------
    def serve(self, samples_type: type) -> Dataset:
        kind = "maps" if issubclass(samples_type, SegSamples) else "items"
        if kind not in self._variants:
            variant = copy.copy(self)
            variant.serving = kind
            self._variants[kind] = variant  # the dict is shared: every variant answers with the same objects
        return self._variants[kind]

    @property
    def splits(self):  # type: ignore[override]
        return tuple(self.base_splits) if self.serving == "maps" else (*self.base_splits, "all")

    def map_levels(self) -> Sequence[str]:
        return ()

    def root(self) -> Path:
        return expand(self.opts["root"])

    def missing(self, path: Path, what: str) -> HarnessError:
        """The one-line error for a file or folder of the download that is not there."""
        return HarnessError(f"{path}: {what} not found (dataset '{self.name}', {type(self).__name__} "
                            f"release{'; download: ' + self.source if self.source else ''})")

    def _need_maps(self) -> None:
        if self.level not in self.map_levels():
            have = ", ".join(self.map_levels()) or "none"
            raise HarnessError(f"dataset '{self.name}': no label maps at level '{self.level}' in this release "
                               f"(levels with label maps: {have}); segmentation cannot run on it")

    def check_split(self, split: str) -> None:
        super().check_split(split)
        if self.serving == "maps":
            self._need_maps()
            check_label_maps(self.map_samples(split), f"{self.name} {split}: checking label maps")
        else:
            for s in (self.base_splits if split == "all" else (split,)):
                self.check_items(s)

    def check_items(self, split: str) -> None:
        """Validation of the files the crops of ``split`` are read from (default: reading them)."""
        self.items(split)

    def items(self, split: str) -> tuple[list, list[str], dict, list]:
        """``read_items(split)``, once per dataset entry."""
        if split not in self._read:
            self._read[split] = self.read_items(split)
        return self._read[split]

    def load(self, split: str) -> Samples:
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of "
                               f"{', '.join(self.splits)})")
        if self.serving == "maps":
            self._need_maps()
            return self.map_samples(split)
        names = self.base_splits if split == "all" else (split,)
        parts = [self.items(s) for s in names]
        items = [it for p in parts for it in p[0]]
        classes = parts[0][1]
        for s, p in zip(names, parts):
            if p[1] != classes:
                raise HarnessError(f"dataset '{self.name}': split '{s}' lists other classes than split "
                                   f"'{names[0]}' ({len(p[1])} against {len(classes)}); its crops cannot share labels")
        summary = merge_summaries([p[2] for p in parts]) if len(parts) > 1 else dict(parts[0][2])
        per_class = Counter(lab for _, lab, _, _ in items)
        summary.update(split=split, level=self.level, kept=len(items),
                       per_class={classes[c]: per_class.get(c, 0) for c in range(len(classes))})
        return crop_samples(items, classes, summary, files=[f for p in parts for f in p[3]])

    def instances(self, path: Path, unlisted: Sequence[dict] = ()):
        """The COCO object of an instance file, read once per dataset entry and checked with
        ``check_instances`` against its categories (``unlisted`` when the file lists none)."""
        key = ("instances", str(path))
        if key not in self._read:
            coco = load_coco(path)
            cats = coco.dataset.get("categories") or list(unlisted)
            check_instances(path, coco.dataset, {c.get("id") for c in cats})
            self._read[key] = coco
        return self._read[key]

    def map_crop_items(self, split: str, background: int | None = None, **summary) -> tuple[list, list[str], dict, list]:
        """``read_items`` from the split's label maps (checked first): every value but ``background`` (the last
        class, left out of the crops' classes) and 255 is a region, labelled by its value."""
        samples = self.map_samples(split)
        check_label_maps(samples, f"{self.name} {split}: checking label maps")
        names = [c for v, c in enumerate(samples.classes) if v != background]
        items = map_items(samples, {v: v for v in range(len(names))}, self.level in self.point_levels, summary)
        return items, names, summary, samples.mask_paths

    def maps_ident(self, split: str, **rule) -> dict:
        """What identifies maps this entry writes (``written_maps``' ``ident``): plugin, version, level, split
        and how they are made."""
        return {"plugin": type(self).__name__, "version": self.version, "level": self.level, "split": split, **rule}

    def painted_maps(self, path: Path, coco, value_of, image_file, fill: int, order: str, classes: Sequence[str],
                     split: str, defaults: dict, rule: str, every_image: bool = False) -> SegSamples:
        """``written_maps`` of the instance file ``path`` (its ``coco``): each annotation with a mask painted with
        ``value_of(annotation)`` (None: left out), in id order, over ``fill`` (``written_maps.paint_regions``:
        ``order`` ``file`` or ``area``); one map per image with something painted (per image of the file with
        ``every_image``). ``rule`` says how, in the maps' identity and summary."""
        regions: dict = {}
        for iid, anns in coco.imgToAnns.items():
            kept = [(v, a["segmentation"]) for a in sorted(anns, key=lambda a: a["id"])
                    if a.get("segmentation") and (v := value_of(a)) is not None]
            if kept:
                regions[iid] = kept
        images = [coco.imgs[i] for i in sorted(coco.imgs if every_image else regions)]
        entries = [(Path(im["file_name"]).stem, Path(image_file(im)), im["height"], im["width"]) for im in images]

        def paint(i: int):
            im = images[i]
            try:
                return paint_regions(im["height"], im["width"], fill, regions.get(im["id"], []), order)
            except (ValueError, TypeError, KeyError, IndexError) as exc:  # pycocotools on a malformed mask
                raise HarnessError(f"{path}: image {im['id']} ({im['file_name']}): a mask pycocotools cannot "
                                   f"decode ({type(exc).__name__}: {exc})") from None

        return written_maps(self.maps_ident(split, fill=fill, order=order, rule=rule), [path], entries, paint,
                            classes, split, defaults, {"rule": rule},
                            desc=f"{self.name} {split}: writing {self.level} label maps")

    # -- subclasses -----------------------------------------------------------------------------------
    def map_samples(self, split: str) -> SegSamples:
        raise NotImplementedError

    def read_items(self, split: str) -> tuple[list, list[str], dict, list]:
        raise NotImplementedError


def merge_summaries(summaries: list[dict]) -> dict:
    """Counters added, other values listed per split."""
    out: dict = {}
    for s in summaries:
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            elif k != "per_class":
                out.setdefault(k, [])
                out[k].append(v)
    return out


# -- crops ----------------------------------------------------------------------------------------------
def point_crops(path: str, size, entries, counts: Counter) -> list:
    """Crop items of one group of regions by the keypoint rule: ``entries`` are (label, x, y, key) with (x, y)
    the region centroid; returns (key, label, path, box) items."""
    if not entries:
        return []
    halves = half_distances(np.array([[x, y] for _, x, y, _ in entries])).tolist()
    return [(key, label, path, box) for (label, _, _, key), box in kept_crops(entries, halves, counts, lambda: size)]


def box_crops(path: str, entries, counts: Counter) -> list:
    """Object crop items: ``entries`` are (label, x, y, w, h, key); the square around each box."""
    out = []
    for label, x, y, w, h, key in entries:
        if min(w, h) < MIN_OBJECT_SIDE:
            counts["dropped_small"] += 1
            continue
        counts["kept"] += 1
        out.append((key, label, path, square_box(x, y, w, h)))
    return out


def crop_counters(counts: Counter, point: bool) -> dict:
    keys = (*CROP_RULE_COUNTERS,) if point else ("dropped_small",)
    return {k: counts[k] for k in keys}


def regions(mask: np.ndarray, skip: set) -> dict[int, tuple]:
    """{value: (centroid x, centroid y, box x, y, w, h)} of every value of a label map but ``skip``."""
    out = {}
    for v in np.unique(mask).tolist():
        if v in skip:
            continue
        ys, xs = np.nonzero(mask == v)
        x0, y0 = int(xs.min()), int(ys.min())
        out[int(v)] = (float(xs.mean()), float(ys.mean()), x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0)
    return out


def map_items(samples: SegSamples, label_of: dict[int, int], point: bool, summary: dict) -> list:
    """Crop items of the regions of every label map of ``samples`` (values in ``label_of``; the others, e.g.
    background and 255, are not regions); one group per image. Fills ``summary``'s counters."""
    counts: Counter = Counter()
    items = []
    skip = {v for v in range(256) if v not in label_of}
    for i in range(len(samples)):
        mask = samples.mask(i)
        path, stem = samples.image_paths[i], samples.keys[i]
        found = regions(mask, skip)
        counts["regions"] += len(found)
        size = (mask.shape[1], mask.shape[0])
        if point:
            items += point_crops(path, size, [(label_of[v], r[0], r[1], f"{stem}#{v}") for v, r in found.items()],
                                 counts)
        else:
            items += box_crops(path, [(label_of[v], *r[2:], f"{stem}#{v}") for v, r in found.items()], counts)
    summary.update(images=len(samples), regions=counts["regions"], **crop_counters(counts, point))
    return items


def label_map_samples(img_dir: Path, ann_dir: Path, classes: Sequence[str], split: str, defaults: dict,
                      img_suffix: str = ".jpg") -> SegSamples:
    """SegSamples of a folder pair whose maps hold class indices 0..C-1 and 255 = ignore (no zero reduction),
    with the layout mmseg reads the same files by."""
    stems, images, labels = pair_files(img_dir, ann_dir, img_suffix, ".png")
    root = Path(os.path.commonpath([str(img_dir), str(ann_dir)]))
    summary = {"split": split, "images": len(stems), "classes": len(classes), "image_dir": str(img_dir),
               "label_dir": str(ann_dir)}
    layout = {"data_root": str(root), "img_path": str(img_dir.relative_to(root)),
              "seg_map_path": str(ann_dir.relative_to(root)), "img_suffix": img_suffix, "seg_map_suffix": ".png",
              "reduce_zero_label": False}
    return SegSamples(stems, list(classes), summary, images, labels, reduce_zero_label=False,
                      defaults=dict(defaults), layout=layout)


def value_classes(names: dict[int, str], background: int | None) -> list[str]:
    """Class names by label-map value 0..max: ``names`` {value: name}, ``background`` named 'background',
    values in between that name nothing 'unused_<v>'."""
    top = max([*names, *([background] if background is not None else [])])
    return [names.get(v, "background" if v == background else f"unused_{v}") for v in range(top + 1)]


# -- instance annotation files (COCO / LVIS JSON) ---------------------------------------------------------
def check_instances(path: Path, data: dict, categories: set) -> None:
    """Every annotation names a listed category and image, and its polygon lies within / its RLE has the size
    of that image: one-line errors naming the file and the annotation."""
    images = {im.get("id"): im for im in data.get("images", [])}
    for a in data.get("annotations", []):
        aid = a.get("id")
        if a.get("category_id") not in categories:
            raise HarnessError(f"{path}: annotation {aid}: category_id {a.get('category_id')} is not in the "
                               "file's 'categories'")
        im = images.get(a.get("image_id"))
        if im is None:
            raise HarnessError(f"{path}: annotation {aid}: image_id {a.get('image_id')} is not in 'images'")
        w, h = im.get("width"), im.get("height")
        if not isinstance(w, int) or not isinstance(h, int):
            raise HarnessError(f"{path}: image {im.get('id')}: 'width' and 'height' must be integers")
        seg = a.get("segmentation")
        if isinstance(seg, list):
            for poly in seg:
                try:
                    xy = np.asarray(poly, dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    raise HarnessError(f"{path}: annotation {aid}: a polygon must be a list of numbers "
                                       "[x1, y1, x2, y2, ...]") from None
                if xy.size % 2:
                    raise HarnessError(f"{path}: annotation {aid}: a polygon has an odd number of coordinates")
                xs, ys = xy[0::2], xy[1::2]
                if xy.size and (xs.min() < -EDGE_TOLERANCE or ys.min() < -EDGE_TOLERANCE
                                or xs.max() > w + EDGE_TOLERANCE or ys.max() > h + EDGE_TOLERANCE):
                    raise HarnessError(f"{path}: annotation {aid}: polygon reaches ({xs.max():g}, {ys.max():g}) / "
                                       f"({xs.min():g}, {ys.min():g}), outside its image {im.get('file_name')} "
                                       f"({w}x{h})")
        elif isinstance(seg, dict):
            size = seg.get("size")
            if list(size or []) != [h, w]:
                raise HarnessError(f"{path}: annotation {aid}: RLE mask size {size} differs from its image "
                                   f"{im.get('file_name')} ([height, width] = [{h}, {w}])")
        elif seg is not None:
            raise HarnessError(f"{path}: annotation {aid}: 'segmentation' must be polygons or an RLE mask")


def polygon_centroid(polys) -> tuple[float, float] | None:
    """Area-weighted centroid (x, y) of COCO polygons (shoelace formula); polygons under 3 points are skipped
    (the release has some: VLPart pads them), zero-area ones count by their vertex mean."""
    total, cx, cy, flat = 0.0, 0.0, 0.0, []
    for p in polys:
        xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        if len(xy) < 3:
            continue
        flat.append(xy)
        x, y = xy[:, 0], xy[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        a = cross.sum() / 2
        if a != 0:
            total += a
            cx += ((x + x1) * cross).sum() / 6
            cy += ((y + y1) * cross).sum() / 6
    if total != 0:
        return cx / total, cy / total
    if flat:
        xy = np.concatenate(flat)
        return float(xy[:, 0].mean()), float(xy[:, 1].mean())
    return None


def centroid(seg, h: int, w: int) -> tuple[float, float] | None:
    """The centroid (x, y) of a COCO segmentation (polygons, or RLE decoded with pycocotools), or None when it
    covers nothing."""
    if isinstance(seg, list):
        return polygon_centroid(seg)
    ys, xs = np.nonzero(decode(seg, h, w))
    if not len(xs):
        return None
    return float(xs.mean()), float(ys.mean())


def instance_items(path: Path, annotations: list, imgs: dict, image_file, label_of: dict, point: bool, group_of=None,
                   keep=None, source: str = ""):
    """Crop items of the ``annotations`` of a COCO/LVIS file (already checked with ``check_instances``; ``imgs``:
    its images by id): ``image_file(image entry)`` gives an image's path, ``label_of`` maps category ids to
    labels (other categories are skipped), ``keep(annotation)`` filters. Part-like levels (``point``) crop
    around each annotation's mask centroid, grouped by ``group_of(annotation)`` (default: its image); object
    levels around its box. Returns (items, summary); a missing image is a one-line error counting the others
    and naming ``source`` (where the images are published)."""
    counts: Counter = Counter()
    groups: dict = {}
    for a in sorted(annotations, key=lambda a: (a["image_id"], a["id"])):
        if a["category_id"] not in label_of or (keep is not None and not keep(a)):
            continue
        key = (a["image_id"], group_of(a) if group_of else None)
        groups.setdefault(key, []).append(a)
    items, missing, seen = [], [], {}
    for (iid, _), anns in groups.items():
        im = imgs[iid]
        if iid not in seen:
            seen[iid] = image_file(im)
            if not Path(seen[iid]).is_file():
                missing.append(seen[iid])
        file = str(seen[iid])
        if point:
            entries = []
            for a in anns:
                try:
                    c = centroid(a["segmentation"], im["height"], im["width"]) if a.get("segmentation") else None
                except (ValueError, TypeError) as exc:  # pycocotools on malformed counts
                    raise HarnessError(f"{path}: annotation {a['id']}: a mask pycocotools cannot decode "
                                       f"({type(exc).__name__}: {exc})") from None
                if c is None:
                    counts["dropped_empty_mask"] += 1
                    continue
                entries.append((label_of[a["category_id"]], c[0], c[1], f"{im['file_name']}#{a['id']}"))
            items += point_crops(file, (im["width"], im["height"]), entries, counts)
        else:
            for a in anns:
                bbox = a.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise HarnessError(f"{path}: annotation {a.get('id')}: 'bbox' must be [x, y, w, h]")
                items += box_crops(file, [(label_of[a["category_id"]], *map(float, bbox),
                                           f"{im['file_name']}#{a['id']}")], counts)
    if missing:
        raise HarnessError(f"{missing[0]}: image not found (read by {path}; {len(missing)} image(s) missing"
                           f"{'; download: ' + source if source else ''})")
    summary = {"annotation_file": str(path), "images": len(seen), "dropped_empty_mask": counts["dropped_empty_mask"],
               **crop_counters(counts, point)}
    return items, summary
