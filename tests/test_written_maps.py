"""Label maps painted from the releases' JSON masks (PartImageNet_OOD polygons, PACO RLE and polygons, SPIN RLE,
ADE20K-Part-234 instances) and 16-bit maps converted: the maps equal masks decoded independently with
pycocotools' COCO.annToMask, overlaps follow the stated rule, and the written folder is reused, rewritten when
its source changes, never left half-written, and placed in the run's cache folder."""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _part_files as pf
from harness import HarnessError
from harness.api import SegSamples
from harness.cache import cache_dir_in_use, default_cache_dir
from partbench_plugins.datasets import written_maps as wm
from partbench_plugins.datasets.ade20k_part_234 import ADE20KPart234
from partbench_plugins.datasets.paco import Paco
from partbench_plugins.datasets.partimagenet import PartImageNet
from partbench_plugins.datasets.spin import Spin
from test_datasets_parts_beyond import make, maps


def oracle(ann_file: Path, image_id: int, fill: int, value_of, order: str, keep=lambda a: True) -> np.ndarray:
    """The map painted from pycocotools' own COCO.annToMask of every kept annotation of the image."""
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    im = coco.imgs[image_id]
    out = np.full((im["height"], im["width"]), fill, dtype=np.uint8)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if keep(a)]
    with warnings.catch_warnings():  # pycocotools' decode under numpy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        masks = [(value_of(a), coco.annToMask(a).astype(bool)) for a in anns]
    if order == "area":
        masks.sort(key=lambda vm: -int(vm[1].sum()))
    for v, m in masks:
        out[m] = v
    return out


def overlap_ood(root: Path) -> Path:
    """PartImageNet_OOD val.json with image 6's parts overlapped: a small foot inside the head listed first and a
    body over the whole object listed last (file order would bury both parts under it)."""
    path = root / "val.json"
    data = json.loads(path.read_text())
    first = data["images"][0]["id"]
    data["annotations"].insert(0, {"id": 900, "image_id": first, "category_id": 2, "bbox": [20, 30, 12, 12],
                                   "segmentation": [[20, 30, 32, 30, 32, 42, 20, 42]], "area": 144, "iscrowd": 0})
    data["annotations"].append({"id": 901, "image_id": first, "category_id": 1, "bbox": [16, 16, 96, 64],
                                "segmentation": pf.polygon(pf.OBJECT), "area": 6144, "iscrowd": 0})
    path.write_text(json.dumps(data))
    return path


def test_partimagenet_ood_maps_are_the_polygons_painted_larger_first(tmp_path):
    root = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    path = overlap_ood(root)
    m = maps(make(PartImageNet, root=root), "val")
    assert isinstance(m, SegSamples) and len(m) == 6 and len(m.classes) == 41 and m.classes[40] == "background"
    assert m.classes[3] == "Quadruped Tail" and not m.reduce_zero_label
    first = json.loads(path.read_text())["images"][0]
    got = m.mask(m.keys.index(Path(first["file_name"]).stem))
    want = oracle(path, first["id"], 40, lambda a: a["category_id"], "area")
    assert np.array_equal(got, want)
    assert set(np.unique(got).tolist()) == {0, 1, 2, 3, 40}  # foot on head on body: every part visible
    assert (got[35, 25], got[50, 64], got[50, 100], got[5, 5]) == (2, 1, 3, 40)
    # the other images: the two parts on background, as the Seg release's maps hold them
    for i in range(1, len(m)):
        assert set(np.unique(m.mask(i)).tolist()) in ({0, 3, 40}, {24, 26, 40})
    # the folder mmseg reads: links to the release's images beside the maps
    root_dir = Path(m.layout["data_root"])
    assert m.layout == {"data_root": str(root_dir), "img_path": "img", "seg_map_path": "ann", "img_suffix": ".JPEG",
                        "seg_map_suffix": ".png", "reduce_zero_label": False}
    assert root_dir.parent == default_cache_dir() / "label_maps"
    link = root_dir / "img" / f"{m.keys[0]}.JPEG"
    assert link.resolve() == Path(m.image_paths[0]).resolve() and m.image_paths[0].startswith(str(root))
    assert m.summary["rule"].startswith("parts painted larger first")


