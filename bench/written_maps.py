"""What painting label maps from JSON masks costs (``written_maps``, the PACO plugin's part level), how much a
second use of the same split costs (a new dataset entry: the JSON read again, the folder reused, nothing
painted), and that the maps equal pycocotools'
own ``COCO.annToMask`` painted by the same rule.

Workload shaped like PACO-LVIS: COCO-sized images (640 x 480), each with 3 objects (polygons) of 6 parts (RLE,
overlapping), the part level painted by bare part name, larger first, unannotated pixels ignored.

    python bench/written_maps.py [--images 200]

Last line: ``written_maps: N.N maps/s painted, reuse X.XXX s (N x faster), identical to annToMask``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 640, 480


def write_paco(root: Path, images: int, seed: int = 0) -> Path:
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    objs = [{"id": 94, "name": "bicycle", "supercategory": "OBJECT"}, {"id": 207, "name": "dog", "supercategory": "OBJECT"}]
    names = ["handlebar", "wheel", "seat", "head", "tail", "leg"]
    parts = [{"id": 2000 + k, "name": f"{o['name']}:{n}", "supercategory": "PART"}
             for o in objs for k, n in enumerate(names, start=10 * objs.index(o))]
    ims, anns = [], []
    blank = Image.new("RGB", (W, H))
    for i in range(images):
        name = f"{i:012d}.jpg"
        (root / "coco" / "train2017").mkdir(parents=True, exist_ok=True)
        blank.save(root / "coco" / "train2017" / name)
        ims.append({"id": i, "file_name": f"train2017/{name}", "width": W, "height": H})
        for _ in range(3):
            x0, y0 = int(rng.integers(0, W - 200)), int(rng.integers(0, H - 200))
            w, h = (int(v) for v in rng.integers(80, 200, size=2))
            o = objs[rng.integers(2)]
            oid = len(anns) + 1
            anns.append({"id": oid, "image_id": i, "category_id": o["id"], "obj_ann_id": oid, "bbox": [x0, y0, w, h],
                         "segmentation": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]], "area": int(w * h)})
            for p in [c for c in parts if c["name"].startswith(o["name"])]:
                m = np.zeros((H, W), dtype=np.uint8, order="F")
                cx, cy = x0 + int(rng.integers(0, w)), y0 + int(rng.integers(0, h))
                r = int(rng.integers(8, 40))
                yy, xx = np.ogrid[:H, :W]
                m[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 1
                rle = mask_util.encode(np.asfortranarray(m))
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": p["id"], "obj_ann_id": oid,
                             "bbox": [int(cx - r), int(cy - r), int(2 * r), int(2 * r)], "area": int(m.sum()),
                             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}})
    (root / "paco").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        (root / "paco" / f"paco_lvis_v1_{split}.json").write_text(json.dumps({
            "images": ims, "annotations": anns, "categories": objs + parts,
            "part_categories": [{"id": k, "name": n} for k, n in enumerate(names)]}))
    return root


def oracle(ann_file: Path, samples) -> bool:
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    bare = {c["id"]: c["name"].split(":")[1] for c in coco.dataset["categories"] if c["supercategory"] == "PART"}
    for i, key in enumerate(samples.keys):
        iid = int(key)
        out = np.full((H, W), 255, dtype=np.uint8)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[iid])) if a["id"] != a["obj_ann_id"]]
        masks = sorted(((samples.classes.index(bare[a["category_id"]]), coco.annToMask(a).astype(bool)) for a in anns),
                       key=lambda vm: -int(vm[1].sum()))
        for v, m in masks:
            out[m] = v
        if not np.array_equal(out, samples.mask(i)):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_paco(Path(tmp), args.images)
        os.environ["HARNESS_CACHE_DIR"] = str(Path(tmp) / "cache")
        from harness.api import SegSamples
        from harness.api import validate_options
        from partbench_plugins.datasets.paco import Paco

        def load():
            opts = {"root": str(root / "paco"), "coco_images": str(root / "coco"), "level": "part"}
            ds = Paco("paco", **validate_options(Paco.option_schema(), opts, "paco"))
            return ds.serve(SegSamples).load("val")

        t0 = time.perf_counter()
        first = load()
        painted = time.perf_counter() - t0  # includes reading the JSON
        t0 = time.perf_counter()
        again = load()
        reuse = time.perf_counter() - t0
        assert again.mask_paths == first.mask_paths
        same = oracle(root / "paco" / "paco_lvis_v1_val.json", first)
        print(f"{args.images} images of {W}x{H}, 18 part masks each: painted in {painted:.2f} s (JSON read "
              f"included), reused in {reuse:.3f} s")
        print(f"written_maps: {args.images / painted:.1f} maps/s painted, reuse {reuse:.3f} s "
              f"({painted / reuse:.0f} x faster), {'identical to' if same else 'DIFFERENT from'} annToMask")


if __name__ == "__main__":
    main()
