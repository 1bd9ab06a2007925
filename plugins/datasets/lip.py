"""LIP (Look Into Person) human parsing, ``lip``: the paper's 19 part classes, layout::

    img/train/*.jpg  ann/train/*.png  img/val/*.jpg  ann/val/*.png

Labels are LIP's index PNGs: 0 = background, ignored (``reduce_zero_label``), 1..19 the parts below.
This is the paper's definition (its ``LIPDataset`` has 19 classes); mmseg 1.x's own ``LIPDataset`` has 20
with background, which is not what Tables 5 and 9 measure.
Official geometry (``lip.py``): train scale 1024x320 with ratio 0.5-2.0 and 320x320 crops; test scale
4096x320, slide windows of 320, stride 161.
"""
from __future__ import annotations

from harness.api import hookimpl

from .seg_folders import SegFolderDataset

LIP_PARTS = ["Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants", "Jumpsuits",
             "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe"]


class LIP(SegFolderDataset):
    """LIP human parsing: 19 part classes, background ignored."""

    classes = LIP_PARTS
    num_classes = 19
    defaults = {"scale": [4096, 320], "crop": [320, 320], "stride": [161, 161], "train_scale": [1024, 320]}
    level, hierarchy = "part", "lip"


@hookimpl
def register_datasets(register):
    register("lip", LIP)
