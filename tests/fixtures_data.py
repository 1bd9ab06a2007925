"""Builders of tiny datasets in the exact formats their publishers distribute (used by the dataset tests).

Plain module (not a conftest) so any test can import it: ``from fixtures_data import write_cub``.
Every builder returns the root it wrote. Images are deterministic (seeded noise).
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CUB_PART_NAMES = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
                  "nape", "right eye", "right leg", "right wing", "tail", "throat"]
COCO_KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                       "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
                       "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def noise_image(path: Path, w: int, h: int, seed: int = 0, fmt: str | None = None) -> Path:
    """A deterministic RGB noise image (values 16..255, so black fill is distinguishable)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(16, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG"),
                              quality=95)
    return path


# ----------------------------------------------------------------------------------------- CUB
# image id -> (relative path, (w, h), is_train, {part id: (x, y, visible)}); parts absent = invisible 0 0 0
CUB_IMAGES = {
    # three kept keypoints with hand-computable distances; tail invisible; 'back' visible but unselected
    1: ("001.Albatross/a_0001.jpg", (200, 150), 1,
        {11: (50.0, 50.0, 1), 12: (150.5, 50.0, 1), 9: (50.0, 120.0, 1), 1: (100.0, 100.0, 1)}),
    # two keypoints near the left/top border: crops extend outside the image (black fill)
    2: ("001.Albatross/a_0002.jpg", (100, 100), 1, {11: (5.0, 10.0, 1), 14: (5.0, 90.0, 1)}),
    # only one visible selected keypoint: dropped (no other keypoint); leg annotated but invisible
    3: ("002.Auklet/b_0003.jpg", (120, 120), 0, {12: (40.0, 40.0, 1), 9: (0.0, 0.0, 0)}),
    # two keypoints 30 px apart: d_min/2 = 15 <= 20, both dropped as too close
    4: ("002.Auklet/b_0004.jpg", (120, 120), 0, {11: (30.0, 30.0, 1), 12: (60.0, 30.0, 1)}),
}
# expected kept crops of split "all" with the default keypoints [11, 12, 9, 14], hand-computed:
#  image 1: d(11,12)=100.5, d(11,9)=70, d(12,9)=122.5 -> d_min/2: 35, 50.25, 35 -> half-side round(d_min/4):
#           round(17.5)=18, round(25.125)=25, 18.  12 at x=150.5: PIL/Python round(125.5)=126, round(175.5)=176
#  image 2: d=80 -> d_min/2=40 -> half-side 20
CUB_EXPECTED = {
    "001.Albatross/a_0001.jpg#11": (0, (32, 32, 68, 68)),
    "001.Albatross/a_0001.jpg#12": (1, (126, 25, 176, 75)),
    "001.Albatross/a_0001.jpg#9": (2, (32, 102, 68, 138)),
    "001.Albatross/a_0002.jpg#11": (0, (-15, -10, 25, 30)),
    "001.Albatross/a_0002.jpg#14": (3, (-15, 70, 25, 110)),
}


