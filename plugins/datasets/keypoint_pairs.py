"""Keypoint pairs for ``correspondence`` from datasets whose keypoints are per image (CUB, COCO persons): the
images as a ``PairSamples`` (optionally each cut to a region, e.g. a person's box) and pairs drawn within a
class with a seed and a pair count."""
from __future__ import annotations

import numpy as np
from PIL import Image

from harness.api import HarnessError, KeypointPair, Option, PairSamples

from ._common import SourceCache, open_rgb, positive

#: the options every drawn-pairs dataset has
PAIR_OPTIONS = {
    "pairs": Option(int, 10000, "pairs drawn (within a class; fewer when the split has fewer)", check=positive),
    "pair_seed": Option(int, 0, "seed of the pair drawing"),
    "min_keypoints": Option(int, 1, "a pair needs at least this many keypoints annotated in both images",
                            check=positive),
}


class ImagePairSamples(PairSamples):
    """Images read from files, each optionally cut to a region (x0, y0, x1, y1) in its file's pixels (the
    keypoints are then in the region's pixels); ``sizes`` are the (width, height) of ``image(i)``."""

    def __init__(self, keys, labels, classes, summary, pairs, paths, sizes, regions=None, files=()):
        super().__init__(keys, labels, classes, summary, pairs, files=[*files, *sorted(set(paths))])
        self.paths, self.sizes = list(paths), [tuple(int(v) for v in s) for s in sizes]
        self.regions = list(regions) if regions is not None else [None] * len(self.paths)
        self._sources = SourceCache(4)

    def image(self, i: int) -> Image.Image:
        img = self._sources.get(self.paths[i], lambda: open_rgb(self.paths[i]))
        r = self.regions[i]
        return img if r is None else img.crop(tuple(int(v) for v in r))

    def image_size(self, i: int) -> tuple[int, int]:
        return self.sizes[i]

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        h.update(repr([None if r is None else tuple(float(v) for v in r) for r in self.regions]).encode())
        return h.hexdigest()


def draw_pairs(categories, keypoints, n_pairs: int, seed: int, min_common: int = 1) -> tuple[list, dict]:
    """Ordered (source, target) pairs of distinct images of the same category with at least ``min_common``
    keypoints annotated in both, drawn without repetition by a seeded generator: a random image, then a random
    other image of its category. ``keypoints[i]``: bool [K], which keypoints image i has. Returns the pairs
    (sorted) and counts for the summary."""
    categories = np.asarray(categories)
    members = {c: np.flatnonzero(categories == c) for c in np.unique(categories)}
    candidates = np.flatnonzero([len(members[c]) > 1 for c in categories]) if len(categories) else np.zeros(0, int)
    rng = np.random.default_rng([seed, 0x9A12])
    chosen, tries, limit = set(), 0, 50 * n_pairs
    while len(chosen) < n_pairs and tries < limit and len(candidates):
        tries += 1
        a = int(candidates[rng.integers(len(candidates))])
        others = members[categories[a]]
        b = int(others[rng.integers(len(others))])
        if a == b or (a, b) in chosen or int(np.sum(keypoints[a] & keypoints[b])) < min_common:
            continue
        chosen.add((a, b))
    return sorted(chosen), {"pairs_requested": n_pairs, "pairs_drawn": len(chosen), "draws": tries}


def keypoint_pairs(chosen, kps, visible, boxes, categories, names, kp_ids=None) -> list[KeypointPair]:
    """``KeypointPair``s of the chosen (source, target) indices: the keypoints annotated in both images
    (``kps[i]`` float [K, 2], ``visible[i]`` bool [K]), the target's box ``boxes[t]`` (x1, y1, x2, y2)."""
    out = []
    for a, b in chosen:
        both = np.flatnonzero(visible[a] & visible[b])
        ids = tuple(int(kp_ids[j]) if kp_ids is not None else int(j) for j in both)
        out.append(KeypointPair(a, b, np.asarray(kps[a][both], np.float64), np.asarray(kps[b][both], np.float64),
                                tuple(float(v) for v in boxes[b]), int(categories[a]), ids, None,
                                f"{names[a]}-{names[b]}"))
    return out


def need_pairs(pairs: list, where: str, counts: dict) -> None:
    if not pairs:
        raise HarnessError(f"{where}: no pair of images of one class shares an annotated keypoint ({counts})")
