"""Synthetic part dataset (``synthetic_parts``): procedurally drawn "birds" written to disk in the
published CUB-200-2011 and COCO formats, then read back through the real ``cub_parts`` /
``coco_parts`` / ``coco_objects`` loaders.

Each image shows one object of one of four species (body colour and proportions differ) made of
visually distinct parts: a plain red head with an eye and a beak, a striped wing, a dotted tail and
thin orange legs, on a noisy background with distractor blobs. Position, scale, rotation,
mirroring, colours and texture phase vary per image; parts are sometimes occluded (left undrawn and
annotated as invisible). ``hue_jitter`` optionally rotates each part's hue per image (a harder
variant where colour does not identify the part). Everything is a pure function of the parameters.

``prepare()`` generates ``root`` if it is missing or was made with other parameters: it writes into a
temporary sibling folder and renames it into place, with ``synthetic.json`` recording the
parameters. Tree written::

    synthetic.json                                   generation parameters (the marker)
    CUB_200_2011/ images.txt images/<class>/<file>.jpg classes.txt image_class_labels.txt
                  train_test_split.txt bounding_boxes.txt parts/parts.txt parts/part_locs.txt
    coco/annotations/person_keypoints_{train,val}2017.json  instances_{train,val}2017.json
    coco/images/{train,val}2017/<012d>.jpg
    seg/{parts,objects}/img_dir/{train,val}/<stem>.jpg  ann_dir/{train,val}/<stem>.png  classes.txt

Keypoints: CUB ids 11 right eye (centre of the eye), 12 right leg (middle of the front leg),
9 left wing (wing centre), 14 tail (tail centre), plus 2 beak and 8 left leg; COCO slots 1 nose = eye,
11 right_wrist = wing, 16 left_ankle = front leg, 13 right_hip = tail, 17 right_ankle = back leg.
"""
from __future__ import annotations

import colorsys
import io
import json
import math
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from harness import Dataset, HarnessError, Option, hookimpl
from harness.api import SegSamples

from . import coco as coco_mod
from . import cub as cub_mod
from . import synthetic_objects
from ._common import expand, need_dir, need_file, positive
from .label_maps import check_label_maps
from .part_crops import crop_samples
from .seg_folders import folder_samples

VERSION = 1
MARKER = "synthetic.json"

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


