"""The ``kind: objects`` family of ``synthetic_parts``: objects whose class is the configuration of their
parts (which part types are present and where they sit), while every part's appearance is random.

Rules (also in docs/datasets.md, "Synthetic objects"):

- Four part types, told apart by **shape and how they sit on their arm**, never by colour: disc, ring
  (the disc with a hole of half its radius), bar (a 0.3 x 0.95 rectangle lying along its arm, +-15
  degrees) and tee (the same rectangle lying across its arm, +-15 degrees: with the arm it makes a T),
  all drawn with the same circumradius (the distance from the part's centre to its farthest point), so
  that every part lies whole inside the crop the official part-crop rule cuts around its keypoint.
  (Version 1 of the family used disc, square, triangle and cross at a random rotation; a tiny ViT could
  not learn its classes on CPU, see docs/datasets.md.)
- An object is a hub (an ellipse) with three parts attached by arms at three slots 120 degrees apart:
  N (above), SE (lower right), SW (lower left), at distance R from the hub centre. (Three slots at 120
  degrees keep the parts sqrt(3) R apart, so the official crop, half-side d_min/4, holds parts of
  circumradius up to ~0.37 R: large enough to be seen at the tiny models' 96 px.)
- The object **class** is the slot -> part-type map (``CLASSES``): three of the four types, in one of
  their arrangements. The eight classes are built so that no single cue names the class: every part
  set is used by exactly two classes, in two arrangements (1 is the mirror image of 0; 2/3 swap N and
  SW, 4/5 swap N and SE, 7 is 6 rotated by a slot); every part type sits in every slot in exactly two
  classes. There is no mirroring and no occlusion (either would change the class).
- Appearance varies freely within a class: every part and the hub get an independent random colour
  pair (hue uniform, saturation and value in [0.35, 0.95]) and texture (solid, stripes, dots or
  checker, random period and phase), a random size (circumradius 0.32 R x U(0.85, 1.15)) and an
  in-plane orientation (uniform for disc and ring, the jitter above for bar and tee); the object has a
  random scale, position and tilt (+-15 degrees); background, distractor blobs, brightness and noise as
  the birds.

``render(rng, size)`` draws one image and returns (RGB uint8 [H,W,3], part label map, info) with info
``label`` (class index), ``keypoints`` (name -> (x, y, inside image)) for the hub and the parts that are
present (absent part types are not annotated), ``bbox`` and ``object_mask``.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from .synthetic_drawing import background, finish, object_box, paint, solid

PART_TYPES = ["disc", "ring", "bar", "tee"]
_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)
SLOTS = {"N": (0.0, -1.0), "SE": (_C, _S), "SW": (-_C, _S)}  # y down
CLASSES = [  # slot -> part type; the class is exactly this map
    {"N": "disc", "SE": "ring", "SW": "bar"},
    {"N": "disc", "SE": "bar", "SW": "ring"},
    {"N": "ring", "SE": "disc", "SW": "tee"},
    {"N": "tee", "SE": "disc", "SW": "ring"},
    {"N": "bar", "SE": "tee", "SW": "disc"},
    {"N": "tee", "SE": "bar", "SW": "disc"},
    {"N": "ring", "SE": "tee", "SW": "bar"},
    {"N": "bar", "SE": "ring", "SW": "tee"},
]


def class_name(config: dict) -> str:
    """e.g. 'disc-N_ring-SE_bar-SW' (slots in N, SE, SW order)."""
    return "_".join(f"{config[s]}-{s}" for s in SLOTS if s in config)


CLASS_NAMES = [class_name(c) for c in CLASSES]
# segmentation labels of the part masks (0 = background); the hub and the arms are "hub"
SEG_PARTS = ["background", "hub", *PART_TYPES]
# keypoint names in CUB part id / COCO keypoint order (1-based): the hub centre, then one per part type
KEYPOINTS = ["hub", *PART_TYPES]

# object geometry in units of R (hub centre -> part centre)
R_RANGE = (0.20, 0.28)  # R as a fraction of the image side
HUB_RADIUS = 0.42
# circumradius of every part (x U(0.85, 1.15)): at most 0.37 R, inside the official crop around the part's
# keypoint, whose half-side is d_min / 4 with d_min ~ sqrt(3) R (the distance to the next slot's part)
PART_EXTENT = 0.32
ARM_WIDTH = 0.14
RING_HOLE = 0.5  # the ring's inner radius / its outer radius
BAR_WIDTH = 0.3  # the bar's and the tee's half-width / circumradius (half-length sqrt(1 - 0.3^2) = 0.95)
BAR_JITTER = 0.26  # radians (15 degrees) around along-the-arm (bar) or across-the-arm (tee)
TEXTURES = ("solid", "stripes", "dots", "checker")


def _colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.35, 0.95), rng.uniform(0.35, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _texture(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray):
    """A random two-colour texture: (function mask -> RGB values of the masked pixels)."""
    a, b = _colour(rng), _colour(rng)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    per, th, ph = rng.uniform(5, 9), rng.uniform(0, np.pi), rng.uniform(0, 1, 2)
    if kind == "solid":
        sel = None
    elif kind == "stripes":
        sel = ((xx * math.cos(th) + yy * math.sin(th)) / per + ph[0]) % 1.0 < 0.5
    elif kind == "dots":
        sel = ((xx / per + ph[0]) % 1.0 - 0.5) ** 2 + ((yy / per + ph[1]) % 1.0 - 0.5) ** 2 < 0.3 ** 2
    else:  # checker
        sel = (np.floor(xx / per + ph[0]) + np.floor(yy / per + ph[1])) % 2 == 0
    if sel is None:
        return solid(a)
    return lambda m: np.where(sel[m][:, None], a, b)


def _shape(kind: str, r: float, angle: float, n: int = 48) -> tuple[np.ndarray, np.ndarray | None]:
    """(outline [K,2], hole [K,2] or None) of a part of circumradius ``r`` around the origin; bar and tee
    have their long side at ``angle`` (disc and ring are drawn unrotated)."""
    if kind in ("disc", "ring"):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        circle = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        return circle, RING_HOLE * circle if kind == "ring" else None
    if kind in ("bar", "tee"):  # the corners lie on the circumcircle
        c, s = math.cos(angle), math.sin(angle)
        w = BAR_WIDTH * r
        L = math.sqrt(r * r - w * w)
        return np.array([[-L, -w], [L, -w], [L, w], [-L, w]]) @ np.array([[c, s], [-s, c]]), None
    raise ValueError(kind)


def render(rng: np.random.Generator, size: int):
    """One image of the objects family (see the module docstring), on the birds' background."""
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = background(rng, size, xx, yy)

    label = int(rng.integers(len(CLASSES)))
    config = CLASSES[label]
    R = rng.uniform(*R_RANGE) * size
    cx = size / 2 + rng.uniform(-0.05, 0.05) * size
    cy = size / 2 + rng.uniform(-0.05, 0.05) * size
    tilt = rng.uniform(-0.26, 0.26)
    ct, st = math.cos(tilt), math.sin(tilt)

    def to_pixels(p):  # object coordinates (units of R, y down) -> pixels
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        x, y = p[:, 0] * R, p[:, 1] * R
        return np.stack([cx + ct * x - st * y, cy + st * x + ct * y], 1)

    labels = np.zeros((H, W), np.uint8)

    # part centres: the slot direction at distance ~R, slightly jittered
    centres = {}
    for slot in SLOTS:
        if slot in config:
            dx, dy = SLOTS[slot]
            d, side = 1.0 + rng.uniform(-0.05, 0.05), rng.uniform(-0.06, 0.06)
            centres[config[slot]] = (dx * d - dy * side, dy * d + dx * side)
    hub_fill = _texture(rng, xx, yy)
    arm_rgb = _colour(rng)
    for part in PART_TYPES:  # arms first, under the hub and the parts
        if part in centres:
            p1 = np.asarray(centres[part])
            n = np.array([-p1[1], p1[0]]) / (np.hypot(*p1) + 1e-9) * ARM_WIDTH / 2
            paint(img, labels, to_pixels([n, p1 + n, p1 - n, -n]), solid(arm_rgb), 1)
    hr = HUB_RADIUS * rng.uniform(0.85, 1.15, 2)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rot = rng.uniform(0, np.pi)
    hub = np.stack([hr[0] * np.cos(t), hr[1] * np.sin(t)], 1) @ np.array(
        [[math.cos(rot), math.sin(rot)], [-math.sin(rot), math.cos(rot)]])
    paint(img, labels, to_pixels(hub), hub_fill, 1)
    for part in PART_TYPES:
        if part in centres:
            r = PART_EXTENT * rng.uniform(0.85, 1.15)
            centre = np.asarray(centres[part])
            if part in ("bar", "tee"):  # along or across the arm, whose direction is the centre's
                angle = math.atan2(centre[1], centre[0]) + (np.pi / 2 if part == "tee" else 0.0)
                angle += rng.uniform(-BAR_JITTER, BAR_JITTER)
            else:  # disc and ring look the same at any angle; the draw keeps version 2's random stream
                angle = rng.uniform(0, 2 * np.pi)
            outline, hole = _shape(part, r, angle)
            paint(img, labels, to_pixels(outline + centre), _texture(rng, xx, yy), SEG_PARTS.index(part),
                  None if hole is None else to_pixels(hole + centre))

    rgb = finish(rng, img)
    kps = {}
    for name, p in [("hub", (0.0, 0.0)), *[(k, centres[k]) for k in PART_TYPES if k in centres]]:
        x, y = to_pixels(p)[0]
        kps[name] = (float(round(x, 1)), float(round(y, 1)), bool(0 <= x < W and 0 <= y < H))
    obj, bbox = object_box(labels)
    return rgb, labels, {"label": label, "keypoints": kps, "bbox": bbox, "object_mask": obj}
