"""ADE20K-Part-234 (``ade20k_part_234``): OV-PARTS' part split of ADE20K, 234 part classes of 44 objects. Layout
under ``root`` (the release's ``ADE20KPart234`` folder)::

    images/{training,validation}/<stem>.jpg
    annotations_detectron2_part/{training,validation}/<stem>.png   234 parts (0-233); 255 or 65535 = ignore
    ade20k_instance_{train,val}.json                                COCO-style object instances

Levels: ``object`` (the instance file: crops of its boxes, and label maps painted from its masks in file
order with the other pixels ignored, as OV-PARTS' mapper builds its object maps; the release has no object
PNGs) and ``part`` (default; the label maps, and crops of their regions). Part names "<object>'s <part>" in the
release's order (``CLASS_NAMES`` of its registration code). The release's code declares ``ignore_label``
65535 and reads the part maps as 16-bit; the reference notes say 8-bit with 255: both are read, 16-bit maps
through 8-bit copies (65535 -> 255) written once into the cache (``written_maps``). Object category ids index
the 44 objects in alphabetical order when the instance file lists no ``categories``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness.api import HarnessError, Option, hookimpl

from .ade20k import ADE_GEOMETRY
from .ov_parts import OVPartsDataset, owned_names
from .part_levels import instance_items
from .written_maps import IGNORE, written_maps


#: the 44 objects' parts, in part-index order ("<object>'s <part>" in the release's CLASS_NAMES, contiguous per
#: object; '_' stands for a space inside a part name)
OBJECT_PARTS = [
    ("person", "arm back foot gaze hand head leg neck torso"), ("door", "door_frame handle knob panel"),
    ("clock", "face frame"), ("toilet", "bowl cistern lid"), ("cabinet", "door drawer front shelf side skirt top"),
    ("sink", "bowl faucet pedestal tap top"),
    ("lamp", "arm base canopy column cord highlight light_source shade tube"),
    ("sconce", "arm backplate highlight light_source shade"),
    ("chair", "apron arm back base leg seat seat_cushion skirt stretcher"),
    ("chest of drawers", "apron door drawer front leg"),
    ("chandelier", "arm bulb canopy chain cord highlight light_source shade"),
    ("bed", "footboard headboard leg side_rail"), ("table", "apron drawer leg shelf top wheel"),
    ("armchair", "apron arm back back_pillow leg seat seat_base seat_cushion"), ("ottoman", "back leg seat"),
    ("shelf", "door drawer front shelf"), ("swivel chair", "back base seat wheel"), ("fan", "blade canopy tube"),
    ("coffee table", "leg top"), ("stool", "leg seat"),
    ("sofa", "arm back back_pillow leg seat_base seat_cushion skirt"),
    ("computer", "computer_case keyboard monitor mouse"), ("desk", "apron door drawer leg shelf top"),
    ("wardrobe", "door drawer front leg mirror top"),
    ("car", "bumper door headlight hood license_plate logo mirror wheel window wiper"),
    ("bus", "bumper door headlight license_plate logo mirror wheel window wiper"),
    ("oven", "button_panel door drawer top"),
    ("cooking stove", "burner button_panel door drawer oven stove"),
    ("microwave", "button_panel door front side top window"), ("refrigerator", "button_panel door drawer side"),
    ("kitchen island", "door drawer front side top"), ("dishwasher", "button_panel handle skirt"),
    ("bookcase", "door drawer front side"),
    ("television receiver", "base buttons frame keys screen speaker"), ("glass", "base bowl opening stem"),
    ("pool table", "bed leg pocket"),
    ("van", "bumper door headlight license_plate logo mirror taillight wheel window wiper"),
    ("airplane", "door fuselage landing_gear propeller stabilizer turbine_engine wing"),
    ("truck", "bumper door headlight license_plate logo mirror wheel window"),
    ("minibike", "license_plate mirror seat wheel"), ("washer", "button_panel door front side"),
    ("bench", "arm back leg seat"), ("traffic light", "housing pole"),
    ("light", "aperture canopy diffusor highlight light_source shade")]
PARTS = owned_names(OBJECT_PARTS)
#: the instance file's object categories when it lists none: ids index the release's OBJ_CLASS_NAMES (sorted)
UNLISTED = [{"id": k, "name": name} for k, name in enumerate(sorted(obj for obj, _ in OBJECT_PARTS))]
#: 16-bit maps: the ignore value the release's code declares (ignore_label 65535)
IGNORE_16 = 65535


class ADE20KPart234(OVPartsDataset):
    """ADE20K-Part-234 (OV-PARTS): 44 objects (instance masks), 234 parts (label maps)."""

    version = "2"  # 2: the 234 part names of the release (1 named only person's and car's)
    hierarchy = "ade20k_part_234"
    split_dirs = {"train": "training", "val": "validation"}
    class_lists = {"part": PARTS}
    defaults = ADE_GEOMETRY
    options = {
        "root": Option(str, help="the ADE20KPart234 folder (images/, annotations_detectron2_part/, "
                       "ade20k_instance_{train,val}.json)", path="dir"),
    }

    def map_levels(self):
        return self.levels

    def instance_file(self, split: str):
        """(path, COCO, categories sorted by id) of the split's object instance file, checked."""
        path = self.root() / f"ade20k_instance_{split}.json"
        if not path.is_file():
            raise self.missing(path, "object instance file")
        coco = self.instances(path, unlisted=UNLISTED)
        return path, coco, sorted(coco.dataset.get("categories") or UNLISTED, key=lambda c: c["id"])

    def read_items(self, split: str):
        if self.level == "part":
            return super().read_items(split)
        path, coco, cats = self.instance_file(split)
        img_dir = self.root() / "images" / self.split_dirs[split]
        items, summary = instance_items(path, coco.dataset.get("annotations", []), coco.imgs,
                                        lambda im: img_dir / im["file_name"], {c["id"]: i for i, c in enumerate(cats)},
                                        point=False, source=self.source)
        return items, [c.get("name", str(c["id"])) for c in cats], summary, [path]

    def map_samples(self, split: str):
        if self.level == "part":
            return self._part_maps(split)
        path, coco, cats = self.instance_file(split)
        value_of = {c["id"]: k for k, c in enumerate(cats)}
        img_dir = self.root() / "images" / self.split_dirs[split]
        return self.painted_maps(path, coco, lambda a: value_of[a["category_id"]], lambda im: img_dir / im["file_name"],
                                 IGNORE, "file", [c.get("name", str(c["id"])) for c in cats], split, self.defaults,
                                 "instance masks in file order (as OV-PARTS' object_part_mapper), other pixels "
                                 "ignored (255)")

    def _part_maps(self, split: str):
        """The release's part maps; 16-bit ones (65535 = ignore, as its code declares) are read through 8-bit
        copies (255 = ignore) written once into the cache."""
        samples = super().map_samples(split)
        with Image.open(samples.mask_paths[0]) as im:
            if im.mode in ("L", "P"):
                return samples

        def paint(i: int) -> np.ndarray:
            path = samples.mask_paths[i]
            with Image.open(path) as im:
                arr = np.asarray(im).astype(np.int64)
            bad = (arr >= len(PARTS)) & (arr != IGNORE_16) & (arr != IGNORE)
            if bad.any():
                raise HarnessError(f"{path}: label {int(arr[bad].max())} > {len(PARTS) - 1} ({len(PARTS)} classes); "
                                   f"expected 0..{len(PARTS) - 1} or {IGNORE_16} (ignored)")
            return np.where(arr == IGNORE_16, IGNORE, arr).astype(np.uint8)

        entries = []
        for key, image in zip(samples.keys, samples.image_paths):
            with Image.open(image) as im:  # the header only
                entries.append((key, Path(image), im.height, im.width))
        return written_maps(self.maps_ident(split, rule="16-bit maps, 65535 -> 255"), samples.mask_paths, entries,
                            paint, samples.classes, split, self.defaults, {"rule": "16-bit maps: 65535 -> 255"},
                            desc=f"{self.name} {split}: converting 16-bit part maps")

@hookimpl
def register_datasets(register):
    register("ade20k_part_234", ADE20KPart234)
