"""Pascal-Part (193 part classes) and Pascal-Object (16 object classes), ``pascal_part`` and
``pascal_object``, in the paper authors' release layout::

    img/train/*.jpg  ann/train/*.png  img/val/*.jpg  ann/val/*.png

Pascal-Part annotates parts of the PASCAL VOC 2010 objects; the paper keeps the 16 object categories with
parts (VOC's 20 without boat, dining table, chair and sofa) and their 193 parts. The release ships no
class names and its label order is not documented, so classes are numbered unless ``classes_file`` names
them. Labels: single-channel index PNGs, 0 = background (ignored), 1..C (``reduce_zero_label``).
Official geometry (``pascal_193part.py`` / ``pascal_16semantic.py``): train scale 520x520 with ratio
0.5-2.0 and 480x480 crops; test scale 3840x480, slide windows of 480, stride 161.
"""
from __future__ import annotations

from harness.api import hookimpl

from .seg_folders import SegFolderDataset


class _Pascal(SegFolderDataset):
    """The pair's shared release layout (``img/``, ``ann/``) and official geometry."""

    defaults = {"scale": [3840, 480], "crop": [480, 480], "stride": [161, 161], "train_scale": [520, 520]}
    hierarchy, levels = "pascal", ("object", "part")


class PascalPart(_Pascal):
    """Pascal-Part: 193 part classes of 16 VOC object categories."""

    num_classes = 193
    level = "part"


class PascalObject(_Pascal):
    """Pascal-Object: the 16 VOC object categories that have parts."""

    num_classes = 16
    level = "object"


@hookimpl
def register_datasets(register):
    register("pascal_part", PascalPart)
    register("pascal_object", PascalObject)
