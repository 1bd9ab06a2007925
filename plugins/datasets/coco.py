"""COCO keypoint part crops (``coco_parts``) and approximately-square object crops (``coco_objects``).

Layout under ``root`` (the standard COCO 2017 download; ``annotations_dir`` / ``images_dir``
override the two folders)::

    annotations/person_keypoints_{train,val}2017.json   (or directly under root)
    annotations/instances_{train,val}2017.json
    images/{train,val}2017/<file_name>                  (or root/{train,val}2017/)

Splits: ``all`` and ``train`` read train2017 (the official part-retrieval code uses train2017 for
retrieval), ``test`` reads val2017 (the official part-classification validation set).

Part rule of the official code (moco/loader.py, PatchLoaderCOCO): a keypoint is used when selected
and its visibility flag is 2; a person annotation with fewer than two used keypoints is skipped;
d_min is the distance to the nearest other used keypoint; kept when 20 < d_min/2 < 1000; crop
half-side round(d_min/4), black outside the image. ``distance: within_person`` (default) measures
d_min among the keypoints of the same person. ``distance: official_annid`` reproduces the official
code exactly: every used keypoint of the image is a point (x, y, annotation_id), so people in the
same image only interact when their annotation ids are close.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from harness.api import Dataset, HarnessError, Option, hookimpl

from ._common import distinct_ids_check, expand, need_dir, need_file, positive, subsample_per_class
from .part_crops import CROP_RULE_COUNTERS, box_outside, crop_samples, half_distances, kept_crops

DEFAULT_KEYPOINTS = [1, 11, 16]  # nose, right_wrist, left_ankle (1-based, standard 17-name order)
SET_OF_SPLIT = {"all": "train2017", "train": "train2017", "test": "val2017"}


_check_ids = distinct_ids_check("keypoint ids (1-based, category 'keypoints' order)")


def locate(root, annotations_dir, images_dir, kind: str, split: str, annotation_file=None,
           image_folder=None) -> tuple[Path, Path]:
    """(annotation json, image folder) of a split; ``kind`` is person_keypoints or instances.
    ``annotation_file`` / ``image_folder`` replace the standard file / folder of every split."""
    root = expand(root)
    need_dir(root, "COCO root")
    cset = SET_OF_SPLIT[split]
    name = f"{kind}_{cset}.json"
    if annotation_file:
        ann = need_file(expand(annotation_file))
    elif annotations_dir:
        ann = need_file(expand(annotations_dir) / name)
    else:
        cands = [root / "annotations" / name, root / name]
        ann = next((c for c in cands if c.is_file()), None)
        if ann is None:
            raise HarnessError(f"{cands[0]}: file not found (nor {cands[1]})")
    if image_folder:
        img = need_dir(expand(image_folder), "COCO images")
    elif images_dir:
        img = need_dir(expand(images_dir) / cset, "COCO images")
    else:
        cands = [root / "images" / cset, root / cset]
        img = next((c for c in cands if c.is_dir()), None)
        if img is None:
            raise HarnessError(f"{cands[0]}: directory not found (nor {cands[1]})")
    return ann, img


def load_coco(path: Path):
    """pycocotools COCO object; its progress prints are silenced, bad files are one-line errors."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (KeyError, TypeError, AssertionError) as exc:
        raise HarnessError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None


def keypoint_category(coco, ann_file) -> dict:
    """The category with a 'keypoints' list ('person' when several); one-line error when there is none."""
    cats = [c for c in coco.dataset.get("categories", []) if c.get("keypoints")]
    if not cats:
        raise HarnessError(f"{ann_file}: no category with a 'keypoints' list (not a person_keypoints file?)")
    return next((c for c in cats if c.get("name") == "person"), cats[0])


def check_keypoint_lists(coco, cat: dict, ann_file) -> None:
    """Every annotation of the keypoint category ``cat`` lists 3 numbers (x, y, v) per keypoint name; one
    error names the first bad annotation and counts the others."""
    want = 3 * len(cat["keypoints"])
    bad = [a for a in coco.dataset.get("annotations", []) if a.get("category_id") == cat["id"]
           and not (isinstance(a.get("keypoints"), list) and len(a["keypoints"]) == want)]
    if bad:
        kp = bad[0].get("keypoints")
        got = len(kp) if isinstance(kp, list) else type(kp).__name__
        more = f" ({len(bad) - 1} more annotation(s) like it, e.g. {bad[1].get('id')})" if len(bad) > 1 else ""
        raise HarnessError(f"{ann_file}: annotation {bad[0].get('id')}: 'keypoints' must list {want} numbers, "
                           f"got {got} (x, y, v for each of the {want // 3} keypoints of category "
                           f"'{cat.get('name')}'){more}")


def _image_entry(coco, path: Path, iid: int):
    img = coco.imgs.get(iid)
    if img is None:
        raise HarnessError(f"{path}: an annotation refers to image id {iid}, which is not in 'images'")
    for k in ("file_name", "width", "height"):
        if k not in img:
            raise HarnessError(f"{path}: image id {iid} has no '{k}'")
    return img


