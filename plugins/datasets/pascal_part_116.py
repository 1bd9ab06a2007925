"""Pascal-Part-116 (``pascal_part_116``): OV-PARTS' split of Pascal-Part, 116 part classes of the 20 PASCAL
VOC objects, with object maps. Layout under ``root`` (the release's ``PascalPart116`` folder)::

    images/{train,val}/<voc_id>.jpg
    annotations_detectron2_part/{train,val}/<voc_id>.png   116 parts (0-115), 255 = ignore
    annotations_detectron2_obj/{train,val}/<voc_id>.png    20 objects (0-19), 255 = ignore

Levels: ``object`` and ``part`` (default); both have label maps and crops. Part names "<object>'s <part>" in
the release's index order (diningtable and sofa have no parts). That 255 is the background in the object maps
(not only "ignore") is unverified: it is read as ignore in both.
"""
from __future__ import annotations

from harness.api import Option, hookimpl

from .ov_parts import OVPartsDataset, owned_names
from .pascal_part import _Pascal

VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
_VEHICLE = "wheel headlight front side back roof mirror license_plate door window"
PARTS = owned_names([
    ("aeroplane", "body stern wing tail engine wheel"), ("bicycle", "wheel saddle handlebar chainwheel headlight"),
    ("bird", "wing tail head eye beak torso neck leg foot"), ("bottle", "body cap"), ("bus", _VEHICLE),
    ("car", _VEHICLE), ("cat", "tail head eye torso neck leg nose paw ear"),
    ("cow", "tail head eye torso neck leg ear muzzle horn"),
    ("dog", "tail head eye torso neck leg nose paw ear muzzle"),
    ("horse", "tail head eye torso neck leg ear muzzle hoof"), ("motorbike", "wheel saddle handlebar headlight"),
    ("person", "head eye torso neck leg foot nose ear eyebrow mouth hair lower_arm upper_arm hand"),
    ("pottedplant", "pot plant"), ("sheep", "tail head eye torso neck leg ear muzzle horn"),
    ("train", "headlight head front side back roof coach"), ("tvmonitor", "screen")])


class PascalPart116(OVPartsDataset):
    """Pascal-Part-116 (OV-PARTS): 20 objects, 116 parts, object and part label maps."""

    version = "1"
    hierarchy = "pascal_part_116"
    class_lists = {"object": VOC, "part": PARTS}
    defaults = _Pascal.defaults
    options = {
        "root": Option(str, help="the PascalPart116 folder (images/, annotations_detectron2_part/, "
                       "annotations_detectron2_obj/)", path="dir"),
    }


@hookimpl
def register_datasets(register):
    register("pascal_part_116", PascalPart116)
