"""ADE20K segmentation datasets (``ade20k``, ``ade20k_object``, ``ade20k_part``), in the layouts they are
distributed in.

``ade20k``: the 150-class scene-parsing benchmark, ``ADEChallengeData2016`` as downloaded::

    images/training/*.jpg  annotations/training/*.png  images/validation/*.jpg  annotations/validation/*.png

``ade20k_object``: the paper authors' 59 object classes in the same layout (their release
``ade_59object/ADEChallengeData2016``; point ``root`` at the ``ADEChallengeData2016`` folder).
``ade20k_part``: the authors' 209 part classes, ``img/{train,val}/*.jpg`` and ``ann/{train,val}/*.png``.
(The 59/209 releases are on the authors' Google Drive, folder ``1JSNzbxc9MBpNIhMRP8Vd0FFk7K5hC65q``.)

Labels: single-channel index PNGs, 0 = unlabelled (ignored), classes 1..C (``reduce_zero_label``).
Official geometry (the paper's ``configs_local/_base_/datasets/ade20k*.py``): train scale 2048x512 with
ratio 0.5-2.0 and 512x512 crops; test scale 2048x512, slide windows of 512, stride 341.
Class names: ADE20K-150's standard names; the object/part releases ship no names (the official fork's
class tuples are placeholders), so they are numbered unless ``classes_file`` gives them.
"""
from __future__ import annotations

from harness.api import hookimpl

from .seg_folders import RELEASE_LAYOUT, SegFolderDataset

ADE_GEOMETRY = {"scale": [2048, 512], "crop": [512, 512], "stride": [341, 341], "train_scale": [2048, 512]}
ADE_LAYOUT = {"train": ("images/training", "annotations/training"),
              "val": ("images/validation", "annotations/validation")}
ADE150 = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag"]


class _ADE(SegFolderDataset):
    """The ADEChallengeData2016 layout and ADE20K's official geometry."""

    folders = ADE_LAYOUT
    defaults = ADE_GEOMETRY


class ADE20K(_ADE):
    """ADE20K scene parsing, 150 classes (ADEChallengeData2016)."""

    classes = ADE150
    num_classes = 150
    level = "object"


class ADE20KObject(_ADE):
    """ADE20K-Object: the paper authors' 59 object classes (ADEChallengeData2016 layout)."""

    num_classes = 59
    level, hierarchy, levels = "object", "ade20k", ("object", "part")


class ADE20KPart(_ADE):
    """ADE20K-Part: the paper authors' 209 part classes (the release's img/ann layout)."""

    folders = RELEASE_LAYOUT
    num_classes = 209
    level, hierarchy, levels = "part", "ade20k", ("object", "part")


@hookimpl
def register_datasets(register):
    register("ade20k", ADE20K)
    register("ade20k_object", ADE20KObject)
    register("ade20k_part", ADE20KPart)