def read_coco_parts(ann_file: Path, img_dir: Path, keypoints, distance: str = "within_person",
                    min_visibility: int = 2):
    coco = load_coco(ann_file)
    cat = keypoint_category(coco, ann_file)
    names = list(cat["keypoints"])
    for k in keypoints:
        if not 1 <= k <= len(names):
            raise HarnessError(f"{ann_file}: keypoint id {k} is not in category '{cat.get('name')}' "
                               f"(ids 1..{len(names)})")
    check_keypoint_lists(coco, cat, ann_file)
    label_of = {k: i for i, k in enumerate(keypoints)}
    classes = [names[k - 1] for k in keypoints]

    counts = Counter()
    per_image: dict[int, list] = {}  # image id -> [(kp id, x, y, ann id)] of persons with >= 2 used
    anns = sorted((a for a in coco.dataset.get("annotations", []) if a.get("category_id") == cat["id"]),
                  key=lambda a: (a["image_id"], a["id"]))
    for a in anns:
        counts["persons"] += 1
        kp = a["keypoints"]
        used = []
        for k in keypoints:
            x, y, v = kp[3 * (k - 1): 3 * k]
            if v == 0:
                continue  # not labelled: not an annotated keypoint at all
            counts["annotated"] += 1
            if v < min_visibility:
                counts["dropped_not_visible"] += 1
                continue
            used.append((k, float(x), float(y), int(a["id"])))
        if len(used) < 2:
            if used:
                counts["persons_single_keypoint"] += 1
                counts["dropped_person_single_keypoint"] += len(used)
            continue
        counts["persons_used"] += 1
        per_image.setdefault(int(a["image_id"]), []).append(used)

    items = []
    for iid in sorted(per_image):
        img = _image_entry(coco, ann_file, iid)
        path = img_dir / img["file_name"]
        size = (int(img["width"]), int(img["height"]))
        persons = per_image[iid]
        if distance == "official_annid":
            flat = [e for p in persons for e in p]
            halves = half_distances(np.array([[x, y, aid] for _, x, y, aid in flat])).tolist()
            groups = [(flat, halves)]
        else:
            groups = [(p, half_distances(np.array([[x, y] for _, x, y, _ in p])).tolist()) for p in persons]
        for entries, halves in groups:
            for (k, _, _, aid), box in kept_crops(entries, halves, counts, lambda: size):
                items.append((f"{img['file_name']}#{aid}#{names[k - 1]}", label_of[k], str(path), box))

    per_class = Counter(lab for _, lab, _, _ in items)
    summary = {
        "annotation_file": str(ann_file),
        "images": len(coco.imgs),
        "images_with_crops": len({p for _, _, p, _ in items}),
        "persons": counts["persons"],
        "persons_used": counts["persons_used"],
        "persons_single_keypoint": counts["persons_single_keypoint"],
        "keypoints_annotated": counts["annotated"],
        "kept": counts["kept"],
        "dropped_not_visible": counts["dropped_not_visible"],
        "dropped_person_single_keypoint": counts["dropped_person_single_keypoint"],
        **{k: counts[k] for k in CROP_RULE_COUNTERS},
        "per_class": {classes[c]: per_class.get(c, 0) for c in range(len(classes))},
        "distance": distance,
    }
    return items, classes, summary