def test_partimagenet_ood_object_maps_are_the_union_of_parts_by_super_category(tmp_path):
    root = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    m = maps(make(PartImageNet, root=root, level="object"), "test")
    assert m.classes == ["Quadruped", "Biped", "Fish", "Bird", "Snake", "Reptile", "Car", "Bicycle", "Boat",
                         "Aeroplane", "Bottle", "background"]
    values = [sorted(np.unique(m.mask(i)).tolist()) for i in range(len(m))]
    assert values == [[0, 11]] * 3 + [[6, 11]] * 3
    x0, y0, x1, y1 = pf.PARTS[0]
    assert (m.mask(0)[y0:y1, x0:x1] == 0).all() and m.mask(0)[50, 64] == 11  # between the parts: background


def test_paco_maps_ignore_what_no_annotation_covers(tmp_path):
    images = tmp_path / "coco" / "images"
    root = pf.write_paco(tmp_path / "paco", images)
    path = root / "paco_lvis_v1_val.json"
    data = json.loads(path.read_text())
    part = maps(make(Paco, root=root, coco_images=images), "val")
    # parts by their bare name (PACO's 200 part_categories; 456 object-part classes do not fit 8-bit maps)
    assert part.classes == ["handlebar", "wheel", "head", "tail"] and len(part) == 6
    bare = {c["id"]: c["name"].split(":")[1] for c in data["categories"] if c["supercategory"] == "PART"}
    for i, im in enumerate(sorted(data["images"], key=lambda im: im["id"])):
        want = oracle(path, im["id"], 255, lambda a: part.classes.index(bare[a["category_id"]]), "area",
                      keep=lambda a: a["id"] != a["obj_ann_id"])
        assert np.array_equal(part.mask(i), want)
    assert set(np.unique(part.mask(0)).tolist()) == {0, 1, 255}
    obj = maps(make(Paco, root=root, coco_images=images, level="object"), "val")
    assert obj.classes == ["bicycle", "dog"]
    assert [sorted(np.unique(obj.mask(i)).tolist()) for i in range(len(obj))] == [[0, 255]] * 3 + [[1, 255]] * 3
    assert "PACO-LVIS annotations are not exhaustive" in obj.summary["rule"]


def test_paco_part_names_missing_from_part_categories_name_the_category(tmp_path):
    images = tmp_path / "coco" / "images"
    root = pf.write_paco(tmp_path / "paco", images)
    path = root / "paco_lvis_v1_train.json"
    data = json.loads(path.read_text())
    data["part_categories"] = data["part_categories"][:3]
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match=f"{path}: category 2101 'dog:tail': part name 'tail' is not in "
                                           "'part_categories'"):
        maps(make(Paco, root=root, coco_images=images))


def test_spin_maps_painted_from_the_json_equal_the_apis_rasterised_pngs(tmp_path):
    official = pf.write_spin(tmp_path / "with_pngs")
    bare = pf.write_spin(tmp_path / "json_only", rasterise=False)
    for level in ("object", "part", "subpart"):
        theirs = maps(make(Spin, root=official, level=level), "test")
        ours = maps(make(Spin, root=bare, level=level), "test")
        assert theirs.classes == ours.classes and theirs.keys == ours.keys
        assert theirs.layout["data_root"] == str(official) and ours.layout["img_path"] == "img"
        for i in range(len(ours)):
            assert np.array_equal(theirs.mask(i), ours.mask(i))


def test_spin_file_order_wins_where_masks_overlap_as_in_the_api(tmp_path):
    root = pf.write_spin(tmp_path / "spin", rasterise=False)
    path = root / "spin_test_parts.json"
    data = json.loads(path.read_text())
    first = data["images"][0]["id"]
    data["annotations"].append({"id": 999, "image_id": first, "category_id": 1, "segmentation": pf.rle(pf.OBJECT),
                                "bbox": pf.bbox(pf.OBJECT), "area": 6144, "iscrowd": 0})
    path.write_text(json.dumps(data))
    m = maps(make(Spin, root=root, level="part"), "test")
    assert np.array_equal(m.mask(0), oracle(path, first, 40, lambda a: a["category_id"], "file"))
    assert set(np.unique(m.mask(0)).tolist()) == {1, 40}  # the last annotation covers both parts