def _ellipse(cx, cy, rx, ry, rot=0.0, n=40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _thick_line(p0, p1, w):
    d = np.subtract(p1, p0, dtype=np.float64)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * w / 2
    return np.array([p0 + n, p1 + n, p1 - n, p0 - n])


def _hue(rgb, turn: float) -> np.ndarray:
    """``rgb`` (0..255) with its hue rotated by ``turn`` of the colour circle."""
    c = np.clip(np.asarray(rgb, np.float64), 0, 255) / 255.0
    h, ls, sat = colorsys.rgb_to_hls(*c)
    return np.array(colorsys.hls_to_rgb((h + turn) % 1.0, ls, sat)) * 255.0


def _background(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Random two-colour ramp with muted distractor blobs (float [H,W,3]; noise is added at the end)."""
    H = W = size
    c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = ((xx * math.cos(ang) + yy * math.sin(ang)) / (size * 1.5) + 0.5).clip(0, 1)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp
    bg = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(3, 7))):  # muted distractor blobs
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        r = rng.uniform(0.05, 0.16) * size
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.0), cx + r, cy + r * rng.uniform(0.5, 1.0)], fill=255)
    blobs = np.asarray(bg) > 0
    img[blobs] = img[blobs] * 0.6 + rng.uniform(70, 170, 3) * 0.4
    return img


def _render(rng: np.random.Generator, size: int, hue_jitter: float = 0.0):
    """One image: (RGB uint8 [H,W,3], part label map, object info dict)."""
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = _background(rng, size, xx, yy)

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
    hue = lambda part, rgb: _hue(rgb, turn[part]) if turn[part] else rgb  # noqa: E731
    occluded = {k: rng.random() < 0.08 for k in ("eye", "wing", "leg", "tail")}
    labels = np.zeros((H, W), np.uint8)

    def paint(poly, colour_fn, lab):
        m = Image.new("L", (W, H), 0)
        ImageDraw.Draw(m).polygon([tuple(p) for p in T(poly)], fill=255)
        mask = np.asarray(m) > 0
        img[mask] = colour_fn(mask)
        labels[mask] = lab
        return mask

    def solid(rgb):
        return lambda mask: np.broadcast_to(np.asarray(rgb, np.float64), (int(mask.sum()), 3))

    # tail: green with light dots
    if not occluded["tail"]:
        g, dot = hue("tail", np.array([40, 150, 60]) + jit()), hue("tail", np.array([210, 240, 150]) + jit())
        per = rng.uniform(5, 8)
        ph = rng.uniform(0, per, 2)
        dots = (((xx + ph[0]) % per - per / 2) ** 2 + ((yy + ph[1]) % per - per / 2) ** 2) < (per * 0.28) ** 2
        paint([(-0.25, -0.04), (-0.53, -0.19), (-0.57, 0.09), (-0.25, 0.06)],
              lambda m: np.where(dots[m][:, None], dot, g), 5)
    # legs: thin orange with claws (the back leg always drawn: it is not a selected keypoint)
    leg_rgb = hue("leg", np.array([235, 140, 30]) + jit())
    for name, (x0, x1) in (("leg2", (0.13, 0.16)), ("leg", (0.03, 0.06))):
        if name == "leg" and occluded["leg"]:
            continue
        w = 0.035
        paint(_thick_line(np.array([x0, 0.12]), np.array([x1, 0.50]), w), solid(leg_rgb), 4)
        for dx in (-0.05, 0.0, 0.05):
            paint(_thick_line(np.array([x1, 0.50]), np.array([x1 + dx + 0.03, 0.53]), w * 0.7), solid(leg_rgb), 4)
    # body: species colour with soft shading
    brgb = np.asarray(body_rgb, np.float64) + jit()
    shade = (1.0 - 0.25 * ((yy - cy) / (S * 0.3)).clip(-1, 1))[..., None]
    body_col = brgb * shade
    paint(_ellipse(0, 0.03, brx, bry), lambda m: body_col[m], 1)
    # head: plain red circle, white-ringed black eye, yellow beak
    head_rgb = hue("head", np.array([200, 40, 45]) + np.asarray(head_shift) + jit())
    paint(_ellipse(0.30, -0.27, 0.14, 0.13), solid(head_rgb), 2)
    paint([(0.41, -0.31), (0.60, -0.25), (0.41, -0.20)], solid(hue("head", np.array([240, 215, 40]) + jit())), 2)
    if not occluded["eye"]:
        paint(_ellipse(0.34, -0.30, 0.045, 0.045, n=20), solid((245, 245, 245)), 2)
        paint(_ellipse(0.34, -0.30, 0.025, 0.025, n=16), solid((15, 15, 15)), 2)
    # wing: blue stripes at a random angle/period
    if not occluded["wing"]:
        a, b = hue("wing", np.array([35, 60, 170]) + jit()), hue("wing", np.array([150, 190, 245]) + jit())
        per, th = rng.uniform(5, 9), rng.uniform(0, np.pi)
        stripes = ((xx * math.cos(th) + yy * math.sin(th)) / per + rng.uniform()) % 1.0 < 0.5
        paint(_ellipse(-0.05, -0.01, 0.21, 0.11, rot=-0.25), lambda m: np.where(stripes[m][:, None], a, b), 3)

    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 8, img.shape)
    rgb = img.clip(0, 255).astype(np.uint8)
    kps = {}
    for name, p in KP.items():
        x, y = T(p)[0]
        visible = not occluded.get(name, False) and 0 <= x < W and 0 <= y < H
        kps[name] = (float(round(x, 1)), float(round(y, 1)), visible)
    obj = labels > 0
    ys, xs = np.nonzero(obj)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return rgb, labels, {"label": sp, "keypoints": kps, "bbox": bbox, "object_mask": obj}


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths starting with a 0-run)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


BIRD_PALETTE = [0, 0, 0, 230, 159, 0, 213, 94, 0, 0, 114, 178, 240, 228, 66, 0, 158, 115]
OBJECT_PALETTE = BIRD_PALETTE + [204, 121, 167, 86, 180, 233, 120, 120, 120, 255, 255, 255]


def _palette_png(labels: np.ndarray, path: Path, pal=BIRD_PALETTE) -> None:
    im = Image.fromarray(labels, mode="L").convert("P")
    im.putpalette(list(pal) + [0] * (768 - len(pal)))
    im.save(path, optimize=False)


@dataclass(frozen=True)
class Family:
    """What the writer needs to know about one generator family (``kind``)."""

    kind: str
    version: int
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
    kind="birds", version=VERSION, class_names=[s[0] for s in SPECIES], supercategory="bird",
    cub_parts=CUB_PARTS, cub_id=CUB_ID,
    coco_category={"name": "person", "supercategory": "person", "keypoints": COCO_KEYPOINTS,
                   "skeleton": COCO_SKELETON},
    coco_id=COCO_ID, seg_parts=SEG_PARTS, palette=BIRD_PALETTE, cub_keypoints=cub_mod.DEFAULT_KEYPOINTS,
    coco_keypoints=coco_mod.DEFAULT_KEYPOINTS, render=_render, description="partbench synthetic_parts")
OBJECTS = Family(
    kind="objects", version=2, class_names=synthetic_objects.CLASS_NAMES, supercategory="object",
    cub_parts=synthetic_objects.KEYPOINTS, cub_id={n: i + 1 for i, n in enumerate(synthetic_objects.KEYPOINTS)},
    coco_category={"name": "object", "supercategory": "object", "keypoints": synthetic_objects.KEYPOINTS,
                   "skeleton": [[1, k] for k in range(2, len(synthetic_objects.KEYPOINTS) + 1)]},
    coco_id={n: i + 1 for i, n in enumerate(synthetic_objects.KEYPOINTS)}, seg_parts=synthetic_objects.SEG_PARTS,
    palette=OBJECT_PALETTE, cub_keypoints=[2, 3, 4, 5], coco_keypoints=[2, 3, 4, 5],
    render=lambda rng, size, hue_jitter: synthetic_objects.render(rng, size, _background),
    description="partbench synthetic_parts (objects)")
FAMILIES = {f.kind: f for f in (BIRDS, OBJECTS)}


def _family(kind: str, hue_jitter: float) -> Family:
    if kind not in FAMILIES:
        raise HarnessError(f"synthetic_parts: unknown kind {kind!r} (expected one of {', '.join(FAMILIES)})")
    if kind != "birds" and hue_jitter:
        raise HarnessError(f"synthetic_parts: hue_jitter applies to kind 'birds' only (kind {kind!r} already "
                           "draws every part's colour at random)")
    return FAMILIES[kind]


def generate(root: Path, num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0,
             kind: str = "birds") -> None:
    """Write the whole synthetic tree into ``root`` (which must not exist)."""
    fam = _family(kind, hue_jitter)
    cub = root / "CUB_200_2011"
    coco = root / "coco"
    seg = root / "seg"
    for d in (cub / "parts", coco / "annotations", coco / "images" / "train2017", coco / "images" / "val2017"):
        d.mkdir(parents=True, exist_ok=True)
    for which in ("parts", "objects"):
        for sub in ("img_dir", "ann_dir"):
            for s in ("train", "val"):
                (seg / which / sub / s).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(fam.class_names):
        (cub / "images" / f"{i + 1:03d}.{name}").mkdir(parents=True, exist_ok=True)

    images_txt, labels_txt, split_txt, bbox_txt, locs_txt = [], [], [], [], []
    coco_json = {s: {"kp_images": [], "kp_anns": [], "obj_anns": []} for s in ("train2017", "val2017")}
    n_coco = len(fam.coco_category["keypoints"])
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        rgb, labels, info = fam.render(rng, image_size, hue_jitter)
        is_train = bool(rng.random() < 0.5)
        iid, sp = i + 1, info["label"]
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
        jpg = buf.getvalue()
        cls_dir = f"{sp + 1:03d}.{fam.class_names[sp]}"
        rel = f"{cls_dir}/{fam.class_names[sp]}_{iid:04d}.jpg"
        (cub / "images" / rel).write_bytes(jpg)
        images_txt.append(f"{iid} {rel}")
        labels_txt.append(f"{iid} {sp + 1}")
        split_txt.append(f"{iid} {int(is_train)}")
        bx, by, bw, bh = info["bbox"]
        bbox_txt.append(f"{iid} {float(bx)} {float(by)} {float(bw)} {float(bh)}")
        kps = info["keypoints"]  # name -> (x, y, visible); absent parts are not listed
        by_cub = {fam.cub_id[n]: kps[n] for n in fam.cub_id if n in kps}
        for pid in range(1, len(fam.cub_parts) + 1):
            x, y, v = by_cub.get(pid, (0.0, 0.0, False))
            locs_txt.append(f"{iid} {pid} {x if v else 0.0} {y if v else 0.0} {int(v)}")

        cset = "train2017" if is_train else "val2017"
        fname = f"{iid:012d}.jpg"
        (coco / "images" / cset / fname).write_bytes(jpg)
        stem = f"{iid:06d}"
        split = "train" if is_train else "val"
        for which in ("parts", "objects"):
            (seg / which / "img_dir" / split / f"{stem}.jpg").write_bytes(jpg)
        _palette_png(labels, seg / "parts" / "ann_dir" / split / f"{stem}.png", fam.palette)
        _palette_png((info["object_mask"] * (sp + 1)).astype(np.uint8), seg / "objects" / "ann_dir" / split / f"{stem}.png",
                     fam.palette)

        flat = [0] * (3 * n_coco)
        for n, k in fam.coco_id.items():
            if n not in kps:
                continue  # an absent part is unlabelled (v=0)
            x, y, v = kps[n]
            # an occluded part is "labelled but not visible" (v=1); off-image is unlabelled (v=0)
            inside = 0 <= x < image_size and 0 <= y < image_size
            flat[3 * (k - 1): 3 * k] = [int(round(x)), int(round(y)), 2 if v else (1 if inside else 0)]
        area = int(info["object_mask"].sum())
        seg_rle = _rle(info["object_mask"])
        d = coco_json[cset]
        d["kp_images"].append({"id": iid, "file_name": fname, "width": image_size, "height": image_size})
        d["kp_anns"].append({"id": 100 * iid + 1, "image_id": iid, "category_id": 1, "iscrowd": 0,
                             "keypoints": flat, "num_keypoints": sum(1 for j in range(2, len(flat), 3) if flat[j]),
                             "bbox": [float(v) for v in info["bbox"]], "area": area, "segmentation": seg_rle})
        d["obj_anns"].append({"id": 100 * iid + 1, "image_id": iid, "category_id": sp + 1, "iscrowd": 0,
                              "bbox": [float(v) for v in info["bbox"]], "area": area, "segmentation": seg_rle})

    def lines(path: Path, rows):
        path.write_text("".join(r + "\n" for r in rows))

    lines(cub / "images.txt", images_txt)
    lines(cub / "image_class_labels.txt", labels_txt)
    lines(cub / "train_test_split.txt", split_txt)
    lines(cub / "bounding_boxes.txt", bbox_txt)
    lines(cub / "classes.txt", [f"{i + 1} {i + 1:03d}.{s}" for i, s in enumerate(fam.class_names)])
    lines(cub / "parts" / "parts.txt", [f"{i + 1} {n}" for i, n in enumerate(fam.cub_parts)])
    lines(cub / "parts" / "part_locs.txt", locs_txt)
    info = {"description": fam.description, "version": str(fam.version)}
    for cset, d in coco_json.items():
        kp_cat = [{"id": 1, **fam.coco_category}]
        obj_cats = [{"id": i + 1, "name": s, "supercategory": fam.supercategory} for i, s in enumerate(fam.class_names)]
        for name, anns, cats in (("person_keypoints", d["kp_anns"], kp_cat), ("instances", d["obj_anns"], obj_cats)):
            doc = {"info": info, "licenses": [], "images": d["kp_images"], "annotations": anns, "categories": cats}
            (coco / "annotations" / f"{name}_{cset}.json").write_text(json.dumps(doc))
    for which, names in (("parts", fam.seg_parts), ("objects", ["background", *fam.class_names])):
        lines(seg / which / "classes.txt", names)


def params(num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0, kind: str = "birds") -> dict:
    out = {"generator": "partbench synthetic_parts", "version": VERSION, "num_images": num_images,
           "image_size": image_size, "seed": seed, "hue_jitter": float(hue_jitter)}
    if kind != "birds":  # birds keep their original marker, so existing generations stay valid
        out.update(kind=kind, version=_family(kind, hue_jitter).version)
    return out


def is_generated(root: Path, *args) -> bool:
    """Whether ``root`` holds the generation of these parameters (those of ``params``)."""
    try:
        return json.loads((root / MARKER).read_text()) == params(*args)
    except (OSError, ValueError):
        return False


def ensure(root: Path, num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0,
           kind: str = "birds") -> Path:
    """Generate ``root`` unless it already holds this exact generation (atomic: temp dir + rename)."""
    want = params(num_images, image_size, seed, hue_jitter, kind)
    marker = root / MARKER
    if is_generated(root, num_images, image_size, seed, hue_jitter, kind):
        return root
    if not marker.is_file() and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise HarnessError(f"{root}: exists and is not a synthetic_parts folder (no {MARKER}); "
                           "refusing to overwrite it, choose another 'root'")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, num_images, image_size, seed, hue_jitter, kind)
        (tmp / MARKER).write_text(json.dumps(want, indent=1))
        old = None
        if root.exists():  # a stale generation (other parameters): swap it out, then delete it
            old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # another process won the race; accept its result if it is the same generation
            if not (marker.is_file() and json.loads(marker.read_text()) == want):
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_root(num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0, kind: str = "birds") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "partbench" / "synthetic_parts"
    if kind != "birds":
        return base / f"{kind}-n{num_images}-s{image_size}-seed{seed}-v{_family(kind, hue_jitter).version}"
    hue = f"-hue{hue_jitter:g}" if hue_jitter else ""
    return base / f"n{num_images}-s{image_size}-seed{seed}{hue}-v{VERSION}"


SEG_FORMATS = {"seg_parts": "parts", "seg_objects": "objects"}


def read_objects(coco_root: Path, split: str):
    """Every object of the split as a square crop around its box (the coco_objects reader with no box
    dropped); ``all`` = train2017 followed by val2017."""
    items, summary, classes = [], {"sets": {}}, None
    for s in ("train", "test") if split == "all" else (split,):
        ann, img = coco_mod.locate(coco_root, None, None, "instances", s)
        its, cls, summ = coco_mod.read_coco_objects(ann, img, 1.0, math.inf)
        if classes is not None and cls != classes:
            raise HarnessError(f"{ann}: categories differ from the train2017 file's")
        classes = cls
        items += its
        summary["sets"][coco_mod.SET_OF_SPLIT[s]] = summ
    per_class = Counter(lab for _, lab, _, _ in items)
    summary.update(kept=len(items), per_class={classes[c]: per_class.get(c, 0) for c in range(len(classes))})
    files = [v["annotation_file"] for v in summary["sets"].values()]
    return items, classes, summary, files


FORMATS = ["cub", "coco", "coco_objects", "objects", "keypoints", *SEG_FORMATS]
PART_FORMATS = ("cub", "coco")


class SyntheticParts(Dataset):
    """Procedural part/object dataset written in CUB / COCO / mmseg formats and read back by the real loaders."""

    splits = ("all", "train", "test")
    options = {
        "root": Option(str, None, "where to write the generated tree (default: "
                       "$XDG_CACHE_HOME/partbench/synthetic_parts/<parameters>)", path="dir",
                       must_exist=False, nullable=True),
        "kind": Option(str, "birds", "generator family: birds (four species, fixed part colours) or objects "
                       "(class = which part types sit where; every part's colour and texture random)",
                       choices=list(FAMILIES)),
        "num_images": Option(int, 80, "number of images", check=positive),
        "image_size": Option(int, 192, "image side in pixels",
                             check=lambda v: None if 64 <= v <= 2048 else "must be in [64, 2048]"),
        "seed": Option(int, 0, "generation seed"),
        "hue_jitter": Option(float, 0.0, "kind birds: per-part random hue rotation, as a fraction of the colour "
                             "circle (0: parts keep their colours; 1: colour carries no part information, only "
                             "shape and texture do)", check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]"),
        "format": Option(str, "cub", "what to read back: part crops (cub, coco = person_keypoints file), object "
                         "crops (coco_objects = instances boxes with the coco_objects square rule; objects = "
                         "every object, all = train+val), or segmentation maps (seg_parts, seg_objects: "
                         "mmseg img_dir/ann_dir, splits train/val), or keypoints (one box per object with its COCO-format "
                         "keypoints, for pose)", choices=FORMATS),
        "keypoints": Option(list, None, "formats cub/coco: keypoint ids in the chosen format (default: birds "
                            "CUB 11,12,9,14 / COCO 1,11,16; objects 2,3,4,5 = disc, ring, bar, tee)",
                            nullable=True, check=lambda v: None if v is None else cub_mod._check_ids(v)),
        "distance": Option(str, "within_person", "COCO distance rule (see coco_parts)",
                           choices=["within_person", "official_annid"]),
    }

    # the part crops and part masks are part-level, the object boxes and object masks object-level: the
    # report pairs them (Fig. 7) within this hierarchy
    @property
    def hierarchy(self) -> str:  # type: ignore[override]
        return f"synthetic_{self._o('kind', 'birds')}"  # the birds and the objects are separate pairs

    @property
    def level(self) -> str | None:  # type: ignore[override]
        fmt = self.opts.get("format")
        if fmt == "keypoints":  # whole-object poses: neither level
            return None
        return "object" if fmt in ("coco_objects", "objects", "seg_objects") else "part"

    @property
    def splits(self):  # type: ignore[override]
        return ("train", "val") if self.opts.get("format") in SEG_FORMATS else ("all", "train", "test")

    def _o(self, key, default):
        v = self.opts.get(key)
        return default if v is None else v

    def _params(self) -> tuple:
        return (self._o("num_images", 80), self._o("image_size", 192), self._o("seed", 0),
                self._o("hue_jitter", 0.0), self._o("kind", "birds"))

    def _root(self) -> Path:
        r = self.opts.get("root")
        return expand(r) if r else default_root(*self._params())

    def validate(self) -> None:
        _family(self._o("kind", "birds"), self._o("hue_jitter", 0.0))
        fmt = self._o("format", "cub")
        if self.opts.get("keypoints") is not None and fmt not in PART_FORMATS:
            raise ValueError(f"option 'keypoints' applies to formats {', '.join(PART_FORMATS)}, not {fmt!r}")

    def prepare(self) -> None:
        ensure(self._root(), *self._params())

    def check_split(self, split: str) -> None:
        """The masks of a generated seg format go through the label-map check every seg dataset gets (a
        generation that does not exist yet is written by ``prepare`` at run time)."""
        super().check_split(split)
        fmt = self._o("format", "cub")
        if fmt in SEG_FORMATS and is_generated(self._root(), *self._params()):
            samples = self._seg(self._root(), SEG_FORMATS[fmt], split)
            check_label_maps(samples, f"{self.name} {split}: checking label maps")

    def load(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        try:
            self.validate()
        except ValueError as exc:
            raise HarnessError(f"dataset '{self.name}': {exc}") from None
        self.prepare()
        root, fmt, kps = self._root(), self._o("format", "cub"), self.opts.get("keypoints")
        fam = FAMILIES[self._o("kind", "birds")]
        files = [root / MARKER]
        if fmt in SEG_FORMATS:
            return self._seg(root, SEG_FORMATS[fmt], split)
        if fmt == "keypoints":  # top-down pose: one box per object with its COCO-format keypoints
            from .coco_persons import read_persons

            samples = read_persons(*coco_mod.locate(root / "coco", None, None, "person_keypoints", split))
            samples.summary.update(split=split, format=fmt, root=str(root))
            return samples
        if fmt == "cub":
            err = cub_mod._check_ids(kps) if kps is not None else None
            if err:
                raise HarnessError(f"dataset '{self.name}': option 'keypoints': {err}")
            items, classes, summary = cub_mod.read_cub_parts(root / "CUB_200_2011", list(kps or fam.cub_keypoints),
                                                             split)
        elif fmt == "coco":
            err = coco_mod._check_ids(kps) if kps is not None else None
            if err:
                raise HarnessError(f"dataset '{self.name}': option 'keypoints': {err}")
            ann, img = coco_mod.locate(root / "coco", None, None, "person_keypoints", split)
            items, classes, summary = coco_mod.read_coco_parts(ann, img, list(kps or fam.coco_keypoints),
                                                               self._o("distance", "within_person"))
        elif fmt == "coco_objects":
            ann, img = coco_mod.locate(root / "coco", None, None, "instances", split)
            items, classes, summary = coco_mod.read_coco_objects(ann, img, 32.0, 1.25)
        else:  # objects
            items, classes, summary, ann_files = read_objects(root / "coco", split)
            files += ann_files
        summary.update(split=split, format=fmt, root=str(root))
        if fam.kind != "birds":
            summary["kind"] = fam.kind
        return crop_samples(items, classes, summary, files=files)

    def _seg(self, root: Path, kind: str, split: str):
        """The part or object masks as an mmseg folder dataset; one window covers the whole image."""
        seg = root / "seg" / kind
        classes = [c.strip() for c in (seg / "classes.txt").read_text().splitlines() if c.strip()][1:]
        side = self._o("image_size", 192)
        crop = max(16, side // 16 * 16)  # a multiple of the usual patch sizes
        defaults = {"scale": [side, side], "crop": [crop, crop], "stride": [crop, crop]}
        samples = folder_samples(root, seg / "img_dir" / split, seg / "ann_dir" / split, classes, defaults, split)
        samples.summary.update(format=f"seg_{kind}", kind=self._o("kind", "birds"), root=str(root))
        samples.files.append(str(root / MARKER))
        return samples


@hookimpl
def register_datasets(register):
    register("synthetic_parts", SyntheticParts)
