"""The OV-PARTS layout shared by ``pascal_part_116`` and ``ade20k_part_234``: a helper for their plugins.

Label maps are detectron2-style single-channel uint8 PNGs without palette: value = class index, 255 =
ignore (unlabelled pixels, read as written: no zero reduction). Images and maps are paired by file stem::

    images/<split dir>/<stem>.jpg
    annotations_detectron2_part/<split dir>/<stem>.png
    annotations_detectron2_obj/<split dir>/<stem>.png     (Pascal-Part-116 only)

``OVPartsDataset`` reads the part maps (and the object maps where the release has them) as ``SegSamples`` and
crops their regions (``part_levels``); the ``*_label_count.json`` and ``train_16shot.json`` files of the
release are not read (the former were missing from the published release).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from harness.api import HarnessError, Option

from .part_levels import LevelledDataset, label_map_samples
from .seg_folders import read_classes_file

#: label-map folder of each level
MAP_FOLDERS = {"part": "annotations_detectron2_part", "object": "annotations_detectron2_obj"}


def owned_names(groups: Sequence[tuple[str, str]]) -> list[str]:
    """Class names "<object>'s <part>" of (object, space-separated parts with '_' for spaces) groups."""
    return [f"{obj}'s {p.replace('_', ' ')}" for obj, parts in groups for p in parts.split()]


class OVPartsDataset(LevelledDataset):
    """Base of the OV-PARTS releases: subclasses set ``split_dirs`` {split: folder name}, ``class_lists``
    {level: names} for the levels with label maps, and ``defaults`` (evaluation geometry)."""

    base_splits = ("train", "val")
    split_dirs: dict[str, str] = {"train": "train", "val": "val"}
    class_lists: dict[str, list[str]] = {}
    defaults: dict = {}
    source = "https://github.com/OpenRobotLab/OV_PARTS (README: data preparation)"
    options = {
        "classes_file": Option(str, None, "class names of the chosen level, one per line in label order "
                               "(replaces the built-in names)", path="file", nullable=True),
    }

    def map_levels(self):
        return tuple(self.class_lists)

    def classes(self) -> list[str]:
        names = self.class_lists[self.level]
        if self.opts.get("classes_file"):
            given = read_classes_file(self.opts["classes_file"])
            if len(given) != len(names):
                raise HarnessError(f"{self.opts['classes_file']}: {len(given)} class names; level '{self.level}' of "
                                   f"dataset '{self.name}' has {len(names)} classes")
            return given
        return list(names)

    def folders(self, split: str) -> tuple[Path, Path]:
        root = self.root()
        img = root / "images" / self.split_dirs[split]
        ann = root / MAP_FOLDERS[self.level] / self.split_dirs[split]
        for p, what in ((img, "image folder"), (ann, f"{self.level} label-map folder")):
            if not p.is_dir():
                raise self.missing(p, what)
        return img, ann

    def map_samples(self, split: str):
        img, ann = self.folders(split)
        return label_map_samples(img, ann, self.classes(), split, self.defaults)

    def read_items(self, split: str):
        return self.map_crop_items(split)
