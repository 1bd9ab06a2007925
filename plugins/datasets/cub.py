"""CUB-200-2011 part crops (``cub_parts``), read from the text files the dataset ships with.

Layout under ``root`` (the extracted ``CUB_200_2011`` folder)::

    images.txt               <image_id> <relative path under images/>
    images/<class>/<file>.jpg
    parts/parts.txt          <part_id> <part name ...>
    parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>
    train_test_split.txt     <image_id> <is_training_image>   (only for splits train/test)

Rules of the official code (retrieval-classification/moco/loader.py, PatchLoaderCUB200): a keypoint
is used when its part id is selected and ``visible == 1``; d_min is its distance to the nearest
other used keypoint of the same image; it is kept when 20 < d_min/2 < 1000; the crop is the square
of half-side round(d_min/4) centred on it, black outside the image. The label is the index of the
part id in ``keypoints``.
"""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from harness.api import Dataset, HarnessError, Option, hookimpl

from ._common import distinct_ids_check, expand, image_size, need_dir, read_rows
from .part_crops import CROP_RULE_COUNTERS, crop_samples, half_distances, kept_crops

DEFAULT_KEYPOINTS = [11, 12, 9, 14]  # right eye, right leg, left wing, tail (1-based ids of parts.txt)


_check_ids = distinct_ids_check("part ids (1-based, as in parts/parts.txt)")


def read_cub_tables(root, split: str):
    """The CUB tables every reader needs: (root, part names by id, image paths by id relative to images/,
    the ids of the split's images)."""
    root = expand(root)
    need_dir(root, "CUB_200_2011 root")
    parts_file = root / "parts" / "parts.txt"
    part_names = {}
    for lineno, (pid, name) in read_rows(parts_file, [int], rest=True):
        if pid in part_names:
            raise HarnessError(f"{parts_file}:{lineno}: duplicate part id {pid}")
        part_names[pid] = name
    images_file = root / "images.txt"
    images = {}
    for lineno, (iid, rel) in read_rows(images_file, [int, str]):
        if iid in images:
            raise HarnessError(f"{images_file}:{lineno}: duplicate image id {iid}")
        images[iid] = rel

    selected = set(images)
    if split != "all":
        split_file = root / "train_test_split.txt"
        is_train = {}
        for lineno, (iid, flag) in read_rows(split_file, [int, int]):
            if iid not in images or flag not in (0, 1):
                raise HarnessError(f"{split_file}:{lineno}: " + (
                    f"image id {iid} is not in {images_file}" if iid not in images
                    else f"is_training_image must be 0 or 1, got {flag}"))
            is_train[iid] = flag
        missing = [i for i in images if i not in is_train]
        if missing:
            raise HarnessError(f"{split_file}: image id {missing[0]} of images.txt has no split entry")
        want = 1 if split == "train" else 0
        selected = {i for i, f in is_train.items() if f == want}
    return root, part_names, images, selected


def part_locations(root, images: dict, part_names: dict):
    """(image id, part id, x, y, visible) of every row of parts/part_locs.txt, checked."""
    locs_file = root / "parts" / "part_locs.txt"
    for lineno, (iid, pid, x, y, vis) in read_rows(locs_file, [int, int, float, float, int]):
        if iid not in images:
            raise HarnessError(f"{locs_file}:{lineno}: image id {iid} is not in {root / 'images.txt'}")
        if pid not in part_names:
            raise HarnessError(f"{locs_file}:{lineno}: part id {pid} is not in {root / 'parts' / 'parts.txt'}")
        if vis not in (0, 1):
            raise HarnessError(f"{locs_file}:{lineno}: visible must be 0 or 1, got {vis}")
        yield iid, pid, x, y, vis


def read_cub_parts(root, keypoints, split: str = "all", check_images: bool = True):
    """Parse a CUB tree into crop items. Returns (items, classes, summary) where items is a list of
    (key, label, image path, box)."""
    root, part_names, images, selected = read_cub_tables(root, split)
    parts_file = root / "parts" / "parts.txt"
    for pid in keypoints:
        if pid not in part_names:
            raise HarnessError(f"{parts_file}: keypoint id {pid} is not listed (ids: "
                               f"{', '.join(map(str, sorted(part_names)))})")
    label_of = {pid: i for i, pid in enumerate(keypoints)}
    classes = [part_names[pid] for pid in keypoints]

    counts = Counter()
    per_image: dict[int, list] = {}
    for iid, pid, x, y, vis in part_locations(root, images, part_names):
        if iid not in selected or pid not in label_of:
            continue
        counts["annotated"] += 1
        if vis != 1:
            counts["dropped_invisible"] += 1
            continue
        per_image.setdefault(iid, []).append((pid, x, y))

    items = []
    for iid in sorted(per_image):
        kps = per_image[iid]
        rel = images[iid]
        path = root / "images" / rel
        halves = half_distances(np.array([[x, y] for _, x, y in kps]))
        size_of = functools.cache(functools.partial(image_size, path)) if check_images else (lambda: None)
        for (pid, _, _), box in kept_crops(kps, halves.tolist(), counts, size_of):
            items.append((f"{rel}#{pid}", label_of[pid], str(path), box))

    per_class = Counter(lab for _, lab, _, _ in items)
    summary = {
        "images": len(selected),
        "images_with_crops": len({p for _, _, p, _ in items}),
        "keypoints_annotated": counts["annotated"],
        "kept": counts["kept"],
        "dropped_invisible": counts["dropped_invisible"],
        **{k: counts[k] for k in CROP_RULE_COUNTERS},
        "per_class": {classes[c]: per_class.get(c, 0) for c in range(len(classes))},
    }
    return items, classes, summary


class CubParts(Dataset):
    """CUB-200-2011 keypoint-centred part crops (official part-retrieval / classification rule)."""

    splits = ("all", "train", "test")
    options = {
        "root": Option(str, help="the CUB_200_2011 folder (images.txt, images/, parts/, train_test_split.txt)",
                       path="dir"),
        "keypoints": Option(list, list(DEFAULT_KEYPOINTS), "part ids of parts/parts.txt (1-based); label = "
                            "position in this list", check=_check_ids),
        "check_images": Option(bool, True, "read every used image's header at load time (sizes for the "
                               "summary; fails early on unreadable files)"),
    }

    def load(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        items, classes, summary = read_cub_parts(self.opts["root"], list(self.opts["keypoints"]), split,
                                                 self.opts.get("check_images", True))
        summary["split"] = split
        root = expand(self.opts["root"])
        files = [root / "images.txt", root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"]
        if split != "all":
            files.append(root / "train_test_split.txt")
        return crop_samples(items, classes, summary, files=files)


@hookimpl
def register_datasets(register):
    register("cub_parts", CubParts)
