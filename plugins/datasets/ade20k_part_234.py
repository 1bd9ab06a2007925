"""ADE20K-Part-234 (``ade20k_part_234``): OV-PARTS' part split of ADE20K, 234 part classes of 44 objects. Layout
under ``root`` (the release's ``ADE20KPart234`` folder)::

    images/{training,validation}/<stem>.jpg
    annotations_detectron2_part/{training,validation}/<stem>.png   234 parts (0-233), 255 = ignore
    ade20k_instance_{train,val}.json                                COCO-style object instances

Levels: ``object`` (crops of the instance file's boxes, labelled by its categories; the release has no object
maps, so no segmentation at this level) and ``part`` (default; label maps and crops). Part names "<object>'s
<part>": the release lists them in ``CLASS_NAMES`` of its registration code, contiguous per object; the names
of person's and car's parts are built in, the others are numbered per object (``classes_file`` gives all 234).
"""
from __future__ import annotations

from harness.api import HarnessError, Option, hookimpl

from .ade20k import ADE_GEOMETRY
from .coco import load_coco
from .ov_parts import OVPartsDataset
from .part_levels import check_instances, instance_items

#: the 44 objects with parts and how many parts each has, in the part-index order
OBJECT_PARTS = [("person", 9), ("door", 4), ("clock", 2), ("toilet", 3), ("cabinet", 7), ("sink", 5), ("lamp", 9),
                ("sconce", 5), ("chair", 9), ("chest of drawers", 5), ("chandelier", 8), ("bed", 4), ("table", 6),
                ("armchair", 8), ("ottoman", 3), ("shelf", 4), ("swivel chair", 4), ("fan", 3), ("coffee table", 2),
                ("stool", 2), ("sofa", 7), ("computer", 4), ("desk", 6), ("wardrobe", 6), ("car", 10), ("bus", 9),
                ("oven", 4), ("cooking stove", 6), ("microwave", 6), ("refrigerator", 4), ("kitchen island", 5),
                ("dishwasher", 3), ("bookcase", 4), ("television receiver", 6), ("glass", 4), ("pool table", 3),
                ("van", 10), ("airplane", 7), ("truck", 8), ("minibike", 4), ("washer", 4), ("bench", 4),
                ("traffic light", 2), ("light", 6)]
KNOWN = {"person": ["arm", "back", "foot", "gaze", "hand", "head", "leg", "neck", "torso"],
         "car": ["bumper", "door", "headlight", "hood", "license plate", "logo", "mirror", "wheel", "window", "wiper"]}
PARTS = [f"{obj}'s {KNOWN[obj][k] if obj in KNOWN else f'part {k + 1}'}" for obj, n in OBJECT_PARTS for k in range(n)]


class ADE20KPart234(OVPartsDataset):
    """ADE20K-Part-234 (OV-PARTS): 44 objects (instance boxes), 234 parts (label maps)."""

    version = "1"
    hierarchy = "ade20k_part_234"
    split_dirs = {"train": "training", "val": "validation"}
    class_lists = {"part": PARTS}
    defaults = ADE_GEOMETRY
    options = {
        "root": Option(str, help="the ADE20KPart234 folder (images/, annotations_detectron2_part/, "
                       "ade20k_instance_{train,val}.json)", path="dir"),
    }

    def read_items(self, split: str):
        if self.level == "part":
            return super().read_items(split)
        path = self.root() / f"ade20k_instance_{split}.json"
        if not path.is_file():
            raise self.missing(path, "object instance file")
        coco = load_coco(path)
        cats = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
        if not cats:
            raise HarnessError(f"{path}: no 'categories'")
        check_instances(path, coco.dataset, {c["id"] for c in cats})
        img_dir = self.root() / "images" / self.split_dirs[split]
        items, summary = instance_items(path, coco.dataset.get("annotations", []), coco.imgs,
                                        lambda im: img_dir / im["file_name"], {c["id"]: i for i, c in enumerate(cats)},
                                        point=False, source=self.source)
        return items, [c.get("name", str(c["id"])) for c in cats], summary, [path]


@hookimpl
def register_datasets(register):
    register("ade20k_part_234", ADE20KPart234)