def square_box(x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    """Square of side max(w, h) centred on the box centre (integer pixel box)."""
    side = max(w, h)
    x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    s = max(1, round(side))
    return (x0, y0, x0 + s, y0 + s)


def read_coco_objects(ann_file: Path, img_dir: Path, min_size: float, max_aspect: float,
                      include_crowd: bool = False):
    coco = load_coco(ann_file)
    cats = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise HarnessError(f"{ann_file}: no 'categories'")
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    classes = [c["name"] for c in cats]
    counts = Counter()
    items = []
    for a in sorted(coco.dataset.get("annotations", []), key=lambda a: (a["image_id"], a["id"])):
        counts["objects"] += 1
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise HarnessError(f"{ann_file}: annotation {a.get('id')}: 'bbox' must be [x, y, w, h]")
        if a.get("category_id") not in label_of:
            raise HarnessError(f"{ann_file}: annotation {a.get('id')}: category_id {a.get('category_id')} "
                               "is not in 'categories'")
        x, y, w, h = (float(v) for v in bbox)
        if a.get("iscrowd", 0) and not include_crowd:
            counts["dropped_crowd"] += 1
            continue
        if min(w, h) < min_size:
            counts["dropped_small"] += 1
            continue
        if max(w / h, h / w) > max_aspect:
            counts["dropped_not_square"] += 1
            continue
        img = _image_entry(coco, ann_file, int(a["image_id"]))
        box = square_box(x, y, w, h)
        where = box_outside(box, (int(img["width"]), int(img["height"])))
        if where == "kept_crop_partly_outside_image":
            counts[where] += 1
        counts["kept"] += 1
        items.append((f"{img['file_name']}#{a['id']}", label_of[a["category_id"]],
                      str(img_dir / img["file_name"]), box))
    summary = {
        "annotation_file": str(ann_file),
        "images": len(coco.imgs),
        "objects": counts["objects"],
        "kept": counts["kept"],
        "dropped_crowd": counts["dropped_crowd"],
        "dropped_small": counts["dropped_small"],
        "dropped_not_square": counts["dropped_not_square"],
        "kept_crop_partly_outside_image": counts["kept_crop_partly_outside_image"],
    }
    return items, classes, summary


_LAYOUT = {
    "root": Option(str, help="COCO root (annotations/ and images/{train,val}2017 or {train,val}2017)",
                   path="dir"),
    "annotations_dir": Option(str, None, "folder holding the *_{train,val}2017.json files "
                              "(default: root/annotations, else root)", path="dir", nullable=True),
    "images_dir": Option(str, None, "folder holding train2017/ and val2017/ (default: root/images, else root)",
                         path="dir", nullable=True),
    "annotation_file": Option(str, None, "read this annotation file for every split instead of the standard "
                              "one (a subset, a custom file; define one dataset entry per file)", path="file",
                              nullable=True),
    "image_folder": Option(str, None, "the folder holding the images of every split (with annotation_file; "
                           "default: the split's standard folder)", path="dir", nullable=True),
}


class _CocoLayout(Dataset):
    kind = ""  # person_keypoints or instances

    def split_files(self, split: str) -> tuple[Path, Path]:
        _check_split(self, split)
        o = self.opts
        return locate(o["root"], o.get("annotations_dir"), o.get("images_dir"), self.kind, split,
                      o.get("annotation_file"), o.get("image_folder"))

    def check_split(self, split: str) -> None:
        """The split's annotation file and image folder exist (found at validation, not per unit)."""
        self.split_files(split)


def _check_split(ds, split):
    if split not in ds.splits:
        raise HarnessError(f"dataset '{ds.name}': unknown split '{split}' (expected one of {ds.splits})")


class CocoParts(_CocoLayout):
    """COCO person-keypoint part crops (official part-retrieval / classification rule)."""

    kind = "person_keypoints"
    splits = ("all", "train", "test")
    options = {
        **_LAYOUT,
        "keypoints": Option(list, list(DEFAULT_KEYPOINTS), "keypoint ids (1-based, in the category's "
                            "'keypoints' order); label = position in this list", check=_check_ids),
        "distance": Option(str, "within_person", "d_min among the same person's keypoints, or the official "
                           "code's (x, y, annotation_id) points over the whole image",
                           choices=["within_person", "official_annid"]),
        "min_visibility": Option(int, 2, "smallest COCO visibility flag used (official: 2 = visible)",
                                 choices=[1, 2]),
    }

    def load(self, split: str):
        o = self.opts
        ann, img = self.split_files(split)
        items, classes, summary = read_coco_parts(ann, img, list(o["keypoints"]),
                                                  o.get("distance", "within_person"), o.get("min_visibility", 2))
        summary["split"] = split
        return crop_samples(items, classes, summary, files=[ann])


class CocoObjects(_CocoLayout):
    """COCO object crops: approximately-square boxes cropped square around the box centre."""

    kind = "instances"
    splits = ("all", "train", "test")
    options = {
        **_LAYOUT,
        "min_size": Option(float, 32.0, "smallest box side in pixels", check=positive),
        "max_aspect": Option(float, 1.25, "largest max(w/h, h/w) of a kept box (1.25: within [0.8, 1.25])",
                             check=lambda v: None if v >= 1 else "must be >= 1"),
        "include_crowd": Option(bool, False, "keep iscrowd boxes"),
        "per_class": Option(int, None, "keep at most this many objects per category (random, fixed seed)",
                            nullable=True, check=positive),
        "seed": Option(int, 0, "seed of the per_class subsample"),
    }

    def load(self, split: str):
        o = self.opts
        ann, img = self.split_files(split)
        items, classes, summary = read_coco_objects(ann, img, o.get("min_size", 32.0), o.get("max_aspect", 1.25),
                                                    o.get("include_crowd", False))
        keep = subsample_per_class(np.array([lab for _, lab, _, _ in items], dtype=np.int64),
                                   o.get("per_class"), o.get("seed", 0))
        if len(keep) != len(items):
            summary["dropped_per_class_limit"] = len(items) - len(keep)
            items = [items[i] for i in keep]
            summary["kept"] = len(items)
        per_class = Counter(lab for _, lab, _, _ in items)
        summary["per_class"] = {classes[c]: per_class.get(c, 0) for c in range(len(classes))}
        summary["split"] = split
        return crop_samples(items, classes, summary, files=[ann])


@hookimpl
def register_datasets(register):
    register("coco_parts", CocoParts)
    register("coco_objects", CocoObjects)