def test_ade20k_part_234_object_maps_from_the_instance_file(tmp_path):
    root = pf.write_ade234(tmp_path / "ADE20KPart234")
    m = maps(make(ADE20KPart234, root=root, level="object"), "val")
    assert m.classes == ["person", "car"] and len(m) == 6
    path = root / "ade20k_instance_val.json"
    ids = sorted(im["id"] for im in json.loads(path.read_text())["images"])
    for i, iid in enumerate(ids):
        assert np.array_equal(m.mask(i), oracle(path, iid, 255, lambda a: a["category_id"] - 1, "file"))


def test_ade20k_part_234_objects_without_categories_take_the_releases_44_names(tmp_path):
    root = pf.write_ade234(tmp_path / "ADE20KPart234")
    for split in ("train", "val"):
        path = root / f"ade20k_instance_{split}.json"
        data = json.loads(path.read_text())
        del data["categories"]
        for a in data["annotations"]:
            a["category_id"] = {1: 27, 2: 7}[a["category_id"]]  # person, car in OBJ_CLASS_NAMES order
        path.write_text(json.dumps(data))
    m = maps(make(ADE20KPart234, root=root, level="object"), "val")
    assert len(m.classes) == 44 and m.classes[27] == "person" and m.classes[7] == "car"
    assert sorted(np.unique(m.mask(0)).tolist()) == [27, 255]


def test_ade20k_part_234_sixteen_bit_maps_are_read_through_8_bit_copies(tmp_path):
    root = pf.write_ade234(tmp_path / "ADE20KPart234")
    eight = maps(make(ADE20KPart234, root=root), "val")
    want = [eight.mask(i) for i in range(len(eight))]
    for p in eight.mask_paths:  # the same maps as the release's code reads them: uint16, 65535 = ignore
        arr = np.asarray(Image.open(p)).astype(np.uint16)
        Image.fromarray(np.where(arr == 255, 65535, arr).astype(np.uint16)).save(p)
        assert Image.open(p).mode in ("I;16", "I")
    sixteen = maps(make(ADE20KPart234, root=root), "val")
    assert Path(sixteen.mask_paths[0]).parent.parent.parent == default_cache_dir() / "label_maps"
    assert all(np.array_equal(sixteen.mask(i), w) for i, w in enumerate(want))
    arr = np.asarray(Image.open(eight.mask_paths[1])).copy()
    arr[0, 0] = 300
    Image.fromarray(arr).save(eight.mask_paths[1])
    with pytest.raises(HarnessError, match=f"{eight.mask_paths[1]}: label 300 > 233 \\(234 classes\\); expected "
                                           "0..233 or 65535 \\(ignored\\)"):
        maps(make(ADE20KPart234, root=root), "val")


# -- the written folder ------------------------------------------------------------------------------------------
def entries_of(tmp_path, n=3):
    out = []
    for i in range(n):
        p = tmp_path / "imgs" / f"im{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 6)).save(p)
        out.append((f"im{i}", p, 6, 8))
    return out


def write(tmp_path, entries, paint, source=None):
    source = source or tmp_path / "ann.json"
    if not source.exists():
        source.write_text("{}")
    return wm.written_maps({"test": 1}, [source], entries, paint, ["a", "b"], "val", {})


def test_the_folder_is_reused_rewritten_when_its_source_changes_and_never_half_written(tmp_path):
    entries = entries_of(tmp_path)
    calls = []

    def paint(i):
        calls.append(i)
        return np.full((6, 8), i % 2, dtype=np.uint8)

    first = write(tmp_path, entries, paint)
    assert sorted(calls) == [0, 1, 2] and first.mask(1).max() == 1
    again = write(tmp_path, entries, paint)
    assert sorted(calls) == [0, 1, 2] and again.mask_paths == first.mask_paths  # nothing painted again
    source = tmp_path / "ann.json"
    source.write_text('{"edited": true}')
    changed = write(tmp_path, entries, paint)
    assert len(calls) == 6 and changed.layout["data_root"] != first.layout["data_root"]

    def broken(i):
        if i == 2:
            raise HarnessError("bad mask")
        return np.zeros((6, 8), dtype=np.uint8)

    source.write_text('{"edited": 2}')
    with pytest.raises(HarnessError, match="bad mask"):
        write(tmp_path, entries, broken)
    folders = sorted(p.name for p in (default_cache_dir() / "label_maps").iterdir() if not p.name.endswith(".lock"))
    assert not [f for f in folders if f.startswith(".")]  # no temporary folder left behind
    assert len(folders) == len(set(folders)) and all((default_cache_dir() / "label_maps" / f / "done.json").is_file()
                                                     for f in folders)


