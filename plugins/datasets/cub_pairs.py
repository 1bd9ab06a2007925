"""CUB-200-2011 keypoint pairs (``cub_pairs``) for ``correspondence``: pairs of whole images of one species
(the class folder of ``images.txt``) drawn with a seed, with the 15 part locations annotated visible in both
images; the PCK threshold uses the target's ``bounding_boxes.txt`` box.

Reads ``images.txt``, ``parts/parts.txt``, ``parts/part_locs.txt``, ``bounding_boxes.txt`` (x, y, width,
height) and, for the train/test splits, ``train_test_split.txt``; every image a pair uses must exist.
"""
from __future__ import annotations

import os

import numpy as np

from harness.api import Dataset, HarnessError, Option, hookimpl

from ._common import ReadAtValidation, image_size, read_rows
from .cub import part_locations, read_cub_tables
from .keypoint_pairs import PAIR_OPTIONS, ImagePairSamples, draw_pairs, keypoint_pairs, need_pairs


def read_cub_pairs(root, split: str, n_pairs: int, seed: int, min_keypoints: int = 1) -> ImagePairSamples:
    root, part_names, images, selected = read_cub_tables(root, split)
    ids = sorted(selected)
    row_of = {iid: r for r, iid in enumerate(ids)}
    pids = sorted(part_names)
    col_of = {pid: c for c, pid in enumerate(pids)}
    kps = np.zeros((len(ids), len(pids), 2))
    visible = np.zeros((len(ids), len(pids)), bool)
    for iid, pid, x, y, vis in part_locations(root, images, part_names):
        if iid in row_of and vis == 1:
            kps[row_of[iid], col_of[pid]] = (x, y)
            visible[row_of[iid], col_of[pid]] = True
    boxes_file = root / "bounding_boxes.txt"
    boxes = {}
    for lineno, (iid, x, y, w, h) in read_rows(boxes_file, [int, float, float, float, float]):
        if w <= 0 or h <= 0:
            raise HarnessError(f"{boxes_file}:{lineno}: box of image {iid} has no area ({w} x {h})")
        boxes[iid] = (x, y, x + w, y + h)
    species = sorted({images[i].split("/")[0] for i in ids})
    cats = np.asarray([species.index(images[i].split("/")[0]) for i in ids], np.int64)
    chosen, counts = draw_pairs(cats, visible, n_pairs, seed, min_keypoints)
    used = sorted({i for pair in chosen for i in pair})
    missing_box = [ids[i] for i in used if ids[i] not in boxes]
    if missing_box:
        raise HarnessError(f"{boxes_file}: image id {missing_box[0]} has no box")
    paths = [str(root / "images" / images[ids[i]]) for i in used]
    gone = [p for p in paths if not os.path.isfile(p)]
    if gone:
        raise HarnessError(f"{root / 'images'}: {len(gone)} images of the pairs are missing, e.g. {gone[0]}")
    index = {i: k for k, i in enumerate(used)}
    pairs = keypoint_pairs([(index[a], index[b]) for a, b in chosen], kps[used], visible[used],
                           [boxes[ids[i]] for i in used], cats[used], [images[ids[i]] for i in used], pids)
    need_pairs(pairs, str(root), counts)
    summary = {"split": split, "images": len(used), "species": len(species), **counts,
               "keypoints": int(sum(len(p.target_kps) for p in pairs))}
    files = [root / "images.txt", root / "parts" / "parts.txt", root / "parts" / "part_locs.txt", boxes_file]
    if split != "all":
        files.append(root / "train_test_split.txt")
    return ImagePairSamples([images[ids[i]] for i in used], cats[used], species, summary, pairs, paths,
                            [image_size(p) for p in paths], files=files)


class CubPairs(ReadAtValidation, Dataset):
    """CUB-200-2011 image pairs of one species with their 15 part locations (keypoint correspondence); the
    split is read at validation."""

    splits = ("all", "train", "test")
    options = {
        "root": Option(str, help="the CUB_200_2011 folder (images.txt, images/, parts/, bounding_boxes.txt, "
                       "train_test_split.txt)", path="dir"),
        **PAIR_OPTIONS,
    }

    def read(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        o = self.opts
        return read_cub_pairs(o["root"], split, o["pairs"], o["pair_seed"], o["min_keypoints"])


@hookimpl
def register_datasets(register):
    register("cub_pairs", CubPairs)