def write_cub(root: Path, images=None) -> Path:
    """CUB_200_2011 tree: images.txt, images/, parts/parts.txt, parts/part_locs.txt,
    train_test_split.txt, image_class_labels.txt, classes.txt."""
    images = CUB_IMAGES if images is None else images
    root = Path(root)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    classes = sorted({rel.split("/")[0] for rel, *_ in images.values()})
    lines = {k: [] for k in ("images", "split", "labels", "locs")}
    for iid, (rel, (w, h), is_train, kps) in sorted(images.items()):
        noise_image(root / "images" / rel, w, h, seed=iid)
        lines["images"].append(f"{iid} {rel}")
        lines["split"].append(f"{iid} {is_train}")
        lines["labels"].append(f"{iid} {classes.index(rel.split('/')[0]) + 1}")
        for pid in range(1, 16):
            x, y, v = kps.get(pid, (0.0, 0.0, 0))
            lines["locs"].append(f"{iid} {pid} {x} {y} {v}")
    (root / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (root / "parts" / "parts.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CUB_PART_NAMES)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(lines["locs"]) + "\n")
    return root


# ---------------------------------------------------------------------------------------- COCO
def _kps(**named):
    """17*3 COCO keypoint list from name=(x, y, v)."""
    flat = [0] * 51
    for name, (x, y, v) in named.items():
        i = COCO_KEYPOINT_NAMES.index(name)
        flat[3 * i: 3 * i + 3] = [x, y, v]
    return flat


COCO_TRAIN = {
    "images": [
        {"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 200},
        {"id": 2, "file_name": "000000000002.jpg", "width": 100, "height": 100},
        {"id": 3, "file_name": "000000000003.jpg", "width": 100, "height": 80},
    ],
    "annotations": [
        # image 1, two persons with consecutive annotation ids (the official (x, y, ann_id) quirk bites)
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 2, "bbox": [0, 0, 100, 150],
         "area": 100.0, "keypoints": _kps(nose=(50, 50, 2), right_wrist=(50, 110, 2))},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 3, "bbox": [0, 0, 100, 150],
         "area": 100.0, "keypoints": _kps(nose=(60, 50, 2), left_ankle=(60, 150, 2), right_wrist=(100, 100, 1))},
        # image 2: a person with one visible selected keypoint (wrist occluded, v=1): skipped
        {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0, "num_keypoints": 2, "bbox": [0, 0, 50, 50],
         "area": 10.0, "keypoints": _kps(nose=(30, 30, 2), right_wrist=(60, 60, 1), left_eye=(35, 28, 2))},
        # image 3: keypoints at the border
        {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 0, "num_keypoints": 2, "bbox": [0, 0, 50, 80],
         "area": 10.0, "keypoints": _kps(nose=(3, 4, 2), right_wrist=(3, 64, 2))},
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": COCO_KEYPOINT_NAMES,
                    "skeleton": [[16, 14], [14, 12]]}],
}
# hand-computed crops (default keypoints nose, right_wrist, left_ankle)
COCO_WITHIN_PERSON = {
    "000000000001.jpg#10#nose": (0, (35, 35, 65, 65)),          # d=60 -> half-side 15
    "000000000001.jpg#10#right_wrist": (1, (35, 95, 65, 125)),
    "000000000001.jpg#11#nose": (0, (35, 25, 85, 75)),          # d=100 -> half-side 25
    "000000000001.jpg#11#left_ankle": (2, (35, 125, 85, 175)),
    "000000000003.jpg#30#nose": (0, (-12, -11, 18, 19)),        # d=60 at the border
    "000000000003.jpg#30#right_wrist": (1, (-12, 49, 18, 79)),
}
# official (x, y, ann_id): the two noses are sqrt(101) apart -> dropped; wrist(10) and ankle(11) are
# sqrt(10^2+40^2+1) = 41.24 apart -> d_min/2 = 20.62 -> half-side round(10.31) = 10
COCO_OFFICIAL = {
    "000000000001.jpg#10#right_wrist": (1, (40, 100, 60, 120)),
    "000000000001.jpg#11#left_ankle": (2, (50, 140, 70, 160)),
    "000000000003.jpg#30#nose": (0, (-12, -11, 18, 19)),
    "000000000003.jpg#30#right_wrist": (1, (-12, 49, 18, 79)),
}
COCO_INSTANCES = {
    "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [10.0, 10.0, 40.0, 36.0], "area": 1.0},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0.0, 0.0, 100.0, 40.0], "area": 1.0},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0.0, 0.0, 10.0, 10.0], "area": 1.0},
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0.0, 0.0, 60.0, 60.0], "area": 1.0},
        {"id": 5, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [70.0, 60.0, 50.0, 44.5], "area": 1.0},
    ],
}
# kept objects: id 1 (40x36, ratio 1.11): square side 40 centred at (30, 28) -> (10, 8, 50, 48);
# id 5 (50x44.5): side 50 centred at (95, 82.25) -> (70, round(57.25)=57, 120, 107), partly outside 100x100
COCO_OBJECTS_EXPECTED = {
    "000000000001.jpg#1": (1, (10, 8, 50, 48)),
    "000000000002.jpg#5": (0, (70, 57, 120, 107)),
}