def test_painted_values_and_sizes_are_checked(tmp_path):
    entries = entries_of(tmp_path, 1)
    with pytest.raises(HarnessError, match="painted label 7 outside the 2 classes"):
        write(tmp_path, entries, lambda i: np.full((6, 8), 7, dtype=np.uint8))
    with pytest.raises(HarnessError, match=r"painted label map is uint8 \(5, 8\); expected uint8 \(6, 8\)"):
        write(tmp_path, entries, lambda i: np.zeros((5, 8), dtype=np.uint8))
    ignored = write(tmp_path, entries, lambda i: np.full((6, 8), 255, dtype=np.uint8))
    assert ignored.mask(0).min() == 255
    os.unlink(entries[0][1])
    with pytest.raises(HarnessError, match=f"{entries[0][1]}: image not found"):
        write(tmp_path, entries, lambda i: np.zeros((6, 8), dtype=np.uint8))


def test_maps_follow_the_cache_folder_the_run_chose(tmp_path):
    entries = entries_of(tmp_path, 1)
    with cache_dir_in_use(tmp_path / "chosen"):
        m = write(tmp_path, entries, lambda i: np.zeros((6, 8), dtype=np.uint8))
        with cache_dir_in_use(tmp_path / "spec", unless_chosen=True):  # a spec's cache_dir yields to --cache-dir
            assert default_cache_dir() == tmp_path / "chosen"
    assert Path(m.layout["data_root"]).parent == tmp_path / "chosen" / "label_maps"
    assert default_cache_dir() != tmp_path / "chosen"


def test_paint_regions_orders(tmp_path):
    big, small = pf.polygon((0, 0, 10, 10)), pf.polygon((2, 2, 4, 4))
    regions = [(1, small), (2, big)]
    assert wm.paint_regions(12, 12, 9, regions, "file")[3, 3] == 2  # the later one wins
    by_area = wm.paint_regions(12, 12, 9, regions, "area")
    assert by_area[3, 3] == 1 and by_area[8, 8] == 2 and by_area[11, 11] == 9
    assert not wm.decode([[1, 1, 5, 5]], 12, 12).any()  # a polygon of two points covers nothing


def test_a_killed_writers_temporary_folder_is_swept_by_the_next_writer(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    parent = default_cache_dir() / "label_maps"
    parent.mkdir(parents=True, exist_ok=True)
    stale, fresh, live = (parent / f".k{i}.{pid}.part" for i, pid in ((1, gone.pid), (2, gone.pid), (3, os.getpid())))
    for p in (stale, fresh, live):
        (p / "ann").mkdir(parents=True)
    old = os.stat(stale).st_mtime - 2 * wm.STALE_AFTER_S
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    write(tmp_path, entries_of(tmp_path, 1), lambda i: np.zeros((6, 8), dtype=np.uint8))
    assert not stale.exists() and fresh.exists() and live.exists()  # only the old one of a gone writer
    for p in (fresh, live):
        shutil.rmtree(p)


def test_a_mask_pycocotools_cannot_decode_names_the_file(tmp_path):
    root = pf.write_spin(tmp_path / "spin", rasterise=False)
    path = root / "spin_test_parts.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"]["counts"] = "!!!!"
    path.write_text(json.dumps(data))
    image = data["images"][0]
    with pytest.raises(HarnessError, match=f"^{path}: image {image['id']} \\({image['file_name']}\\): a mask "
                                           "pycocotools cannot decode \\(ValueError: Invalid RLE mask"):
        maps(make(Spin, root=root, level="part"), "test")
    from test_datasets_parts_beyond import crops

    with pytest.raises(HarnessError, match=f"^{path}: annotation 2: a mask pycocotools cannot decode"):
        crops(make(Spin, root=root, level="part"), "test")


def test_concurrent_writers_paint_once(tmp_path):
    import threading

    entries = entries_of(tmp_path, 2)
    (tmp_path / "ann.json").write_text("{}")  # before the threads: both key the same source
    calls, results = [], []
    gate = threading.Barrier(2)

    def paint(i):
        calls.append(i)
        return np.zeros((6, 8), dtype=np.uint8)

    def writer():
        gate.wait()
        results.append(write(tmp_path, entries, paint))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].mask_paths == results[1].mask_paths
    assert sorted(calls) == [0, 1]  # the second writer waited on the lock and found the folder complete
