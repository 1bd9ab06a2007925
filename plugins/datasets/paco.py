"""PACO (``paco``): 75 object and 456 object-part categories (200 part names) on COCO images, from the
PACO-LVIS annotation files. Layout: ``root`` holds (directly or under ``annotations/``)::

    paco_lvis_v1_{train,val,test}.json        LVIS-style: images, annotations, categories, part_categories, ...

and the images are the COCO images you already have: ``coco_images`` is the COCO image root that
``images[].file_name`` is joined onto (a bare file name is also looked up in its ``train2017/`` and ``val2017/``;
the release's val split is carved from COCO train2017, third-party notes say: unverified).

Levels: ``object`` (annotations with ``id == obj_ann_id``: the square around the box, labelled by the 75 object
categories) and ``part`` (default; every other annotation, a part of the object ``obj_ann_id`` names: cropped
around its mask centroid, d_min among the parts of the same object as COCO's within_person rule, labelled by
the 456 "object:part" categories). Masks are polygons or RLE (both decoded with pycocotools). Segmentation
reads maps painted from them (``written_maps``), larger regions first, with the pixels no annotation covers
ignored (PACO-LVIS is not exhaustively annotated): objects by the 75 categories, parts by their bare part name
(the 200 ``part_categories``; 456 classes do not fit 8-bit maps with 255 = ignore). PACO-Ego4D (own images) is
not read.
"""
from __future__ import annotations

from pathlib import Path

from harness.api import HarnessError, Option, hookimpl

from ._common import expand
from .ade20k import ADE_GEOMETRY
from .part_levels import LevelledDataset, instance_items
from .written_maps import IGNORE

SOURCE = "https://github.com/facebookresearch/paco (paco_lvis_v1 annotations; images: COCO 2017)"
SUPERCATEGORY = {"object": "OBJECT", "part": "PART"}
#: COCO images under mmseg's 512 recipe (as its COCO-Stuff config: keep-ratio 2048x512, 512x512 slide crops)
GEOMETRY = ADE_GEOMETRY


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

    def map_levels(self):
        return self.levels

    def checked_file(self, split: str):
        """(path, COCO, this level's categories sorted by id) of the split's file, checked."""
        path = self.annotation_file(split)
        coco = self.instances(path)
        data = coco.dataset
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        mine = [c for c in cats if c.get("supercategory") == SUPERCATEGORY[self.level]]
        if not mine:
            raise HarnessError(f"{path}: no category with supercategory '{SUPERCATEGORY[self.level]}' "
                               "(not a PACO file?)")
        ids = {a["id"] for a in data.get("annotations", [])}
        for a in data.get("annotations", []):
            if a.get("obj_ann_id") not in ids:
                raise HarnessError(f"{path}: annotation {a.get('id')}: obj_ann_id {a.get('obj_ann_id')!r} is not an "
                                   "annotation of the file")
        return path, coco, mine

    def read_items(self, split: str):
        path, coco, mine = self.checked_file(split)
        is_object = self.level == "object"
        items, summary = instance_items(path, coco.dataset["annotations"], coco.imgs, self.image_file,
                                        {c["id"]: i for i, c in enumerate(mine)}, point=not is_object,
                                        group_of=lambda a: a["obj_ann_id"],
                                        keep=lambda a: (a["id"] == a["obj_ann_id"]) == is_object, source=self.source)
        return items, [c["name"] for c in mine], summary, [path]

    @staticmethod
    def part_names(path: Path, data: dict, parts: list[dict]) -> tuple[dict[int, int], list[str]]:
        """({object-part category id: index of its bare part name}, the bare names: ``part_categories``, the
        200 names)."""
        names = [p.get("name") for p in sorted(data.get("part_categories") or [], key=lambda p: p["id"])]
        if not names:  # not in the file: the bare names the categories use, sorted
            names = sorted({c["name"].split(":", 1)[-1] for c in parts})
        index = {n: k for k, n in enumerate(names)}
        out = {}
        for c in parts:
            bare = c["name"].split(":", 1)[-1]
            if bare not in index:
                raise HarnessError(f"{path}: category {c['id']} '{c['name']}': part name '{bare}' is not in "
                                   "'part_categories'")
            out[c["id"]] = index[bare]
        return out, names

    def map_samples(self, split: str):
        path, coco, mine = self.checked_file(split)
        is_object = self.level == "object"
        if is_object:
            value_of = {c["id"]: k for k, c in enumerate(mine)}
            classes = [c["name"] for c in mine]
        else:
            value_of, classes = self.part_names(path, coco.dataset, mine)
        rule = (f"{'objects' if is_object else 'parts, by their bare part name (PACO part_categories),'} painted "
                "larger first (a smaller one stays visible on a larger one); pixels no annotation covers are "
                "ignored (255): PACO-LVIS annotations are not exhaustive")

        def value(a):  # this level's annotations only: objects are their own obj_ann_id
            return value_of.get(a["category_id"]) if (a["id"] == a["obj_ann_id"]) == is_object else None

        return self.painted_maps(path, coco, value, self.image_file, IGNORE, "area", classes, split, GEOMETRY, rule)

@hookimpl
def register_datasets(register):
    register("paco", Paco)