def write_coco(root: Path, train=None, val=None, instances=None, layout: str = "standard") -> Path:
    """COCO 2017 layout: annotations/person_keypoints_{train,val}2017.json, instances_*.json and
    images/{train,val}2017 (layout "standard") or {train,val}2017 directly under root ("flat")."""
    root = Path(root)
    train = COCO_TRAIN if train is None else train
    val = val or {"images": [{"id": 7, "file_name": "000000000007.jpg", "width": 120, "height": 120}],
                  "annotations": [{"id": 70, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
                                   "bbox": [0, 0, 1, 1], "area": 1.0,
                                   "keypoints": _kps(nose=(20, 20, 2), left_ankle=(20, 100, 2))}],
                  "categories": COCO_TRAIN["categories"]}
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for cset, doc in (("train2017", train), ("val2017", val)):
        doc = {"info": {}, "licenses": [], **doc}
        (ann / f"person_keypoints_{cset}.json").write_text(json.dumps(doc))
        inst = dict(instances or COCO_INSTANCES)
        if cset == "val2017":  # the fixture's objects live on the train images
            inst["annotations"] = []
        inst = {"info": {}, "licenses": [], "images": doc["images"], **inst}
        (ann / f"instances_{cset}.json").write_text(json.dumps(inst))
        img_dir = root / "images" / cset if layout == "standard" else root / cset
        for i, im in enumerate(doc["images"]):
            noise_image(img_dir / im["file_name"], im["width"], im["height"], seed=100 + im["id"])
    return root


# ------------------------------------------------------------------------------------- CIFAR-10
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 6) -> Path:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta, pickled like the originals
    (dicts with bytes keys; 'data' uint8 [N, 3072] as R, G, B planes; 'labels' a list of ints)."""
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for bi, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rng = np.random.default_rng(bi)
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int((bi + j) % 10) for j in range(per_batch)]
        doc = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
               b"filenames": [f"img_{bi}_{j}.png".encode() for j in range(per_batch)]}
        with open(d / name, "wb") as f:
            pickle.dump(doc, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR_CLASSES],
                     b"num_vis": 3072}, f, protocol=2)
    return Path(root)


# -------------------------------------------------------------------------------- ImageFolder
def write_imagefolder(root: Path) -> Path:
    """root/{train,val}/<wnid>/<file>.JPEG; val has ILSVRC2012-style numbered names."""
    root = Path(root)
    noise_image(root / "train" / "n01440764" / "n01440764_1.JPEG", 64, 48, seed=1)
    noise_image(root / "train" / "n01443537" / "n01443537_2.JPEG", 50, 50, seed=2)
    noise_image(root / "val" / "n01440764" / "ILSVRC2012_val_00000003.JPEG", 300, 200, seed=3)
    noise_image(root / "val" / "n01443537" / "ILSVRC2012_val_00000001.JPEG", 200, 260, seed=4)
    noise_image(root / "val" / "n01443537" / "ILSVRC2012_val_00030000.JPEG", 224, 224, seed=5)
    noise_image(root / "val" / "n01484850" / "ILSVRC2012_val_00000002.JPEG", 256, 256, seed=6)
    (root / "val" / "n01443537" / "readme.txt").write_text("not an image\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
        "n01484850 great white shark, white shark\n")
    return root


def instantiate(cls, name: str = "t", **opts):
    """A plugin instance with its declared defaults filled in, as the core does after validation."""
    from harness import REQUIRED

    full = {k: o.default for k, o in cls.option_schema().items() if o.default is not REQUIRED}
    full.update(opts)
    return cls(name, **full)
