"""Writing a ``synthetic_parts`` generation in the published formats the real loaders read: CUB-200-2011,
COCO (person_keypoints and instances) and mmseg's img_dir/ann_dir. One writer per format; ``generate``
draws every image once and hands it to each. Tree written under the generation's root::

    CUB_200_2011/ images.txt images/<class>/<file>.jpg classes.txt image_class_labels.txt
                  train_test_split.txt bounding_boxes.txt parts/parts.txt parts/part_locs.txt
    coco/annotations/person_keypoints_{train,val}2017.json  instances_{train,val}2017.json
    coco/images/{train,val}2017/<012d>.jpg
    seg/{parts,objects}/img_dir/{train,val}/<stem>.jpg  ann_dir/{train,val}/<stem>.png  classes.txt

Image ``i`` (id ``i + 1``) is drawn from the generator seeded ``[seed, i]``, whose next draw puts it in
train (CUB split 1, COCO train2017, seg train) with probability 1/2.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic_families import Family, family


def _write_lines(path: Path, rows) -> None:
    path.write_text("".join(r + "\n" for r in rows))


class CubWriter:
    """CUB_200_2011: image list, classes, split, boxes and part locations (absent parts ``0 0 0``)."""

    def __init__(self, root: Path, fam: Family):
        self.root, self.fam = root, fam
        (root / "parts").mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(fam.class_names):
            (root / "images" / f"{i + 1:03d}.{name}").mkdir(parents=True, exist_ok=True)
        self.images, self.labels, self.split, self.boxes, self.locs = [], [], [], [], []

    def add(self, iid: int, jpg: bytes, labels: np.ndarray, info: dict, is_train: bool) -> None:
        fam, sp = self.fam, info["label"]
        rel = f"{sp + 1:03d}.{fam.class_names[sp]}/{fam.class_names[sp]}_{iid:04d}.jpg"
        (self.root / "images" / rel).write_bytes(jpg)
        self.images.append(f"{iid} {rel}")
        self.labels.append(f"{iid} {sp + 1}")
        self.split.append(f"{iid} {int(is_train)}")
        bx, by, bw, bh = info["bbox"]
        self.boxes.append(f"{iid} {float(bx)} {float(by)} {float(bw)} {float(bh)}")
        kps = info["keypoints"]  # name -> (x, y, visible); absent parts are not listed
        by_cub = {fam.cub_id[n]: kps[n] for n in fam.cub_id if n in kps}
        for pid in range(1, len(fam.cub_parts) + 1):
            x, y, v = by_cub.get(pid, (0.0, 0.0, False))
            self.locs.append(f"{iid} {pid} {x if v else 0.0} {y if v else 0.0} {int(v)}")

    def close(self) -> None:
        root, fam = self.root, self.fam
        _write_lines(root / "images.txt", self.images)
        _write_lines(root / "image_class_labels.txt", self.labels)
        _write_lines(root / "train_test_split.txt", self.split)
        _write_lines(root / "bounding_boxes.txt", self.boxes)
        _write_lines(root / "classes.txt", [f"{i + 1} {i + 1:03d}.{s}" for i, s in enumerate(fam.class_names)])
        _write_lines(root / "parts" / "parts.txt", [f"{i + 1} {n}" for i, n in enumerate(fam.cub_parts)])
        _write_lines(root / "parts" / "part_locs.txt", self.locs)


def rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths starting with a 0-run)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


class CocoWriter:
    """COCO 2017: per set, a person_keypoints file (one annotation per object, the family's keypoints; an
    occluded part is v=1, an absent or off-image one v=0) and an instances file (category = class)."""

    SETS = ("train2017", "val2017")

    def __init__(self, root: Path, fam: Family, image_size: int):
        self.root, self.fam, self.size = root, fam, image_size
        for d in (root / "annotations", *(root / "images" / s for s in self.SETS)):
            d.mkdir(parents=True, exist_ok=True)
        self.sets = {s: {"kp_images": [], "kp_anns": [], "obj_anns": []} for s in self.SETS}

    def add(self, iid: int, jpg: bytes, labels: np.ndarray, info: dict, is_train: bool) -> None:
        fam, size, sp, kps = self.fam, self.size, info["label"], info["keypoints"]
        cset = "train2017" if is_train else "val2017"
        fname = f"{iid:012d}.jpg"
        (self.root / "images" / cset / fname).write_bytes(jpg)
        flat = [0] * (3 * len(fam.coco_category["keypoints"]))
        for n, k in fam.coco_id.items():
            if n not in kps:
                continue  # an absent part is unlabelled (v=0)
            x, y, v = kps[n]
            # an occluded part is "labelled but not visible" (v=1); off-image is unlabelled (v=0)
            inside = 0 <= x < size and 0 <= y < size
            flat[3 * (k - 1): 3 * k] = [int(round(x)), int(round(y)), 2 if v else (1 if inside else 0)]
        area = int(info["object_mask"].sum())
        seg_rle = rle(info["object_mask"])
        box = [float(v) for v in info["bbox"]]
        d = self.sets[cset]
        d["kp_images"].append({"id": iid, "file_name": fname, "width": size, "height": size})
        d["kp_anns"].append({"id": 100 * iid + 1, "image_id": iid, "category_id": 1, "iscrowd": 0,
                             "keypoints": flat, "num_keypoints": sum(1 for j in range(2, len(flat), 3) if flat[j]),
                             "bbox": box, "area": area, "segmentation": seg_rle})
        d["obj_anns"].append({"id": 100 * iid + 1, "image_id": iid, "category_id": sp + 1, "iscrowd": 0,
                              "bbox": list(box), "area": area, "segmentation": seg_rle})

    def close(self) -> None:
        fam = self.fam
        info = {"description": fam.description, "version": str(fam.version)}
        kp_cats = [{"id": 1, **fam.coco_category}]
        obj_cats = [{"id": i + 1, "name": s, "supercategory": fam.supercategory}
                    for i, s in enumerate(fam.class_names)]
        for cset, d in self.sets.items():
            for name, anns, cats in (("person_keypoints", d["kp_anns"], kp_cats),
                                     ("instances", d["obj_anns"], obj_cats)):
                doc = {"info": info, "licenses": [], "images": d["kp_images"], "annotations": anns,
                       "categories": cats}
                (self.root / "annotations" / f"{name}_{cset}.json").write_text(json.dumps(doc))


def palette_png(labels: np.ndarray, path: Path, palette) -> None:
    """A single-channel index PNG (mode P) with the family's display colours."""
    im = Image.fromarray(labels, mode="L").convert("P")
    im.putpalette(list(palette) + [0] * (768 - len(palette)))
    im.save(path, optimize=False)


