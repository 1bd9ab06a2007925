"""synthetic_parts: deterministic generation on disk, atomic/idempotent regeneration, the published
formats read back by the real loaders, and keypoints that sit on the parts they name."""
import hashlib
import json

import numpy as np
import pytest
from fixtures_data import instantiate
from PIL import Image

from harness import HarnessError
from partbench_plugins.datasets import synthetic
from partbench_plugins.datasets.coco import CocoObjects, CocoParts
from partbench_plugins.datasets.cub import CubParts
from partbench_plugins.datasets.synthetic import SyntheticParts
from partbench_plugins.datasets.synthetic_families import BIRDS

N, SIZE = 16, 192


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "data"
    synthetic.ensure(root, N, SIZE, 0)
    return root


def test_same_seed_same_bytes_other_seed_differs(gen, tmp_path):
    again = synthetic.ensure(tmp_path / "again", N, SIZE, 0)
    assert _tree_digest(again) == _tree_digest(gen)
    other = synthetic.ensure(tmp_path / "other", N, SIZE, 1)
    assert _tree_digest(other) != _tree_digest(gen)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_published_layout(gen):
    cub = gen / "CUB_200_2011"
    for rel in ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt",
                "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt"):
        assert (cub / rel).is_file(), rel
    assert len((cub / "images.txt").read_text().splitlines()) == N
    assert len((cub / "parts" / "part_locs.txt").read_text().splitlines()) == 15 * N
    n_imgs = 0
    for s in ("train", "val"):
        doc = json.loads((gen / "coco" / "annotations" / f"person_keypoints_{s}2017.json").read_text())
        assert doc["categories"][0]["name"] == "person" and len(doc["categories"][0]["keypoints"]) == 17
        for im in doc["images"]:
            assert (gen / "coco" / "images" / f"{s}2017" / im["file_name"]).is_file()
            assert (gen / "seg" / "parts" / "ann_dir" / s / f"{im['id']:06d}.png").is_file()
        n_imgs += len(doc["images"])
    assert n_imgs == N
    # the COCO RLE decodes (pycocotools) to the object mask written for segmentation
    from pycocotools import mask as mask_utils
    doc = json.loads((gen / "coco" / "annotations" / "instances_train2017.json").read_text())
    a = doc["annotations"][0]
    rle = mask_utils.frPyObjects(a["segmentation"], SIZE, SIZE)
    m = mask_utils.decode(rle)
    seg = np.asarray(Image.open(gen / "seg" / "objects" / "ann_dir" / "train" / f"{a['image_id']:06d}.png"))
    assert np.array_equal(m > 0, seg > 0) and (seg[seg > 0] == a["category_id"]).all()
    assert int(m.sum()) == a["area"]


def test_keypoints_lie_on_their_parts(gen):
    """Every visible selected keypoint falls on the part mask it names (head/wing/leg/tail)."""
    cub = gen / "CUB_200_2011"
    split = dict(line.split() for line in (cub / "train_test_split.txt").read_text().splitlines())
    part_label = {11: 2, 9: 3, 12: 4, 14: 5, 2: 2, 8: 4}  # CUB part id -> synthetic segmentation label
    checked = 0
    for line in (cub / "parts" / "part_locs.txt").read_text().splitlines():
        iid, pid, x, y, v = line.split()
        if v == "1":
            s = "train" if split[iid] == "1" else "val"
            lab = np.asarray(Image.open(gen / "seg" / "parts" / "ann_dir" / s / f"{int(iid):06d}.png"))
            assert lab[int(round(float(y))), int(round(float(x)))] == part_label[int(pid)], line
            checked += 1
        else:
            assert float(x) == float(y) == 0.0
    assert checked > 4 * N * 0.8


