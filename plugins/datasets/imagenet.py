"""ImageNet in the ImageFolder layout (``imagenet_folder``) and its 49-patch grid (``imagenet_patches``).

Layout: ``root/<split>/<class>/<image>`` with split folders ``train`` and ``val`` (the val images
sorted into class folders, as torchvision's ImageFolder expects). Classes are the sorted union of
the class-folder names of both splits, so labels agree between splits; ``class_names`` may name a
``LOC_synset_mapping.txt``-style file (``<wnid> <name ...>`` per line) for readable names.

``imagenet_patches`` reproduces the official visualisation loader (moco/loader.py, PatchLoader):
each image is resized (shorter side 256, bicubic) and centre-cropped to 224, then cut into 7x7 = 49
windows of 56x56 with stride 28 (row-major: patch j is row j // 7, column j % 7). The official code
upsamples the whole 224 crop to 896 (bicubic) and cuts 224x224 windows with stride 112; that is the
default (``upsample: image``); ``upsample: patch`` returns the raw 56x56 window and leaves the
upsampling to the task's resize transform.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from harness.api import Dataset, HarnessError, Option, Samples, hookimpl

from ._common import (SourceCache, expand, image_size, need_dir, open_rgb, positive, read_rows,
                      subsample_per_class)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRID, PATCH, STRIDE, CROP, RESIZE = 7, 56, 28, 224, 256


def scan(root: Path, split: str, class_names=None):
    """(paths, labels, classes) of an ImageFolder split; classes shared by all split folders."""
    need_dir(root, "ImageFolder root")
    split_dir = need_dir(root / split, f"split '{split}'")
    wnids = sorted({p.name for s in ("train", "val") if (root / s).is_dir()
                    for p in (root / s).iterdir() if p.is_dir()})
    if not wnids:
        raise HarnessError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    paths, labels = [], []
    for ci, w in enumerate(wnids):
        d = split_dir / w
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in EXTENSIONS and p.is_file():
                paths.append(p)
                labels.append(ci)
    if not paths:
        raise HarnessError(f"{split_dir}: no images with extensions {', '.join(EXTENSIONS)}")
    names = list(wnids)
    if class_names:
        f = expand(class_names)
        mapping = {w: n for _, (w, n) in read_rows(f, [str], rest=True)}
        missing = [w for w in wnids if w not in mapping]
        if missing:
            raise HarnessError(f"{f}: class folder '{missing[0]}' is not listed")
        names = [mapping[w] for w in wnids]
    return paths, np.asarray(labels, dtype=np.int64), names


class FileSamples(Samples):
    """Whole images read from files (decoded on demand)."""

    def __init__(self, keys, labels, classes, summary, paths):
        super().__init__(keys, labels, classes, summary, files=paths)
        self.paths = [str(p) for p in paths]

    def image(self, i: int) -> Image.Image:
        return open_rgb(self.paths[i])


_SPLITS = ("train", "val")
_BASE = {
    "root": Option(str, help="ImageFolder root with train/ and/or val/ split folders of class folders",
                   path="dir"),
    "class_names": Option(str, None, "optional '<wnid> <name ...>' file (e.g. LOC_synset_mapping.txt)",
                          path="file", nullable=True),
    "per_class": Option(int, None, "keep at most this many images per class (random, fixed seed)",
                        nullable=True, check=positive),
    "seed": Option(int, 0, "seed of the per_class subsample"),
}


def _check_split(ds, split):
    if split not in ds.splits:
        raise HarnessError(f"dataset '{ds.name}': unknown split '{split}' (expected one of {ds.splits})")


class ImagenetFolder(Dataset):
    """ImageNet (or any ImageFolder tree) whole images."""

    splits = _SPLITS
    options = dict(_BASE)

    def load(self, split: str):
        _check_split(self, split)
        root = expand(self.opts["root"])
        paths, labels, classes = scan(root, split, self.opts.get("class_names"))
        keep = subsample_per_class(labels, self.opts.get("per_class"), self.opts.get("seed", 0))
        summary = {"split": split, "images": len(paths), "kept": int(len(keep))}
        paths, labels = [paths[j] for j in keep], labels[keep]
        summary["classes"] = len(classes)
        keys = [p.relative_to(root / split).as_posix() for p in paths]
        return FileSamples(keys, labels, classes, summary, paths)


def _geometry(w: int, h: int) -> tuple[int, int, int, int]:
    """(resized w, resized h, crop left, crop top) of torchvision's Resize(256) + CenterCrop(224)."""
    nw, nh = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
    return nw, nh, int(round((nw - CROP) / 2.0)), int(round((nh - CROP) / 2.0))