class SegWriter:
    """mmseg img_dir/ann_dir, twice: ``parts`` (the part label map) and ``objects`` (the object mask labelled
    with its class + 1); 0 = background, names in ``classes.txt``."""

    KINDS = ("parts", "objects")

    def __init__(self, root: Path, fam: Family):
        self.root, self.fam = root, fam
        for which in self.KINDS:
            for sub in ("img_dir", "ann_dir"):
                for s in ("train", "val"):
                    (root / which / sub / s).mkdir(parents=True, exist_ok=True)

    def add(self, iid: int, jpg: bytes, labels: np.ndarray, info: dict, is_train: bool) -> None:
        stem, split = f"{iid:06d}", "train" if is_train else "val"
        for which in self.KINDS:
            (self.root / which / "img_dir" / split / f"{stem}.jpg").write_bytes(jpg)
        objects = (info["object_mask"] * (info["label"] + 1)).astype(np.uint8)
        for which, lab in (("parts", labels), ("objects", objects)):
            palette_png(lab, self.root / which / "ann_dir" / split / f"{stem}.png", self.fam.palette)

    def close(self) -> None:
        for which, names in (("parts", self.fam.seg_parts), ("objects", ["background", *self.fam.class_names])):
            _write_lines(self.root / which / "classes.txt", names)


def generate(root: Path, num_images: int, image_size: int, seed: int, hue_jitter: float = 0.0,
             kind: str = "birds") -> None:
    """Write the whole synthetic tree into ``root`` (which must not exist)."""
    fam = family(kind, hue_jitter)
    writers = [CubWriter(root / "CUB_200_2011", fam), CocoWriter(root / "coco", fam, image_size),
               SegWriter(root / "seg", fam)]
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        rgb, labels, info = fam.render(rng, image_size, hue_jitter)
        is_train = bool(rng.random() < 0.5)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
        for w in writers:
            w.add(i + 1, buf.getvalue(), labels, info, is_train)
    for w in writers:
        w.close()
