"""The ``kind: birds`` family of ``synthetic_parts`` (the default): procedurally drawn "birds".

Each image shows one bird of one of four species (body colour and proportions differ) made of visually
distinct parts: a plain red head with an eye and a beak, a striped wing, a dotted tail and thin orange
legs, on a noisy background with distractor blobs. Position, scale, rotation, mirroring, colours and
texture phase vary per image; parts are sometimes occluded (left undrawn and annotated as invisible).
``hue_jitter`` optionally rotates each part's hue per image (a harder variant where colour does not
identify the part). Everything is a pure function of the generator's draws.

Keypoints as written (``CUB_ID``, ``COCO_ID``): CUB ids 11 right eye (centre of the eye), 12 right leg
(middle of the front leg), 9 left wing (wing centre), 14 tail (tail centre), plus 2 beak and 8 left leg;
COCO slots 1 nose = eye, 11 right_wrist = wing, 16 left_ankle = front leg, 13 right_hip = tail,
17 right_ankle = back leg.

``render(rng, size, hue_jitter)`` draws one image and returns (RGB uint8 [H,W,3], part label map
(``SEG_PARTS``), info) with info ``label`` (species index), ``keypoints`` (name -> (x, y, visible)),
``bbox`` and ``object_mask``.
"""
from __future__ import annotations

import math

import numpy as np

from .synthetic_drawing import background, ellipse, finish, hue_turn, object_box, paint, solid, thick_line

#: the generation's version: a change of what is drawn or written bumps it (new cache folder, new marker)
VERSION = 1

# the published formats' vocabularies the birds are written in
CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
             "nape", "right eye", "right leg", "right wing", "tail", "throat"]
COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
                  "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
SPECIES = [  # name, body colour, body radii (x, y), head colour shift
    ("Crimson_Finch", (150, 110, 80), (0.30, 0.19), (0, 0, 0)),
    ("Slate_Warbler", (110, 115, 130), (0.33, 0.17), (-20, 10, 10)),
    ("Olive_Sparrow", (120, 130, 70), (0.28, 0.21), (10, -10, 0)),
    ("Sand_Tern", (200, 185, 150), (0.31, 0.16), (-10, 0, 20)),
]
# part label ids of the segmentation masks
SEG_PARTS = ["background", "body", "head", "wing", "leg", "tail"]
# named keypoints in object coordinates (units of the object size S; x forward, y down)
KP = {"eye": (0.34, -0.30), "beak": (0.50, -0.26), "wing": (-0.05, -0.01), "leg": (0.05, 0.34),
      "leg2": (0.15, 0.33), "tail": (-0.42, -0.04)}
CUB_ID = {"beak": 2, "leg2": 8, "wing": 9, "eye": 11, "leg": 12, "tail": 14}
COCO_ID = {"eye": 1, "wing": 11, "tail": 13, "leg": 16, "leg2": 17}


