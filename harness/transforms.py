"""Named, deterministic image transforms (PIL bicubic, as the official code's torchvision calls).

"resize:S"          shorter side -> S, then centre crop S x S (on a square crop: a plain resize)
"resize_crop:R:C"   shorter side -> R, then centre crop C x C (official part-classification train)
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def parse(name: str) -> tuple[int, int]:
    parts = name.split(":")
    try:
        if parts[0] == "resize" and len(parts) == 2:
            s = int(parts[1])
            return s, s
        if parts[0] == "resize_crop" and len(parts) == 3:
            return int(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise ValueError(f"unknown transform '{name}' (expected 'resize:S' or 'resize_crop:R:C')")


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


def apply(name: str, img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [3,C,C] in 0..1 (normalisation is the encoder's job)."""
    resize, crop = parse(name)
    img = _center_crop(_resize_shorter(img.convert("RGB"), resize), crop)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