def test_real_loaders_read_the_synthetic_files(gen):
    via_plugin = instantiate(SyntheticParts, root=str(gen), num_images=N, image_size=SIZE).load("all")
    direct = instantiate(CubParts, root=str(gen / "CUB_200_2011")).load("all")
    assert via_plugin.keys == direct.keys and np.array_equal(via_plugin.labels, direct.labels)
    assert len(direct) > 2 * N and set(direct.labels.tolist()) == {0, 1, 2, 3}
    assert direct.summary["kept"] == len(direct)
    coco = instantiate(CocoParts, root=str(gen / "coco")).load("test")
    syn_coco = instantiate(SyntheticParts, root=str(gen), num_images=N, image_size=SIZE, format="coco").load("test")
    assert coco.keys == syn_coco.keys and len(coco) > 0 and set(coco.labels.tolist()) <= {0, 1, 2}
    objs = instantiate(CocoObjects, root=str(gen / "coco")).load("test")
    syn_objs = instantiate(SyntheticParts, root=str(gen), num_images=N, image_size=SIZE,
                           format="coco_objects").load("test")
    assert objs.keys == syn_objs.keys
    img = via_plugin.image(0)
    assert img.mode == "RGB" and img.size[0] == img.size[1] > 20
    path, box = via_plugin.source(0)
    assert path.endswith(".jpg") and box[2] - box[0] == img.size[0]


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "d"
    synthetic.ensure(root, 4, 128, 3)
    marker = root / synthetic.MARKER
    stamp = marker.stat().st_mtime_ns
    synthetic.ensure(root, 4, 128, 3)
    assert marker.stat().st_mtime_ns == stamp  # nothing rewritten
    synthetic.ensure(root, 5, 128, 3)
    assert json.loads(marker.read_text())["num_images"] == 5
    assert len((root / "CUB_200_2011" / "images.txt").read_text().splitlines()) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary or stale folders left


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(HarnessError, match=r"mine: exists and is not a synthetic_parts folder"):
        synthetic.ensure(tmp_path / "mine", 4, 128, 0)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_prepare_generates_into_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = instantiate(SyntheticParts, num_images=4, image_size=128, seed=2)
    ds.prepare()
    root = tmp_path / "partbench" / "synthetic_parts" / f"n4-s128-seed2-v{BIRDS.version}"
    assert (root / synthetic.MARKER).is_file()
    assert ds.load("all").summary["root"] == str(root)


def test_bad_keypoints_option(gen):
    with pytest.raises(HarnessError, match=r"keypoint id 16 is not listed"):
        instantiate(SyntheticParts, root=str(gen), num_images=N, image_size=SIZE, keypoints=[11, 16]).load("all")


def _blue_wings(root):
    """Fraction of images whose wing pixels are on average blue (B the largest channel)."""
    blue = n = 0
    for png in sorted((root / "seg" / "parts" / "ann_dir").rglob("*.png")):
        lab = np.asarray(Image.open(png))
        img = np.asarray(Image.open(png.parent.parent.parent / "img_dir" / png.parent.name / (png.stem + ".jpg")))
        if (lab == 3).sum() > 50:
            r, g, b = img[lab == 3].astype(float).mean(0)
            blue += b > max(r, g)
            n += 1
    return blue / n


def test_hue_jitter_rotates_part_colours_and_keeps_keypoints_on_parts(gen, tmp_path):
    j = synthetic.ensure(tmp_path / "j", N, SIZE, 0, hue_jitter=1.0)
    assert json.loads((j / synthetic.MARKER).read_text())["hue_jitter"] == 1.0
    assert _blue_wings(gen) == 1.0 and _blue_wings(j) < 0.7
    test_keypoints_lie_on_their_parts(j)


def test_seg_formats_are_an_object_part_pair_in_the_mmseg_layout(tmp_path):
    from harness.api import SegSamples
    from harness.spec import validate_options
    from partbench_plugins.datasets.synthetic import SyntheticParts

    def make(fmt):
        opts = {"format": fmt, "num_images": 10, "image_size": 72, "root": str(tmp_path / "gen")}
        return SyntheticParts(fmt, **validate_options(SyntheticParts.option_schema(), opts, fmt))

    parts, objects = make("seg_parts"), make("seg_objects")
    assert (parts.level, objects.level) == ("part", "object") and parts.hierarchy == objects.hierarchy
    assert parts.splits == objects.splits == ("train", "val")
    p, o = parts.load("train"), objects.load("train")
    assert isinstance(p, SegSamples) and p.classes == ["body", "head", "wing", "leg", "tail"]
    assert len(o.classes) == 4 and p.keys == o.keys  # the same images, two kinds of masks
    assert p.defaults["crop"] == [64, 64] and p.layout["reduce_zero_label"]
    for i in range(len(p)):
        pm, om = p.mask(i), o.mask(i)
        assert pm.shape == om.shape == (72, 72)
        # background (0 in the files) is ignored in both; every object pixel belongs to some part
        assert ((pm == 255) == (om == 255)).mean() > 0.9 and set(np.unique(om)) - {255} <= set(range(4))
