"""Segmentation datasets in their published layouts: ADE20K(-Object/-Part), Pascal-Part/-Object, LIP; and a
spec running both linear_seg protocols on them."""
import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from fixtures_seg import write_ade, write_img_ann
from harness import HarnessError, SpecError
from harness.plugins import Plugins
from harness.spec import build_plan, validate_options
from partbench_plugins.datasets.ade20k import ADE20K, ADE20KObject, ADE20KPart
from partbench_plugins.datasets.lip import LIP
from partbench_plugins.datasets.pascal_part import PascalObject, PascalPart


def make(cls, root, **opts):
    return cls("d", **validate_options(cls.option_schema(), {"root": str(root), **opts}, "d"))


def test_ade20k_layout_classes_and_reduce_zero_label(tmp_path):
    root = write_ade(tmp_path / "ADEChallengeData2016")
    ds = make(ADE20K, root)
    ds.check_split("train")
    s = ds.load("val")
    assert len(s) == 3 and len(s.classes) == 150 and s.classes[:3] == ["wall", "building", "sky"]
    raw = np.asarray(Image.open(s.mask_paths[0]))
    m = s.mask(0)
    assert m.dtype == np.uint8 and np.array_equal(m[raw == 0], np.full((raw == 0).sum(), 255))
    assert np.array_equal(m[raw > 0], raw[raw > 0] - 1)  # 1..C -> 0..C-1
    assert s.defaults == {"scale": [2048, 512], "crop": [512, 512], "stride": [341, 341], "train_scale": [2048, 512]}
    assert s.layout["img_path"] == "images/validation" and s.layout["seg_map_path"] == "annotations/validation"
    assert (ds.level, ds.hierarchy) == ("object", None)


def test_palette_pngs_give_indices_not_colours(tmp_path):
    root = write_img_ann(tmp_path / "ade_part", 209, palette=True)
    s = make(ADE20KPart, root).load("train")
    with Image.open(s.mask_paths[0]) as im:
        assert im.mode == "P"
        idx = np.asarray(im)
    assert np.array_equal(s.mask(0)[idx > 0], idx[idx > 0] - 1)
    assert s.classes[0] == "part_001" and len(s.classes) == 209


def test_object_part_pairs_and_lip_classes(tmp_path):
    assert (ADE20KObject.level, ADE20KObject.hierarchy) == ("object", "ade20k")
    assert (ADE20KPart.level, ADE20KPart.hierarchy) == ("part", "ade20k")
    assert (PascalObject.level, PascalPart.level, PascalPart.hierarchy) == ("object", "part", "pascal")
    s = make(LIP, write_img_ann(tmp_path / "lip", 19)).load("val")
    assert len(s.classes) == 19 and s.classes[0] == "Hat" and "Background" not in s.classes
    assert s.defaults["crop"] == [320, 320] and s.defaults["stride"] == [161, 161]


def test_errors_name_the_file(tmp_path):
    root = write_img_ann(tmp_path / "pascal", 16, palette=False)
    ds = make(PascalObject, root)
    (root / "ann" / "train" / "000001.png").unlink()
    with pytest.raises(HarnessError, match=r"000001.jpg: no label map .*000001.png \(1 image\(s\) without labels\)"):
        ds.check_split("train")
    bad = np.asarray(Image.open(root / "ann" / "val" / "000100.png")).copy()
    bad[0, 0] = 17  # 16 classes: 17 is out of range
    Image.fromarray(bad, mode="L").save(root / "ann" / "val" / "000100.png")
    with pytest.raises(HarnessError, match=r"000100.png: label 17 > 16 \(16 classes, 0 = ignored background\)"):
        ds.check_split("val")
    Image.new("RGB", bad.shape[::-1]).save(root / "ann" / "val" / "000100.png")
    with pytest.raises(HarnessError, match="mode RGB; expected a single-channel index PNG"):
        ds.check_split("val")
    (root / "img" / "train").rename(root / "img" / "moved")
    with pytest.raises(HarnessError, match=r"img/train: directory not found \(images\)"):
        make(PascalObject, root).check_split("train")


def test_classes_file(tmp_path):
    root = write_img_ann(tmp_path / "pascal", 16)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"obj{k}" for k in range(16)) + "\n")
    assert make(PascalObject, root, classes_file=str(names)).load("train").classes[15] == "obj15"
    names.write_text("a\nb\n")
    with pytest.raises(HarnessError, match="2 class names; dataset 'd' has 16 classes"):
        make(PascalObject, root, classes_file=str(names)).load("train")


