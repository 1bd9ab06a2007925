"""The official part-crop rule and the crop Samples class: a public API for dataset plugins.

The paper's code (``retrieval-classification/moco/loader.py``) turns keypoints into square part crops:

1. per image (COCO: per person by default), among the *kept* keypoints of the selected types, d_min is
   each keypoint's L2 distance to the nearest other one (``half_distances`` returns d_min/2; a keypoint
   with no distinct neighbour gets 999999/2);
2. a keypoint is kept when 20 < d_min/2 < 1000 (``distance_verdict``);
3. its crop is the square of half-side ``round(d_min/4)`` centred on it (``crop_box``, rounded exactly
   as PIL does), the area outside the image black.

``kept_crops`` applies 2-3 to one image's keypoints and counts drops in a ``Counter`` (keys in
``CROP_RULE_COUNTERS``); ``crop_samples`` turns (key, label, image path, box) items into a
``CropSamples`` whose ``image(i)`` decodes each source image once for consecutive crops.

Example (a dataset plugin's ``load``)::

    from collections import Counter
    from partbench_plugins.datasets.part_crops import crop_samples, half_distances, kept_crops

    counts, items = Counter(), []
    for path, kps in my_images():                     # kps: [(label, x, y), ...] of one image
        for (label, x, y), box in kept_crops(kps, half_distances([k[1:] for k in kps]), counts,
                                             size_of=lambda: None):
            items.append((f"{path}#{label}", label, path, box))
    return crop_samples(items, classes, dict(counts), files=[annotation_file])
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from PIL import Image

from harness.api import Samples

from ._common import SourceCache, open_rgb

# The official code keeps a keypoint when 20 < d_min/2 < 1000 (pr_patch_retrieval.py / moco/loader.py).
MIN_HALF_DIST = 20.0
MAX_HALF_DIST = 1000.0
_NO_OTHER = 999999.0  # the official stand-in for "no other kept keypoint" (dist == 0 -> 999999)


def half_distances(points: np.ndarray) -> np.ndarray:
    """d_min/2 per point, d_min = L2 distance to the nearest *other* point (official rule).

    As in the official code a zero distance (the point itself, or a coincident point) counts as
    999999, so a point with no distinct neighbour gets 499999.5 and fails the < 1000 test.
    ``points`` is [K, D] (D = 2 for (x, y); 3 for COCO's official (x, y, annotation id) quirk).
    """
    p = np.asarray(points, dtype=np.float64)
    d = ((p[:, None] - p[None]) ** 2).sum(axis=2) ** 0.5
    d[d == 0] = _NO_OTHER
    return d.min(axis=1) / 2


def crop_box(x: float, y: float, half_dist: float) -> tuple[int, int, int, int]:
    """Integer crop box of the official code: half-side round(d_min/4) around (x, y).

    The official code crops ``(x-h, y-h, x+h, y+h)`` with h = round(half_dist) and PIL rounds each
    coordinate with Python's round(); this returns exactly the box PIL uses.
    """
    h = round(half_dist / 2)
    return (round(x - h), round(y - h), round(x + h), round(y + h))


def distance_verdict(half_dist: float) -> str | None:
    """None if kept, else the summary reason for dropping a keypoint by the distance rule."""
    if half_dist >= _NO_OTHER / 2:
        return "dropped_no_other_keypoint"
    if half_dist <= MIN_HALF_DIST:
        return "dropped_too_close"
    if half_dist >= MAX_HALF_DIST:
        return "dropped_too_far"
    return None


def box_outside(box, size) -> str | None:
    """Summary counter for a crop box relative to a (w, h) image: None if fully inside."""
    x0, y0, x1, y1 = box
    w, h = size
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not (0 <= cx < w and 0 <= cy < h):
        return "kept_centre_outside_image"
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return "kept_crop_partly_outside_image"
    return None


#: the summary counters kept_crops fills (in summary order)
CROP_RULE_COUNTERS = ("dropped_no_other_keypoint", "dropped_too_close", "dropped_too_far",
                      "kept_centre_outside_image", "kept_crop_partly_outside_image")


def kept_crops(entries, half_dists, counts, size_of):
    """The official keep-and-crop rule over one image's (or person's) keypoints: yields (entry, box)
    for each kept keypoint; ``entry[1:3]`` is (x, y). Drops and crops reaching outside the image are
    counted in ``counts``; ``size_of()`` gives the image (w, h), or None to skip the outside check."""
    for entry, hd in zip(entries, half_dists):
        why = distance_verdict(hd)
        if why:
            counts[why] += 1
            continue
        box = crop_box(entry[1], entry[2], hd)
        size = size_of()
        where = box_outside(box, size) if size is not None else None
        if where:
            counts[where] += 1
        counts["kept"] += 1
        yield entry, box


class CropSamples(Samples):
    """Items that are boxes on source images. ``image(i)`` decodes the source lazily (the last few
    decoded sources are kept in a small LRU cache, so consecutive crops of one image decode it once)
    and crops the box with PIL, which fills the area outside the image with black.

    ``files``: the annotation files the items were read from; the source images are added, so the
    fingerprint covers both."""

    CACHE = 4

    def __init__(self, keys, labels, classes, summary, paths: Sequence[str], path_index, boxes, files=()):
        super().__init__(keys, labels, classes, summary, files=[*files, *paths])
        self.paths = list(paths)  # unique source paths
        self.path_index = np.asarray(path_index, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        if not (len(self.path_index) == len(self.boxes) == len(self.keys)):
            raise ValueError("keys, path_index and boxes differ in length")
        self._sources = SourceCache(self.CACHE)

    def image(self, i: int) -> Image.Image:
        pi = int(self.path_index[i])
        img = self._sources.get(pi, lambda: open_rgb(self.paths[pi]))
        return img.crop(tuple(int(v) for v in self.boxes[i]))

    def source(self, i: int):
        return self.paths[int(self.path_index[i])], tuple(int(v) for v in self.boxes[i])

    def clusters(self) -> np.ndarray:
        return self.path_index

    def fingerprint(self) -> str:
        """Keys and labels plus the boxes (not the absolute paths, so a moved dataset keeps its cache):
        a changed crop rule changes the feature-cache key."""
        h = hashlib.sha256(super().fingerprint().encode())
        h.update(np.ascontiguousarray(self.boxes, dtype="<i8").tobytes())
        return h.hexdigest()


def crop_samples(items, classes, summary, files=()) -> CropSamples:
    """CropSamples from (key, label, source path, box) tuples; ``files``: the annotation files read."""
    paths, index, path_index = [], {}, []
    for _, _, p, _ in items:
        if p not in index:
            index[p] = len(paths)
            paths.append(p)
        path_index.append(index[p])
    return CropSamples([k for k, _, _, _ in items], [lab for _, lab, _, _ in items], classes, summary,
                       paths, path_index, [b for _, _, _, b in items], files=files)


