"""PartImageNet (``partimagenet``): 158 ImageNet classes in 11 super-categories with 40 part categories, both
releases; which one ``root`` holds is detected from its folder layout.

Segmentation release (PartImageNet_Seg; checked first, it may also hold COCO files)::

    images/{train,val,test}/<stem>.JPEG
    annotations/{train,val,test}/<stem>.png        parts: 0-39, 40 = background
    annotations/{train,val,test}_whole/<stem>.png  objects: 0-157 (the ImageNet class), 158 = background

OOD release (PartImageNet_OOD: the splits have disjoint classes)::

    {train,val,test}.json                          COCO; 40 part categories (ids 0-39), polygons
    {train,val,test}/<wnid>/<file_name>            file_name is bare (n01440764_10029.JPEG)

(the JSON files are also found under ``annotations/``). Levels: ``object`` and ``part`` (default). Labels: parts
by the JSON's names ("<Super> <Part>"); objects in the OOD release by super-category (11: the release has no
object field and its splits share no class), in the Seg release by the whole map's value (158 classes, named
object_000..; the value-to-wnid order is undocumented). Label maps keep their background as a class
(``background``, the maps' 40 / 158), read as written (no zero reduction). That the part maps' values follow
the JSON's category ids is unverified (Compositor's hard-coded names differ at 27/28, 35/36, 38/39). The OOD
release's maps are painted from its polygons (``written_maps``): parts by category id, larger first, on 40;
objects as the union of the parts by super-category, on 11.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.api import HarnessError, Option, hookimpl

from .part_levels import LevelledDataset, instance_items, label_map_samples, value_classes

SUPER = ["Quadruped", "Biped", "Fish", "Bird", "Snake", "Reptile", "Car", "Bicycle", "Boat", "Aeroplane", "Bottle"]
_PARTS = [("Quadruped", "Head Body Foot Tail"), ("Biped", "Head Body Hand Foot Tail"), ("Fish", "Head Body Fin Tail"),
          ("Bird", "Head Body Wing Foot Tail"), ("Snake", "Head Body"), ("Reptile", "Head Body Foot Tail"),
          ("Car", "Body Tier Side_Mirror"), ("Bicycle", "Body Head Seat Tier"), ("Boat", "Body Sail"),
          ("Aeroplane", "Head Body Engine Wing Tail"), ("Bottle", "Mouth Body")]
#: the 40 part names of the release's JSON, by category id
PARTS = [f"{sup} {p.replace('_', ' ')}" for sup, names in _PARTS for p in names.split()]
PART_BACKGROUND, WHOLE_BACKGROUND, NUM_OBJECTS = 40, 158, 158
GEOMETRY = {"scale": [2048, 512], "crop": [512, 512], "stride": [341, 341], "train_scale": [2048, 512]}
SOURCE = "https://github.com/TACJu/PartImageNet (PartImageNet_Seg or PartImageNet_OOD)"


class PartImageNet(LevelledDataset):
    """PartImageNet, both releases (detected from the folder layout): object and part level."""

    version = "1"
    hierarchy = "partimagenet"
    source = SOURCE
    options = {
        "root": Option(str, help="the release's folder: images/ and annotations/ (Seg) or {train,val,test}.json "
                       "and {train,val,test}/ (OOD)", path="dir"),
    }

    def release(self) -> str:
        root = self.root()
        if (root / "annotations").is_dir() and (root / "images").is_dir():
            return "seg"
        if any(self._json(s) for s in self.base_splits):
            return "ood"
        raise self.missing(root / "annotations", "PartImageNet_Seg's images/ and annotations/ (nor "
                           "PartImageNet_OOD's train.json)")

    def map_levels(self):
        return self.levels

    def map_samples(self, split: str):
        return self._seg_maps(split) if self.release() == "seg" else self._ood_maps(split)

    # -- Seg release --------------------------------------------------------------------------------
    def _seg_maps(self, split: str):
        root = self.root()
        img, ann = root / "images" / split, root / "annotations" / (split if self.level == "part" else f"{split}_whole")
        for p, what in ((img, "image folder"), (ann, f"{self.level} label-map folder")):
            if not p.is_dir():
                raise self.missing(p, what)
        if self.level == "part":
            classes = value_classes(dict(enumerate(PARTS)), PART_BACKGROUND)
        else:
            classes = value_classes({v: f"object_{v:03d}" for v in range(NUM_OBJECTS)}, WHOLE_BACKGROUND)
        return label_map_samples(img, ann, classes, split, GEOMETRY, img_suffix=".JPEG")

    # -- OOD release: maps painted from the polygons ---------------------------------------------------
    def _ood_maps(self, split: str):
        path, coco, cats = self._ood_file(split)
        if self.level == "part":
            classes = value_classes({c: cats[c].get("name", f"part_{c}") for c in cats}, PART_BACKGROUND)
            value_of = lambda a: a["category_id"]  # noqa: E731
            rule = "parts painted larger first (a smaller part stays visible on a larger one), background 40"
            fill, order = PART_BACKGROUND, "area"
        else:
            classes = [*SUPER, "background"]
            sup = {iid: SUPER.index(self._super_of(anns, cats)) for iid, anns in coco.imgToAnns.items() if anns}
            value_of = lambda a: sup[a["image_id"]]  # noqa: E731
            rule = "the object: the union of its parts, labelled by their super-category; background 11"
            fill, order = len(SUPER), "file"
        return self.painted_maps(path, coco, value_of, self._ood_image_file(split), fill, order, classes, split,
                                 GEOMETRY, rule)

    # -- crops ----------------------------------------------------------------------------------------
    def read_items(self, split: str):
        return self._seg_items(split) if self.release() == "seg" else self._ood_items(split)

    def _seg_items(self, split: str):
        return self.map_crop_items(split, PART_BACKGROUND if self.level == "part" else WHOLE_BACKGROUND,
                                   release="PartImageNet_Seg")

    def _json(self, split: str) -> Path | None:
        root = self.root()
        return next((p for p in (root / f"{split}.json", root / "annotations" / f"{split}.json") if p.is_file()), None)

    def _ood_file(self, split: str):
        """(path, COCO, {id: category}) of the split's annotation file, checked."""
        path = self._json(split)
        if path is None:
            raise self.missing(self.root() / f"{split}.json", f"PartImageNet_OOD annotation file of split '{split}'")
        coco = self.instances(path)
        cats = {c["id"]: c for c in coco.dataset.get("categories", [])}
        if sorted(cats) != list(range(len(cats))):
            raise HarnessError(f"{path}: category ids must be 0..{len(cats) - 1} (PartImageNet's part ids)")
        for cid, c in cats.items():
            if c.get("supercategory") not in SUPER:
                raise HarnessError(f"{path}: category {cid}: supercategory {c.get('supercategory')!r} is not one of "
                                   f"PartImageNet's 11 ({', '.join(SUPER)})")
        return path, coco, cats

    def _ood_image_file(self, split: str):
        images = self.root() / split

        def image_file(im):
            name = im["file_name"]
            return images / name[:9] / name if "/" not in name else images / name

        return image_file

    @staticmethod
    def _super_of(anns: list, cats: dict) -> str:
        """An image's object super-category: the one most of its parts name."""
        return Counter(cats[a["category_id"]]["supercategory"] for a in anns).most_common(1)[0][0]

    def _ood_items(self, split: str):
        path, coco, cats = self._ood_file(split)
        data = coco.dataset
        image_file = self._ood_image_file(split)
        point = self.level == "part"
        if point:
            items, summary = instance_items(path, data["annotations"], coco.imgs, image_file, {c: c for c in cats},
                                            point=True, source=self.source)
        else:  # the object: the box around all parts of the image, labelled by their super-category
            objects = []
            for iid, anns in coco.imgToAnns.items():
                x0, y0 = min(a["bbox"][0] for a in anns), min(a["bbox"][1] for a in anns)
                x1 = max(a["bbox"][0] + a["bbox"][2] for a in anns)
                y1 = max(a["bbox"][1] + a["bbox"][3] for a in anns)
                objects.append({"id": iid, "image_id": iid, "category_id": SUPER.index(self._super_of(anns, cats)),
                                "bbox": [x0, y0, x1 - x0, y1 - y0]})
            items, summary = instance_items(path, objects, coco.imgs, image_file, {i: i for i in range(len(SUPER))},
                                            point=False, source=self.source)
        classes = [cats[i].get("name", f"part_{i}") for i in range(len(cats))] if point else SUPER
        return items, classes, {"release": "PartImageNet_OOD", **summary}, [path]

@hookimpl
def register_datasets(register):
    register("partimagenet", PartImageNet)