def test_a_missing_split_folder_is_a_spec_error(tmp_path):
    root = write_img_ann(tmp_path / "lip", 19)
    (root / "img" / "val").rename(root / "img" / "gone")
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{embed_dim: 24, depth: 4, num_heads: 2, img_size: 32,
                                                       patch_size: 8}}}}}}
        datasets: {{lip: {{plugin: lip, options: {{root: {root}}}}}}}
        tasks: {{seg: {{plugin: linear_seg, options: {{blocks: [0, 1, 2, 3]}}}}}}
    """))
    with pytest.raises(SpecError, match=r"datasets.lip \(split 'val', read by tasks.seg\): .*img/val: directory not found"):
        build_plan(spec, Plugins())


SPEC = """
seed: 0
encoders:
  vit: {{plugin: random_vit, options: {{embed_dim: 24, depth: 4, num_heads: 2, img_size: 32, patch_size: 8}}}}
datasets:
  ade: {{plugin: ade20k, options: {{root: {ade}}}}}
  pascal_part: {{plugin: pascal_part, options: {{root: {pascal}}}}}
  lip: {{plugin: lip, options: {{root: {lip}}}}}
tasks:
  fast: {{plugin: linear_seg, options: {{blocks: [0, 1, 2, 3], iterations: 8, batch_size: 4, warmup: 2,
                                        scale: [96, 48], crop: [32, 32], stride: [24, 24], lrs: [1.0e-3]}}}}
  paper: {{plugin: linear_seg, options: {{protocol: paper, blocks: [0, 1, 2, 3], iterations: 3, batch_size: 2,
                                         warmup: 1, workers: 0, isolation: inprocess, scale: [96, 48], crop: [32, 32],
                                         stride: [24, 24]}}}}
"""


@pytest.mark.slow
def test_spec_runs_both_protocols_on_ade_pascal_and_lip_layouts(tmp_path):
    from harness.runner import run_spec

    spec = tmp_path / "seg.yaml"
    spec.write_text(SPEC.format(ade=write_ade(tmp_path / "ADEChallengeData2016"),
                                pascal=write_img_ann(tmp_path / "pascal", 193),
                                lip=write_img_ann(tmp_path / "lip", 19)))
    res = run_spec(spec, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    bad = [(r["unit"], r["error"]) for r in res if r["status"] != "ok"]
    assert not bad, bad
    assert len(res) == 6
    for r in res:
        assert set(r["metrics"]) >= {"mIoU", "mAcc", "aAcc"}, r["unit"]
        assert r["details"]["protocol"] == r["task"]
    fast = {r["dataset"]: r for r in res if r["task"] == "fast"}
    assert "mIoU@lr=0.001" in fast["lip"]["metrics"]
    assert fast["pascal_part"]["dataset_level"] == "part" and fast["pascal_part"]["dataset_hierarchy"] == "pascal"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "mIoU" in report and "lip" in report


def test_a_too_big_window_cache_is_refused_before_anything_is_encoded(tmp_path):
    from harness.runner import run_spec

    spec = tmp_path / "seg.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{embed_dim: 24, depth: 4, num_heads: 2, img_size: 32,
                                                       patch_size: 8}}}}}}
        datasets: {{lip: {{plugin: lip, options: {{root: {write_img_ann(tmp_path / "lip", 19)}}}}}}}
        tasks: {{seg: {{plugin: linear_seg, options: {{blocks: [0, 1], iterations: 2, scale: [96, 48],
                                                    crop: [32, 32], stride: [24, 24], max_cache_gb: 1.0e-6}}}}}}
    """))
    (r,) = run_spec(spec, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert r["status"] == "failed" and r["forwards"] == 0
    assert "window cache of encoder 'v' would take" in r["error"] and "mode: stream" in r["error"]
    assert not list((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.slow
def test_both_protocols_run_on_the_synthetic_object_part_pair(tmp_path):
    from harness.runner import run_spec

    spec = tmp_path / "pair.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{embed_dim: 24, depth: 2, num_heads: 2, patch_size: 16}}}}}}
        datasets:
          objects: {{plugin: synthetic_parts, options: {{num_images: 10, image_size: 64, format: seg_objects,
                                                       root: {tmp_path / "gen"}}}}}
          parts: {{plugin: synthetic_parts, options: {{num_images: 10, image_size: 64, format: seg_parts,
                                                     root: {tmp_path / "gen"}}}}}
        tasks:
          fast: {{plugin: linear_seg, options: {{blocks: [0, 1], iterations: 6, batch_size: 4, warmup: 2}}}}
          paper: {{plugin: linear_seg, options: {{protocol: paper, blocks: [0, 1], iterations: 2, batch_size: 2,
                                                 warmup: 1, workers: 0, isolation: inprocess}}}}
    """))
    res = run_spec(spec, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(res) == 4 and all(r["status"] == "ok" for r in res), [r["error"] for r in res]
    assert {(r["task"], r["dataset_level"]) for r in res} == {(t, lvl) for t in ("fast", "paper")
                                                             for lvl in ("object", "part")}
    pairs = json.loads((tmp_path / "out" / "levels.json").read_text())
    assert {p["object"]["task"] for p in pairs} == {"fast", "paper"}  # one object/part pair per protocol
