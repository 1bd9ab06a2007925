"""Drawing shared by the ``synthetic_parts`` families (``synthetic_birds``, ``synthetic_objects``): shapes as
polygons, the background, painting a polygon into the image and its part label map, and the finish
(brightness and pixel noise). Images are float [H, W, 3] arrays until ``finish``; every random draw comes
from the caller's generator, in the caller's order."""
from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw


def ellipse(cx, cy, rx, ry, rot=0.0, n=40) -> np.ndarray:
    """[n, 2] points of an ellipse centred on (cx, cy), radii (rx, ry), rotated by ``rot`` radians."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def thick_line(p0, p1, w) -> np.ndarray:
    """The rectangle of width ``w`` around the segment p0 -> p1 (4 corners)."""
    d = np.subtract(p1, p0, dtype=np.float64)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * w / 2
    return np.array([p0 + n, p1 + n, p1 - n, p0 - n])


def hue_turn(rgb, turn: float) -> np.ndarray:
    """``rgb`` (0..255) with its hue rotated by ``turn`` of the colour circle."""
    c = np.clip(np.asarray(rgb, np.float64), 0, 255) / 255.0
    h, ls, sat = colorsys.rgb_to_hls(*c)
    return np.array(colorsys.hls_to_rgb((h + turn) % 1.0, ls, sat)) * 255.0


def background(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Random two-colour ramp with muted distractor blobs (float [H,W,3]; noise is added by ``finish``)."""
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


def paint(img: np.ndarray, labels: np.ndarray, poly_px, colour_fn: Callable, label: int, hole_px=None) -> None:
    """Fill the polygon ``poly_px`` (pixel coordinates) in ``img`` with ``colour_fn(mask)`` (the RGB values
    of the masked pixels) and in ``labels`` with ``label``; ``hole_px`` is left as it was (what lies under
    the hole stays visible and labelled)."""
    H, W = labels.shape
    m = Image.new("L", (W, H), 0)
    ImageDraw.Draw(m).polygon([tuple(p) for p in poly_px], fill=255)
    if hole_px is not None:
        ImageDraw.Draw(m).polygon([tuple(p) for p in hole_px], fill=0)
    mask = np.asarray(m) > 0
    img[mask] = colour_fn(mask)
    labels[mask] = label


def solid(rgb) -> Callable:
    """A ``paint`` colour function: one colour."""
    return lambda mask: np.broadcast_to(np.asarray(rgb, np.float64), (int(mask.sum()), 3))


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random brightness and Gaussian pixel noise; RGB uint8."""
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 8, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def object_box(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(object mask = every labelled pixel, its box [x, y, w, h] in pixels)."""
    obj = labels > 0
    ys, xs = np.nonzero(obj)
    return obj, [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
