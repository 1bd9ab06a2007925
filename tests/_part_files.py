"""Tiny files in the official layouts of PartImageNet (both releases), PACO, SPIN, Pascal-Part-116 and
ADE20K-Part-234 (docs/datasets.md): every image 128x96 with an object of two parts far enough apart for the part
crop rule (centroids 64 px apart: d_min/2 = 32 > 20), one colour per class so encoders can tell them apart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 128, 96
#: (x0, y0, x1, y1) of the object and of its two parts
OBJECT = (16, 16, 112, 80)
PARTS = ((16, 24, 48, 72), (80, 24, 112, 72))


def _rgb(seed: int, colours) -> Image.Image:
    rng = np.random.RandomState(seed)
    arr = (rng.rand(H, W, 3) * 60).astype(np.uint8)
    for (x0, y0, x1, y1), c in colours:
        arr[y0:y1, x0:x1] = np.array(c, dtype=np.uint8)
    return Image.fromarray(arr)


def colour(label: int):
    return ((label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256)


def image(path: Path, seed: int, part_labels) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _rgb(seed, [(OBJECT, (40, 40, 40)), *[(b, colour(lab)) for b, lab in zip(PARTS, part_labels)]]).save(path)
    return path


def label_map(path: Path, fill: int, boxes_values, size=(W, H)) -> Path:
    arr = np.full((size[1], size[0]), fill, dtype=np.uint8)
    for (x0, y0, x1, y1), v in boxes_values:
        arr[y0:y1, x0:x1] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="L").save(path)
    return path


def polygon(box):
    x0, y0, x1, y1 = box
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def rle(box):
    from pycocotools import mask as mask_util

    m = np.zeros((H, W), dtype=np.uint8, order="F")
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    r = mask_util.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": r["counts"].decode("ascii")}


def bbox(box):
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# -- PartImageNet -----------------------------------------------------------------------------------------------
SPLITS3 = ("train", "val", "test")
#: (wnid, super-category index, its two part ids): a quadruped (head 0, tail 3) and a car (body 24, side mirror 26)
PIN_CLASSES = [("n02085620", 0, (0, 3)), ("n02814533", 6, (24, 26))]


def write_partimagenet_seg(root: Path, per_class: int = 3) -> Path:
    n = 0
    for split in SPLITS3:
        for k, (wnid, _, parts) in enumerate(PIN_CLASSES):
            for i in range(per_class):
                stem = f"{wnid}_{i}"
                image(root / "images" / split / f"{stem}.JPEG", n, parts)
                label_map(root / "annotations" / split / f"{stem}.png", 40, list(zip(PARTS, parts)))
                label_map(root / "annotations" / f"{split}_whole" / f"{stem}.png", 158, [(OBJECT, k)])
                write_json(root / "annotations" / split / f"{stem}.json", {"imgHeight": H, "imgWidth": W})
                n += 1
    return root


def partimagenet_categories():
    from partbench_plugins.datasets.partimagenet import PARTS as NAMES

    return [{"id": i, "name": name, "supercategory": name.split(" ")[0]} for i, name in enumerate(NAMES)]


def write_partimagenet_ood(root: Path, per_class: int = 3) -> Path:
    n = 0
    for split in SPLITS3:
        images, anns = [], []
        for wnid, _, parts in PIN_CLASSES:
            for i in range(per_class):
                name = f"{wnid}_{split}{i}.JPEG"
                image(root / split / wnid / name, n, parts)
                images.append({"id": n, "file_name": name, "width": W, "height": H})
                for box, cid in zip(PARTS, parts):
                    anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cid, "segmentation": polygon(box),
                                 "bbox": bbox(box), "area": 1536, "iscrowd": 0})
                n += 1
        write_json(root / f"{split}.json", {"images": images, "annotations": anns,
                                            "categories": partimagenet_categories()})
    return root


# -- PACO -------------------------------------------------------------------------------------------------------
PACO_OBJECTS = [{"id": 94, "name": "bicycle", "supercategory": "OBJECT"},
                {"id": 207, "name": "dog", "supercategory": "OBJECT"}]
PACO_PARTS = [{"id": 2000, "name": "bicycle:handlebar", "supercategory": "PART"},
              {"id": 2001, "name": "bicycle:wheel", "supercategory": "PART"},
              {"id": 2100, "name": "dog:head", "supercategory": "PART"},
              {"id": 2101, "name": "dog:tail", "supercategory": "PART"}]


def write_paco(root: Path, coco_images: Path, per_class: int = 3) -> Path:
    n = 0
    for split in SPLITS3:
        images, anns = [], []
        for obj, parts in ((94, (2000, 2001)), (207, (2100, 2101))):
            for _ in range(per_class):
                name = f"{n:012d}.jpg"
                image(coco_images / "train2017" / name, n, [p - 1990 for p in parts])
                images.append({"id": n, "file_name": f"train2017/{name}", "width": W, "height": H,
                               "neg_category_ids": [], "not_exhaustive_category_ids": []})
                oid = len(anns) + 1
                anns.append({"id": oid, "image_id": n, "category_id": obj, "segmentation": polygon(OBJECT),
                             "bbox": bbox(OBJECT), "area": 6144, "obj_ann_id": oid, "attribute_ids": []})
                for box, cid in zip(PARTS, parts):
                    anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cid, "segmentation": rle(box),
                                 "bbox": bbox(box), "area": 1536, "obj_ann_id": oid, "attribute_ids": []})
                n += 1
        write_json(root / f"paco_lvis_v1_{split}.json", {
            "images": images, "annotations": anns, "categories": PACO_OBJECTS + PACO_PARTS,
            "part_categories": [{"id": 0, "name": "handlebar"}, {"id": 1, "name": "wheel"}, {"id": 2, "name": "head"},
                                {"id": 3, "name": "tail"}]})
    return root


# -- SPIN -------------------------------------------------------------------------------------------------------
#: the subpart inside each part: the left half of the part box (two per part would sit closer than the part crop
#: rule keeps at this image size)
def subparts(box):
    x0, y0, x1, y1 = box
    return ((x0, y0, (x0 + x1) // 2, y1),)


SPIN_SPLITS = ("train", "val", "test")


def write_spin(root: Path, per_class: int = 3, rasterise: bool = True) -> Path:
    n = 0
    for split in SPIN_SPLITS:
        imgs, files = [], {"wholes": [], "parts": [], "subparts": []}
        for k, (wnid, _, parts) in enumerate(PIN_CLASSES):
            for i in range(per_class):
                stem = f"{wnid}_{i}"
                image(root / "images" / split / f"{stem}.JPEG", n, parts)
                imgs.append({"id": n, "file_name": stem, "width": W, "height": H})
                files["wholes"].append((n, k, OBJECT))
                subs = []
                for j, (box, pid) in enumerate(zip(PARTS, parts)):
                    files["parts"].append((n, pid, box))
                    for s, sbox in enumerate(subparts(box)):
                        sid = 1 + (2 * pid + s) % 203  # subpart ids 1..203 (0 is the maps' background)
                        files["subparts"].append((n, sid, sbox))
                        subs.append((sbox, sid))
                if rasterise:
                    label_map(root / f"{split}_whole" / f"{stem}.png", 158, [(OBJECT, k)])
                    label_map(root / f"{split}_part" / f"{stem}.png", 40, list(zip(PARTS, parts)))
                    label_map(root / f"{split}_subpart" / f"{stem}.png", 0, subs)
                n += 1
        cats = {"wholes": [{"id": k, "name": w} for k, (w, _, _) in enumerate(PIN_CLASSES)],
                "parts": partimagenet_categories(),
                "subparts": [{"id": i, "name": f"subpart_{i}"} for i in range(1, 204)]}
        for level, rows in files.items():
            write_json(root / f"spin_{split}_{level}.json", {
                "images": imgs, "categories": cats[level],
                "annotations": [{"id": a + 1, "image_id": iid, "category_id": cid, "segmentation": rle(box),
                                 "bbox": bbox(box), "area": 1, "iscrowd": 0}
                                for a, (iid, cid, box) in enumerate(rows)]})
    return root


# -- OV-PARTS ---------------------------------------------------------------------------------------------------
#: Pascal-Part-116: (object value, its two part values): an aeroplane (body 0, tail 3) and a cat (head 43, tail 42)
PASCAL_CLASSES = [(0, (0, 3)), (7, (43, 42))]


def write_pascal116(root: Path, per_class: int = 4) -> Path:
    n = 0
    for split in ("train", "val"):
        for obj, parts in PASCAL_CLASSES:
            for i in range(per_class):
                stem = f"2008_{n:06d}"
                image(root / "images" / split / f"{stem}.jpg", n, parts)
                label_map(root / "annotations_detectron2_part" / split / f"{stem}.png", 255, list(zip(PARTS, parts)))
                label_map(root / "annotations_detectron2_obj" / split / f"{stem}.png", 255, [(OBJECT, obj)])
                n += 1
    return root


#: ADE20K-Part-234: person (head 5, torso 8) and car (door 126, wheel 132); instance categories person, car
ADE_CLASSES = [(1, (5, 8)), (2, (126, 132))]


def write_ade234(root: Path, per_class: int = 3) -> Path:
    n = 0
    for split, folder in (("train", "training"), ("val", "validation")):
        images, anns = [], []
        for cid, parts in ADE_CLASSES:
            for i in range(per_class):
                stem = f"ADE_{folder}_{n:08d}"
                image(root / "images" / folder / f"{stem}.jpg", n, parts)
                label_map(root / "annotations_detectron2_part" / folder / f"{stem}.png", 255, list(zip(PARTS, parts)))
                images.append({"id": n, "file_name": f"{stem}.jpg", "width": W, "height": H})
                anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cid, "segmentation": polygon(OBJECT),
                             "bbox": bbox(OBJECT), "area": 6144, "iscrowd": 0, "part_category_id": list(parts)})
                n += 1
        write_json(root / f"ade20k_instance_{split}.json", {
            "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]})
    return root