def render(rng: np.random.Generator, size: int, hue_jitter: float = 0.0):
    """One image: (RGB uint8 [H,W,3], part label map, object info dict)."""
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = background(rng, size, xx, yy)

    sp = int(rng.integers(len(SPECIES)))
    _, body_rgb, (brx, bry), head_shift = SPECIES[sp]
    S = rng.uniform(0.62, 0.85) * size
    cx = size / 2 + rng.uniform(-0.17, 0.17) * size
    cy = size / 2 + rng.uniform(-0.15, 0.15) * size
    flip = 1.0 if rng.random() < 0.5 else -1.0
    rot = rng.uniform(-0.25, 0.25)
    cr, sr = math.cos(rot), math.sin(rot)

    def T(pts):  # object coords -> pixels
        p = np.atleast_2d(np.asarray(pts, dtype=np.float64))
        x, y = p[:, 0] * flip * S, p[:, 1] * S
        return np.stack([cx + cr * x - sr * y, cy + sr * x + cr * y], 1)

    jit = lambda: rng.uniform(-25, 25, 3)  # noqa: E731 - per-part colour jitter
    # optional per-part hue rotation: at hue_jitter 1 a part's colour says nothing about which part it is
    turn = {k: (rng.uniform(-0.5, 0.5) * hue_jitter if hue_jitter > 0 else 0.0)
            for k in ("tail", "leg", "head", "wing")}
    hue = lambda part, rgb: hue_turn(rgb, turn[part]) if turn[part] else rgb  # noqa: E731
    occluded = {k: rng.random() < 0.08 for k in ("eye", "wing", "leg", "tail")}
    labels = np.zeros((H, W), np.uint8)

    def draw(poly, colour_fn, lab):  # a polygon in object coordinates
        paint(img, labels, T(poly), colour_fn, lab)

    # tail: green with light dots
    if not occluded["tail"]:
        g, dot = hue("tail", np.array([40, 150, 60]) + jit()), hue("tail", np.array([210, 240, 150]) + jit())
        per = rng.uniform(5, 8)
        ph = rng.uniform(0, per, 2)
        dots = (((xx + ph[0]) % per - per / 2) ** 2 + ((yy + ph[1]) % per - per / 2) ** 2) < (per * 0.28) ** 2
        draw([(-0.25, -0.04), (-0.53, -0.19), (-0.57, 0.09), (-0.25, 0.06)],
             lambda m: np.where(dots[m][:, None], dot, g), 5)
    # legs: thin orange with claws (the back leg always drawn: it is not a selected keypoint)
    leg_rgb = hue("leg", np.array([235, 140, 30]) + jit())
    for name, (x0, x1) in (("leg2", (0.13, 0.16)), ("leg", (0.03, 0.06))):
        if name == "leg" and occluded["leg"]:
            continue
        w = 0.035
        draw(thick_line(np.array([x0, 0.12]), np.array([x1, 0.50]), w), solid(leg_rgb), 4)
        for dx in (-0.05, 0.0, 0.05):
            draw(thick_line(np.array([x1, 0.50]), np.array([x1 + dx + 0.03, 0.53]), w * 0.7), solid(leg_rgb), 4)
    # body: species colour with soft shading
    brgb = np.asarray(body_rgb, np.float64) + jit()
    shade = (1.0 - 0.25 * ((yy - cy) / (S * 0.3)).clip(-1, 1))[..., None]
    body_col = brgb * shade
    draw(ellipse(0, 0.03, brx, bry), lambda m: body_col[m], 1)
    # head: plain red circle, white-ringed black eye, yellow beak
    head_rgb = hue("head", np.array([200, 40, 45]) + np.asarray(head_shift) + jit())
    draw(ellipse(0.30, -0.27, 0.14, 0.13), solid(head_rgb), 2)
    draw([(0.41, -0.31), (0.60, -0.25), (0.41, -0.20)], solid(hue("head", np.array([240, 215, 40]) + jit())), 2)
    if not occluded["eye"]:
        draw(ellipse(0.34, -0.30, 0.045, 0.045, n=20), solid((245, 245, 245)), 2)
        draw(ellipse(0.34, -0.30, 0.025, 0.025, n=16), solid((15, 15, 15)), 2)
    # wing: blue stripes at a random angle/period
    if not occluded["wing"]:
        a, b = hue("wing", np.array([35, 60, 170]) + jit()), hue("wing", np.array([150, 190, 245]) + jit())
        per, th = rng.uniform(5, 9), rng.uniform(0, np.pi)
        stripes = ((xx * math.cos(th) + yy * math.sin(th)) / per + rng.uniform()) % 1.0 < 0.5
        draw(ellipse(-0.05, -0.01, 0.21, 0.11, rot=-0.25), lambda m: np.where(stripes[m][:, None], a, b), 3)

    rgb = finish(rng, img)
    kps = {}
    for name, p in KP.items():
        x, y = T(p)[0]
        visible = not occluded.get(name, False) and 0 <= x < W and 0 <= y < H
        kps[name] = (float(round(x, 1)), float(round(y, 1)), visible)
    obj, bbox = object_box(labels)
    return rgb, labels, {"label": sp, "keypoints": kps, "bbox": bbox, "object_mask": obj}