def center_crop_224(img: Image.Image) -> Image.Image:
    """Resize(256, bicubic) + CenterCrop(224), as the official loader's torchvision transforms."""
    nw, nh, left, top = _geometry(*img.size)
    r = img.resize((nw, nh), Image.BICUBIC) if (nw, nh) != img.size else img
    return r.crop((left, top, left + CROP, top + CROP))


def patch_box(j: int) -> tuple[int, int, int, int]:
    """Box of patch j (0..48, row-major) in the 224 centre crop."""
    r, c = divmod(j, GRID)
    return (c * STRIDE, r * STRIDE, c * STRIDE + PATCH, r * STRIDE + PATCH)


class PatchSamples(Samples):
    """The 49 patches of each image; the processed source is cached (LRU) per image."""

    CACHE = 4

    def __init__(self, keys, labels, classes, summary, paths, upsample: str):
        super().__init__(keys, labels, classes, summary, files=paths)
        self.paths = [str(p) for p in paths]  # one per image; item i is patch i % 49 of image i // 49
        self.upsample = upsample
        self._sources = SourceCache(self.CACHE)

    def _processed(self, k: int) -> Image.Image:
        def load():
            crop = center_crop_224(open_rgb(self.paths[k]))
            if self.upsample == "image":
                crop = crop.resize((CROP * 4, CROP * 4), Image.BICUBIC)
            return crop

        return self._sources.get(k, load)

    def image(self, i: int) -> Image.Image:
        k, j = divmod(i, GRID * GRID)
        box = patch_box(j)
        if self.upsample == "image":
            box = tuple(4 * v for v in box)
        return self._processed(k).crop(box)

    def source(self, i: int):
        """(source path, box of the patch in the *original* image's pixel coordinates)."""
        k, j = divmod(i, GRID * GRID)
        w, h = image_size(self.paths[k])
        nw, nh, left, top = _geometry(w, h)
        x0, y0, x1, y1 = patch_box(j)
        sx, sy = nw / w, nh / h
        return self.paths[k], (round((x0 + left) / sx), round((y0 + top) / sy),
                               round((x1 + left) / sx), round((y1 + top) / sy))


def _image_number(path: Path) -> int | None:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else None


class ImagenetPatches(Dataset):
    """The official 49-patch grid (56x56, stride 28 on the 224 centre crop) of ImageFolder images."""

    splits = ("val", "train")
    options = {
        **_BASE,
        "max_id": Option(int, None, "keep images whose trailing file-name number is below this (official: "
                         "25000, i.e. ILSVRC2012_val_00000001..00024999)", nullable=True, check=positive),
        "include": Option(list, [], "file-name numbers always kept (official adds 44160, 41979, 39553, "
                          "13660, 2144, 24863, 21756, 25793)"),
        "max_images": Option(int, None, "keep at most this many images (after the other filters, in order)",
                             nullable=True, check=positive),
        "upsample": Option(str, "image", "'image': upsample the 224 crop to 896 and cut 224 windows "
                           "(official); 'patch': return 56x56 windows", choices=["image", "patch"]),
    }

    def load(self, split: str):
        _check_split(self, split)
        o = self.opts
        root = expand(o["root"])
        paths, labels, classes = scan(root, split, o.get("class_names"))
        n_all = len(paths)
        if o.get("max_id") is not None:
            include = {int(v) for v in o.get("include") or []}
            nums = [_image_number(p) for p in paths]
            sel = [j for j, n in enumerate(nums) if n is not None and (n < o["max_id"] or n in include)]
            paths, labels = [paths[j] for j in sel], labels[sel]
        keep = subsample_per_class(labels, o.get("per_class"), o.get("seed", 0))
        paths, labels = [paths[j] for j in keep], labels[keep]
        if o.get("max_images") is not None:
            paths, labels = paths[: o["max_images"]], labels[: o["max_images"]]
        n = GRID * GRID
        keys = [f"{p.relative_to(root / split).as_posix()}#{j}" for p in paths for j in range(n)]
        summary = {"split": split, "images_found": n_all, "images": len(paths), "patches": len(keys),
                   "patches_per_image": n, "upsample": o.get("upsample", "image")}
        return PatchSamples(keys, np.repeat(labels, n), classes, summary, paths, o.get("upsample", "image"))


@hookimpl
def register_datasets(register):
    register("imagenet_folder", ImagenetFolder)
    register("imagenet_patches", ImagenetPatches)
