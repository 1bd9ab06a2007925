"""COCO person instances for top-down keypoint estimation (``coco_persons``): one item per person box.

Layout as ``coco_parts`` (``annotations/person_keypoints_{train,val}2017.json``, ``images/{train,val}2017``;
``annotation_file`` / ``image_folder`` read a chosen file). Splits: ``train`` reads train2017, ``test``
(alias ``val``) val2017.

Ground-truth boxes (default): every person annotation with ``num_keypoints > 0`` that is not a crowd;
its box is clipped to the image as mmpose does (x2 = min(W - 1, x + max(0, w - 1)), likewise y) and dropped
when the clipped box has no width or height. ``detections``: boxes from a COCO results file (``image_id``,
``category_id`` 1, ``bbox``, ``score``) above ``det_score``, with zero keypoints (evaluation still uses
the annotation file). Drops are counted in the summary. Found when the split is read, which
``check_split`` does at validation (the read is kept for the run's ``load``): a keypoint list that is not
3 numbers per keypoint name, a split without any usable person, and image files that are missing (every
image a person is read from is checked to exist).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from harness.api import HarnessError, Option, hookimpl
from harness.api import KeypointSamples

from ._common import SourceCache, expand, need_file, open_rgb
from .coco import _LAYOUT, SET_OF_SPLIT, _CocoLayout, check_keypoint_lists, keypoint_category, load_coco


def flip_pairs(names) -> list[tuple[int, int]]:
    """0-based (left, right) pairs of COCO-style keypoint names ('left_eye' / 'right_eye')."""
    index = {n: i for i, n in enumerate(names)}
    return sorted((i, index["right_" + n[5:]]) for n, i in index.items()
                  if n.startswith("left_") and "right_" + n[5:] in index)


class PersonSamples(KeypointSamples):
    """Person boxes on COCO images; ``image(i)`` is the whole image (decoded once for its persons)."""

    def __init__(self, keys, summary, files, paths, path_index, boxes, keypoints, image_ids, scores,
                 keypoint_names, annotation_file):
        super().__init__(keys, np.zeros(len(keys), np.int64), ["person"], summary, files=[*files, *paths])
        self.paths = list(paths)
        self.path_index = np.asarray(path_index, np.int64)
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.kps = np.asarray(keypoints, np.float64).reshape(len(keys), len(keypoint_names), 3)
        self.ids = np.asarray(image_ids, np.int64)
        self.scores = np.asarray(scores, np.float64)
        self.keypoint_names = list(keypoint_names)
        self.flip_pairs = flip_pairs(self.keypoint_names)
        self.annotation_file = str(annotation_file)
        self._sources = SourceCache(2)

    def image(self, i: int) -> Image.Image:
        p = int(self.path_index[i])
        return self._sources.get(p, lambda: open_rgb(self.paths[p]))

    def source(self, i: int):
        x, y, w, h = self.boxes[i]
        return self.paths[int(self.path_index[i])], (int(x), int(y), int(x + w), int(y + h))

    def box(self, i: int):
        return tuple(float(v) for v in self.boxes[i])

    def keypoints(self, i: int) -> np.ndarray:
        return self.kps[i].copy()

    def image_id(self, i: int) -> int:
        return int(self.ids[i])

    def score(self, i: int) -> float:
        return float(self.scores[i])

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        for a in (self.boxes.astype("<f8"), self.kps.astype("<f8"), self.scores.astype("<f8")):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def clip_box(box, width: int, height: int):
    """mmpose's box sanitising: clip (x, y, w, h) to the image; None when nothing is left."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 <= x1 or y2 <= y1 or w * h <= 0:  # nothing left to crop (mmpose keeps a 1-pixel box of width 0)
        return None
    return x1, y1, x2 - x1, y2 - y1


