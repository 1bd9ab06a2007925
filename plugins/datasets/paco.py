"""PACO (``paco``): 75 object and 456 object-part categories (200 part names) on COCO images, from the
PACO-LVIS annotation files. Layout: ``root`` holds (directly or under ``annotations/``)::

    paco_lvis_v1_{train,val,test}.json        LVIS-style: images, annotations, categories, part_categories, ...

and the images are the COCO images you already have: ``coco_images`` is the COCO image root that
``images[].file_name`` is joined onto (a bare file name is also looked up in its ``train2017/`` and ``val2017/``;
the release's val split is carved from COCO train2017, third-party notes say: unverified).

Levels: ``object`` (annotations with ``id == obj_ann_id``: the square around the box, labelled by the 75 object
categories) and ``part`` (default; every other annotation, a part of the object ``obj_ann_id`` names: cropped
around its mask centroid, d_min among the parts of the same object as COCO's within_person rule, labelled by
the 456 "object:part" categories). Masks are polygons or RLE (both decoded with pycocotools). No label maps
(instances overlap and the release ships none): segmentation does not run on PACO. PACO-Ego4D (own images)
is not read.
"""
from __future__ import annotations

from pathlib import Path

from harness.api import HarnessError, Option, hookimpl

from ._common import expand
from .coco import load_coco
from .part_levels import LevelledDataset, check_instances, instance_items

SOURCE = "https://github.com/facebookresearch/paco (paco_lvis_v1 annotations; images: COCO 2017)"
SUPERCATEGORY = {"object": "OBJECT", "part": "PART"}


class Paco(LevelledDataset):
    """PACO-LVIS object and object-part crops on COCO 2017 images."""

    version = "1"
    hierarchy = "paco"
    source = SOURCE
    options = {
        "root": Option(str, help="folder holding paco_lvis_v1_{train,val,test}.json (or its annotations/)",
                       path="dir"),
        "coco_images": Option(str, help="the COCO image root file_name is joined onto (holding train2017/ and "
                              "val2017/)", path="dir"),
    }

    def annotation_file(self, split: str) -> Path:
        name = f"paco_lvis_v1_{split}.json"
        root = self.root()
        found = next((p for p in (root / name, root / "annotations" / name) if p.is_file()), None)
        if found is None:
            raise self.missing(root / name, f"PACO-LVIS annotation file of split '{split}'")
        return found

    def image_file(self, im: dict) -> Path:
        base = expand(self.opts["coco_images"])
        direct = base / im["file_name"]
        if direct.is_file():
            return direct
        name = Path(im["file_name"]).name
        return next((p for p in (base / "train2017" / name, base / "val2017" / name) if p.is_file()), direct)

    def read_items(self, split: str):
        path = self.annotation_file(split)
        coco = load_coco(path)
        data = coco.dataset
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        check_instances(path, data, {c["id"] for c in cats})
        mine = [c for c in cats if c.get("supercategory") == SUPERCATEGORY[self.level]]
        if not mine:
            raise HarnessError(f"{path}: no category with supercategory '{SUPERCATEGORY[self.level]}' "
                               "(not a PACO file?)")
        ids = {a["id"] for a in data.get("annotations", [])}
        for a in data.get("annotations", []):
            if a.get("obj_ann_id") not in ids:
                raise HarnessError(f"{path}: annotation {a.get('id')}: obj_ann_id {a.get('obj_ann_id')!r} is not an "
                                   "annotation of the file")
        is_object = self.level == "object"
        items, summary = instance_items(path, data["annotations"], coco.imgs, self.image_file,
                                        {c["id"]: i for i, c in enumerate(mine)}, point=not is_object,
                                        group_of=lambda a: a["obj_ann_id"],
                                        keep=lambda a: (a["id"] == a["obj_ann_id"]) == is_object, source=self.source)
        return items, [c["name"] for c in mine], summary, [path]


@hookimpl
def register_datasets(register):
    register("paco", Paco)
