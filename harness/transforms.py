"""Named, deterministic image transforms (PIL bicubic, as the official code's torchvision calls).

"resize:S"          shorter side -> S, then centre crop S x S (on a square crop: a plain resize)
"resize_crop:R:C"   shorter side -> R, then centre crop C x C (official part-classification train)
"pad:H:W"           no resize: the image (at most H x W) at the top left of an H x W canvas; the padding
                    becomes 0 after normalisation (mmseg's pad), e.g. slide windows at image borders
"none"              the image as it is (all items of a batch must then have one size)

Transforms run in the data-loader workers and produce uint8 pixels; normalisation happens on the device
(``harness.execution.Executor.normalise``): ``(x / 255 - mean) / std`` in float32.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def parse(name: str) -> tuple:
    parts = name.split(":")
    try:
        if parts[0] == "resize" and len(parts) == 2:
            return ("resize", int(parts[1]), int(parts[1]))
        if parts[0] == "resize_crop" and len(parts) == 3:
            return ("resize", int(parts[1]), int(parts[2]))
        if parts[0] == "pad" and len(parts) == 3:
            return ("pad", int(parts[1]), int(parts[2]))
        if name == "none":
            return ("none",)
    except ValueError:
        pass
    raise ValueError(f"unknown transform '{name}' (expected 'resize:S', 'resize_crop:R:C', 'pad:H:W' or 'none')")


def _resize_shorter(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) == (w, h):
        return img
    return img.resize((nw, nh), Image.BICUBIC)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def pixels(name: str, img: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
    """PIL image -> (uint8 array [H, W, 3], valid (h, w) region at the top left)."""
    spec = parse(name)
    img = img.convert("RGB")
    if spec[0] == "resize":
        img = _center_crop(_resize_shorter(img, spec[1]), spec[2])
        return np.asarray(img, dtype=np.uint8), (spec[2], spec[2])
    arr = np.asarray(img, dtype=np.uint8)
    if spec[0] == "none":
        return arr, arr.shape[:2]
    H, W = spec[1], spec[2]
    h, w = arr.shape[:2]
    if h > H or w > W:
        raise ValueError(f"transform '{name}': image of {w}x{h} does not fit the {W}x{H} canvas")
    if (h, w) == (H, W):
        return arr, (h, w)
    out = np.zeros((H, W, 3), dtype=np.uint8)
    out[:h, :w] = arr
    return out, (h, w)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> uint8 tensor [3, H, W]."""
    arr = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr)  # torch wants writable memory
    return torch.from_numpy(arr).permute(2, 0, 1)


def apply(name: str, img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [3,H,W] in 0..1 (normalisation is the encoder's job). Padding is
    left at 0 here; ``harness.execution.Executor`` zeroes it after normalisation."""
    arr, _ = pixels(name, img)
    return to_tensor(arr).float().div_(255.0)