def read_persons(ann_file: Path, img_dir: Path, detections: Path | None = None, det_score: float = 0.0):
    coco = load_coco(ann_file)
    cat = keypoint_category(coco, ann_file)
    check_keypoint_lists(coco, cat, ann_file)
    names = list(cat["keypoints"])
    K = len(names)
    counts: Counter = Counter()
    items = []  # (key, image id, box, keypoints [K, 3], score)
    if detections is None:
        for ann in sorted(coco.dataset.get("annotations", []), key=lambda a: (a["image_id"], a["id"])):
            if ann.get("category_id") != cat["id"]:
                continue
            if ann.get("iscrowd", 0):
                counts["dropped_crowd"] += 1
                continue
            if ann.get("num_keypoints", 0) <= 0:
                counts["dropped_no_keypoints"] += 1
                continue
            img = coco.imgs.get(ann["image_id"])
            if img is None:
                raise HarnessError(f"{ann_file}: annotation {ann['id']} refers to image id {ann['image_id']}, "
                                   "which is not in 'images'")
            box = clip_box(ann["bbox"], img["width"], img["height"])
            if box is None:
                counts["dropped_box_outside_image"] += 1
                continue
            kps = np.asarray(ann["keypoints"], np.float64).reshape(K, 3)
            items.append((f"{ann['image_id']}/{ann['id']}", ann["image_id"], box, kps, 1.0))
    else:
        try:
            dets = json.loads(need_file(detections, "detections").read_text())
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{detections}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(dets, list):
            raise HarnessError(f"{detections}: expected a COCO results list of {{image_id, category_id, bbox, score}}")
        for j, d in enumerate(dets):
            if d.get("category_id", cat["id"]) != cat["id"]:
                continue
            if float(d.get("score", 0.0)) < det_score:
                counts["dropped_low_score"] += 1
                continue
            img = coco.imgs.get(d.get("image_id"))
            if img is None:
                counts["dropped_unknown_image"] += 1
                continue
            box = clip_box(d["bbox"], img["width"], img["height"])
            if box is None:
                counts["dropped_box_outside_image"] += 1
                continue
            items.append((f"{d['image_id']}/det{j}", d["image_id"], box, np.zeros((K, 3)), float(d["score"])))
    if not items:
        raise HarnessError(f"{detections or ann_file}: no usable person (needs non-crowd persons with "
                           f"num_keypoints > 0{' or detections' if detections else ''}; dropped: {dict(counts)})")
    paths, index, path_index = [], {}, []
    for _, iid, *_ in items:
        if iid not in index:
            index[iid] = len(paths)
            paths.append(str(img_dir / coco.imgs[iid]["file_name"]))
        path_index.append(index[iid])
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(os.path.relpath(p, img_dir) for p in missing[:5])
        raise HarnessError(f"{img_dir}: {len(missing)} of the {len(paths)} images with persons in {ann_file} are "
                           f"missing: {shown}{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
    summary = {"persons": len(items), "images": len(paths), **dict(counts), "keypoints": K,
               "boxes": "detections" if detections else "ground truth"}
    return PersonSamples([k for k, *_ in items], summary, [ann_file] + ([detections] if detections else []),
                         paths, path_index, [b for _, _, b, _, _ in items], [kp for _, _, _, kp, _ in items],
                         [i for _, i, *_ in items], [s for *_, s in items], names, ann_file)


class CocoPersons(_CocoLayout):
    """COCO person boxes with their 17 keypoints, for top-down pose (ground-truth boxes or detections)."""

    kind = "person_keypoints"
    splits = ("train", "test", "val")
    options = {
        **_LAYOUT,
        "detections": Option(str, None, "COCO results file of person boxes to use instead of the ground-truth "
                             "boxes (e.g. the detector boxes of ViTPose's evaluation)", path="file", nullable=True),
        "det_score": Option(float, 0.0, "keep detections with at least this score"),
    }

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self._checked: dict = {}  # split -> the samples check_split read, handed to the run's load

    def split_files(self, split: str):
        return super().split_files("test" if split == "val" else split)

    def check_split(self, split: str) -> None:
        """Reads the split (keypoint lists, usable persons, image files; see the module docstring); the
        result serves the next ``load`` of the split, so a run parses the annotation file once."""
        self._checked[split] = self.load(split)

    def load(self, split: str):
        if split in self._checked:
            return self._checked.pop(split)
        ann, img = self.split_files(split)
        det = self.opts.get("detections")
        samples = read_persons(ann, img, expand(det) if det else None, self.opts.get("det_score", 0.0))
        samples.summary["split"] = split
        samples.summary["set"] = SET_OF_SPLIT["test" if split == "val" else split]
        return samples


@hookimpl
def register_datasets(register):
    register("coco_persons", CocoPersons)
