"""COCO person keypoint pairs (``coco_person_pairs``) for ``correspondence``: the persons ``coco_persons``
reads (non-crowd, with keypoints, boxes clipped as mmpose), each cut to its box enlarged by ``padding``
(clipped to the image), and pairs of persons drawn with a seed, with the 17 keypoints visible (v = 2, or
labelled with ``min_visibility: 1``) in both; the PCK threshold uses the target person's box."""
from __future__ import annotations

import numpy as np

from harness.api import Option, hookimpl

from ._common import ReadAtValidation, image_size
from .coco import _LAYOUT, SET_OF_SPLIT, _CocoLayout
from .coco_persons import read_persons
from .keypoint_pairs import PAIR_OPTIONS, ImagePairSamples, draw_pairs, keypoint_pairs, need_pairs


def person_region(box, width: int, height: int, padding: float) -> tuple[int, int, int, int]:
    """The box (x, y, w, h) scaled by ``padding`` about its centre, in whole pixels, clipped to the image."""
    x, y, w, h = box
    cx, cy, hw, hh = x + w / 2, y + h / 2, w * padding / 2, h * padding / 2
    return (max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh))),
            min(width, int(np.ceil(cx + hw))), min(height, int(np.ceil(cy + hh))))


def read_person_pairs(ann, img_dir, n_pairs: int, seed: int, min_keypoints: int, padding: float,
                      min_visibility: int) -> ImagePairSamples:
    persons = read_persons(ann, img_dir)
    n = len(persons)
    sizes = {}
    regions, kps, visible, boxes = [], [], [], []
    for i in range(n):
        path = persons.paths[int(persons.path_index[i])]
        if path not in sizes:
            sizes[path] = image_size(path)
        r = person_region(persons.box(i), *sizes[path], padding)
        k = persons.keypoints(i)
        x, y, w, h = persons.box(i)
        regions.append(r)
        kps.append(k[:, :2] - np.asarray(r[:2], np.float64))
        visible.append(k[:, 2] >= min_visibility)
        boxes.append((x - r[0], y - r[1], x + w - r[0], y + h - r[1]))
    visible = np.asarray(visible, bool).reshape(n, -1)
    chosen, counts = draw_pairs(np.zeros(n, np.int64), visible, n_pairs, seed, min_keypoints)
    used = sorted({i for pair in chosen for i in pair})
    index = {i: k for k, i in enumerate(used)}
    pairs = keypoint_pairs([(index[a], index[b]) for a, b in chosen], [kps[i] for i in used], visible[used],
                           [boxes[i] for i in used], np.zeros(len(used), np.int64),
                           [persons.keys[i] for i in used], range(1, visible.shape[1] + 1))
    need_pairs(pairs, str(ann), counts)
    paths = [persons.paths[int(persons.path_index[i])] for i in used]
    summary = {"persons": len(used), "images": len(set(paths)), **counts,
               "keypoints": int(sum(len(p.target_kps) for p in pairs)), "keypoint_names": persons.keypoint_names}
    return ImagePairSamples([persons.keys[i] for i in used], np.zeros(len(used), np.int64), ["person"], summary,
                            pairs, paths, [(r[2] - r[0], r[3] - r[1]) for r in (regions[i] for i in used)],
                            [regions[i] for i in used], files=[ann])


class CocoPersonPairs(ReadAtValidation, _CocoLayout):
    """COCO person pairs with their 17 keypoints, each person cut to its padded box (keypoint correspondence)."""

    kind = "person_keypoints"
    splits = ("train", "test", "val")
    options = {
        **_LAYOUT,
        **PAIR_OPTIONS,
        "padding": Option(float, 1.25, "each person is cut to its box scaled by this about its centre",
                          check=lambda v: None if v >= 1 else "must be >= 1"),
        "min_visibility": Option(int, 2, "smallest COCO visibility flag of a used keypoint (2 = visible, 1 = "
                                 "labelled but occluded)", choices=[1, 2]),
    }

    def split_files(self, split: str):
        return super().split_files("test" if split == "val" else split)

    def read(self, split: str):
        o = self.opts
        ann, img = self.split_files(split)
        samples = read_person_pairs(ann, img, o["pairs"], o["pair_seed"], o["min_keypoints"], o["padding"],
                                    o["min_visibility"])
        samples.summary.update(split=split, set=SET_OF_SPLIT["test" if split == "val" else split])
        return samples


@hookimpl
def register_datasets(register):
    register("coco_person_pairs", CocoPersonPairs)
