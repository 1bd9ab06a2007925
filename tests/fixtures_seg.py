"""Tiny segmentation trees in the layouts their publishers distribute (ADE20K, the authors' ADE20K-Part,
Pascal-Part/-Object and LIP releases): JPEG images and single-channel index PNGs, 0 = background."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(96, 72), (64, 80), (120, 64)]


def _palette_png(labels: np.ndarray, path: Path) -> None:
    """A palette (mode P) PNG whose colours differ from its indices: decoders must read indices."""
    im = Image.fromarray(labels, mode="L").convert("P")
    pal = []
    for k in range(256):
        pal += [(37 * k) % 256, (91 * k + 50) % 256, (13 * k + 200) % 256]
    im.putpalette(pal)
    im.save(path)


def write_split(img_dir: Path, ann_dir: Path, n: int, num_classes: int, seed: int, palette: bool = False,
                start: int = 0) -> list[str]:
    """``n`` images with a few labelled rectangles (classes drawn from 1..num_classes); returns the stems."""
    rng = np.random.default_rng(seed)
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
        lab = np.zeros((h, w), np.uint8)
        for _ in range(3):
            c = int(rng.integers(1, num_classes + 1))
            x0, y0 = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
            x1, y1 = x0 + int(rng.integers(10, 40)), y0 + int(rng.integers(10, 40))
            colour = np.array([(53 * c) % 256, (97 * c) % 256, (151 * c) % 256], np.uint8)
            img[y0:y1, x0:x1] = colour
            lab[y0:y1, x0:x1] = c
        stem = f"{start + i:06d}"
        Image.fromarray(img).save(img_dir / f"{stem}.jpg", quality=95)
        if palette:
            _palette_png(lab, ann_dir / f"{stem}.png")
        else:
            Image.fromarray(lab, mode="L").save(ann_dir / f"{stem}.png")
        stems.append(stem)
    return stems


def write_ade(root: Path, num_classes: int = 150, n=(4, 3)) -> Path:
    """ADEChallengeData2016: images/{training,validation}, annotations/{training,validation}."""
    write_split(root / "images" / "training", root / "annotations" / "training", n[0], num_classes, 1)
    write_split(root / "images" / "validation", root / "annotations" / "validation", n[1], num_classes, 2, start=100)
    return root


def write_img_ann(root: Path, num_classes: int, n=(4, 3), palette: bool = True) -> Path:
    """The authors' release layout (ADE20K-Part, Pascal-Part/-Object, LIP): img/{train,val}, ann/{train,val}."""
    write_split(root / "img" / "train", root / "ann" / "train", n[0], num_classes, 3, palette=palette)
    write_split(root / "img" / "val", root / "ann" / "val", n[1], num_classes, 4, palette=palette, start=100)
    return root
