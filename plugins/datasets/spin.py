"""SPIN, SubPartImageNet (``spin``): subparts on PartImageNet_Seg images, object -> part -> subpart (158 objects,
40 parts, 203 subparts). Layout, as the official ``spin-api`` reads it::

    <root>/spin_{split}_{wholes,parts,subparts}.json     COCO, masks as compressed RLE
    <images>/<split>/<file_name>.JPEG                      PartImageNet_Seg's images (file_name has no extension)
    <masks>/<split>_{whole,part,subpart}/<file_name>.png   optional label maps, written by the API's
                                                           SPIN(annotation_dir, image_dir, split).rasterize_dataset()

``images`` defaults to ``<root>/images``, ``masks`` to ``root``. Levels: ``object`` (the wholes), ``part``,
``subpart`` (default). Crops come from the JSON files (objects: the square around the box; parts and subparts:
around the mask centroid, d_min within the image); segmentation reads the rasterised maps where they are, and
otherwise paints the same maps from the JSON by the API's rule (``written_maps``): value = category id over the
level's background (object 158, part 40, subpart 0, a class named ``background``), masks in file order. Split
names other than ``test`` are unverified. The hierarchy is not linked
by ids (the API has no parent field): levels are compared side by side, not nested.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.api import HarnessError, Option, hookimpl

from ._common import expand
from .part_levels import LevelledDataset, instance_items, label_map_samples, level_option, value_classes
from .partimagenet import GEOMETRY

SOURCE = "https://github.com/joshmyersdean/spin-api (annotations) on PartImageNet_Seg images"
FILES = {"object": "wholes", "part": "parts", "subpart": "subparts"}
MAPS = {"object": "whole", "part": "part", "subpart": "subpart"}
BACKGROUND = {"object": 158, "part": 40, "subpart": 0}


class Spin(LevelledDataset):
    """SPIN: object, part and subpart crops (JSON) and label maps (the API's rasterised PNGs)."""

    version = "1"
    levels = ("object", "part", "subpart")
    default_level = "subpart"
    hierarchy = "spin"
    source = SOURCE
    options = {
        "root": Option(str, help="folder holding spin_{split}_{wholes,parts,subparts}.json", path="dir"),
        "images": Option(str, None, "PartImageNet_Seg's images folder, with one folder per split (default: "
                         "root/images)", path="dir", nullable=True),
        "masks": Option(str, None, "folder of the API's rasterised <split>_{whole,part,subpart}/ maps (default: "
                        "root when it has them, else the maps are painted from the JSON into the cache)",
                        path="dir", nullable=True),
        **level_option(levels, default_level),
    }

    def map_levels(self):
        return self.levels

    def folder(self, key: str, default: Path) -> Path:
        return expand(self.opts[key]) if self.opts.get(key) else default

    def annotation(self, split: str):
        path = self.root() / f"spin_{split}_{FILES[self.level]}.json"
        if not path.is_file():
            raise self.missing(path, f"SPIN {FILES[self.level]} annotation file of split '{split}'")
        coco = self.instances(path)
        cats = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
        if not cats:
            raise HarnessError(f"{path}: no 'categories'")
        return path, coco, cats

    def image_dir(self, split: str) -> Path:
        return self.folder("images", self.root() / "images") / split

    def read_items(self, split: str):
        path, coco, cats = self.annotation(split)
        images = self.image_dir(split)
        items, summary = instance_items(path, coco.dataset.get("annotations", []), coco.imgs,
                                        lambda im: images / f"{im['file_name']}.JPEG",
                                        {c["id"]: i for i, c in enumerate(cats)}, point=self.level != "object",
                                        source=self.source)
        return items, [c["name"] for c in cats], summary, [path]

    def map_samples(self, split: str):
        """The API's rasterised maps where they are (``masks``, else ``root``), else maps painted here by the
        API's own rule (``rasterize_dataset``): value = category id over the level's background value, masks
        painted in file order (a later annotation wins where they overlap)."""
        ann = self.folder("masks", self.root()) / f"{split}_{MAPS[self.level]}"
        if self.opts.get("masks") or ann.is_dir():
            return self.rasterised_maps(split, ann)
        path, coco, cats = self.annotation(split)
        background = BACKGROUND[self.level]
        too_big = [c["id"] for c in cats if not 0 <= c["id"] < 255]
        if too_big:
            raise HarnessError(f"{path}: category id {too_big[0]} does not fit an 8-bit label map (0..254)")
        classes = value_classes({c["id"]: str(c.get("name", c["id"])) for c in cats}, background)
        images = self.image_dir(split)
        return self.painted_maps(path, coco, lambda a: a["category_id"], lambda im: images / f"{im['file_name']}.JPEG",
                                 background, "file", classes, split, GEOMETRY,
                                 f"spin-api rasterize_dataset: category id over background {background}, file order",
                                 every_image=True)

    def rasterised_maps(self, split: str, ann: Path):
        path = self.root() / f"spin_{split}_{FILES[self.level]}.json"
        if not path.is_file():
            raise self.missing(path, f"SPIN {FILES[self.level]} annotation file of split '{split}'")
        try:  # the class names only: the annotations are checked where crops are read
            cats = json.loads(path.read_text()).get("categories") or []
        except (OSError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
        if not cats or not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in cats):
            raise HarnessError(f"{path}: 'categories' must list entries with an integer 'id'")
        img = self.image_dir(split)
        if not img.is_dir():
            raise self.missing(img, "image folder")
        if not ann.is_dir():
            raise self.missing(ann, "rasterised label-map folder (the 'masks' option names the folder holding "
                               f"{split}_{MAPS[self.level]}/; leave it out to have the maps painted from the JSON)")
        classes = value_classes({c["id"]: str(c.get("name", c["id"])) for c in cats}, BACKGROUND[self.level])
        return label_map_samples(img, ann, classes, split, GEOMETRY, img_suffix=".JPEG")

@hookimpl
def register_datasets(register):
    register("spin", Spin)
