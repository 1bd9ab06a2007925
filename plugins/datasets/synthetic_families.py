"""The generator families of ``synthetic_parts`` (option ``kind``) and what the writer needs to know about
each: its renderer (``synthetic_birds``, ``synthetic_objects``), class names, and how its keypoints and
part labels are named in each published format (``synthetic_formats`` writes them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from harness.api import HarnessError

from . import coco as coco_mod
from . import cub as cub_mod
from . import synthetic_birds as birds
from . import synthetic_objects as objects

# colours of the label PNGs' palettes (display only: loaders read the indices)
BIRD_PALETTE = [0, 0, 0, 230, 159, 0, 213, 94, 0, 0, 114, 178, 240, 228, 66, 0, 158, 115]
OBJECT_PALETTE = BIRD_PALETTE + [204, 121, 167, 86, 180, 233, 120, 120, 120, 255, 255, 255]


@dataclass(frozen=True)
class Family:
    """What the writer needs to know about one generator family (``kind``)."""

    kind: str
    version: int  # of what is drawn and written: part of the generation's marker and default folder
    class_names: Sequence[str]  # object classes (CUB class folders, COCO instance categories)
    supercategory: str
    cub_parts: Sequence[str]  # parts/parts.txt, 1-based
    cub_id: dict  # keypoint name -> CUB part id
    coco_category: dict  # the person_keypoints category (name, supercategory, keypoints, skeleton)
    coco_id: dict  # keypoint name -> 1-based COCO keypoint id
    seg_parts: Sequence[str]  # seg/parts/classes.txt (0 = background)
    palette: Sequence[int]
    cub_keypoints: Sequence[int]  # default part ids read back
    coco_keypoints: Sequence[int]
    render: Callable  # (rng, size, hue_jitter) -> (rgb, part labels, info)
    description: str


BIRDS = Family(
    kind="birds", version=birds.VERSION, class_names=[s[0] for s in birds.SPECIES], supercategory="bird",
    cub_parts=birds.CUB_PARTS, cub_id=birds.CUB_ID,
    coco_category={"name": "person", "supercategory": "person", "keypoints": birds.COCO_KEYPOINTS,
                   "skeleton": birds.COCO_SKELETON},
    coco_id=birds.COCO_ID, seg_parts=birds.SEG_PARTS, palette=BIRD_PALETTE, cub_keypoints=cub_mod.DEFAULT_KEYPOINTS,
    coco_keypoints=coco_mod.DEFAULT_KEYPOINTS, render=birds.render, description="partbench synthetic_parts")
OBJECTS = Family(
    kind="objects", version=2, class_names=objects.CLASS_NAMES, supercategory="object",
    cub_parts=objects.KEYPOINTS, cub_id={n: i + 1 for i, n in enumerate(objects.KEYPOINTS)},
    coco_category={"name": "object", "supercategory": "object", "keypoints": objects.KEYPOINTS,
                   "skeleton": [[1, k] for k in range(2, len(objects.KEYPOINTS) + 1)]},
    coco_id={n: i + 1 for i, n in enumerate(objects.KEYPOINTS)}, seg_parts=objects.SEG_PARTS,
    palette=OBJECT_PALETTE, cub_keypoints=[2, 3, 4, 5], coco_keypoints=[2, 3, 4, 5],
    render=lambda rng, size, hue_jitter: objects.render(rng, size),
    description="partbench synthetic_parts (objects)")
FAMILIES = {f.kind: f for f in (BIRDS, OBJECTS)}


def family(kind: str, hue_jitter: float = 0.0) -> Family:
    """The family ``kind``; one-line error for an unknown kind or a hue_jitter it does not take."""
    if kind not in FAMILIES:
        raise HarnessError(f"synthetic_parts: unknown kind {kind!r} (expected one of {', '.join(FAMILIES)})")
    if kind != "birds" and hue_jitter:
        raise HarnessError(f"synthetic_parts: hue_jitter applies to kind 'birds' only (kind {kind!r} already "
                           "draws every part's colour at random)")
    return FAMILIES[kind]
