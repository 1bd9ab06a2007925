"""Label maps validated whole at validation time (``partbench_plugins.datasets.label_maps``): sizes against
their images, the values of every map, every bad file in one error, and the verdict cached by the split's
fingerprint."""
import os
import re
import textwrap

import numpy as np
import pytest
from PIL import Image

from fixtures_seg import write_img_ann, write_split
from harness import HarnessError, SpecError
from harness.plugins import Plugins
from harness.spec import build_plan, validate_options
from partbench_plugins.datasets import label_maps
from partbench_plugins.datasets.pascal_part import PascalObject


def make(root):
    return PascalObject("d", **validate_options(PascalObject.option_schema(), {"root": str(root)}, "d"))


def write_map(path, labels):
    """Rewrite a label map, with a modification time that differs from the old one however coarse the clock."""
    old = os.stat(path).st_mtime_ns if os.path.exists(path) else 0
    Image.fromarray(np.asarray(labels, np.uint8), mode="L").save(path)
    os.utime(path, ns=(old + 2_000_000_000, old + 2_000_000_000))


def read_map(path):
    return np.asarray(Image.open(path)).copy()


def pascal(tmp_path, n_val=3):
    """Pascal-Object layout (16 classes) with ``n_val`` validation maps of the fixture's sizes."""
    root = write_img_ann(tmp_path / "pascal", 16, n=(2, 0), palette=False)
    write_split(root / "img" / "val", root / "ann" / "val", n_val, 16, 4, start=100)
    return root


def test_a_label_map_of_another_size_than_its_image_is_a_spec_error_naming_both(tmp_path):
    root = pascal(tmp_path)
    path = root / "ann" / "val" / "000101.png"
    lab = read_map(path)  # 64 x 80 (w x h)
    write_map(path, lab[:, :60])  # cropped: the head would train on misaligned labels
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{embed_dim: 24, depth: 2, num_heads: 2, img_size: 32,
                                                       patch_size: 8}}}}}}
        datasets: {{pascal: {{plugin: pascal_object, options: {{root: {root}}}}}}}
        tasks: {{seg: {{plugin: linear_seg, options: {{blocks: [0, 1], test_split: val}}}}}}
    """))
    with pytest.raises(SpecError) as err:
        build_plan(spec, Plugins())
    msg = str(err.value)
    assert "datasets.pascal (split 'val'" in msg
    assert re.search(r"ann/val/000101\.png: size 60x80 differs from its image \S+img/val/000101\.jpg \(64x80\)", msg)


def test_every_map_is_checked_a_bad_value_in_the_last_of_twelve_is_found(tmp_path):
    root = pascal(tmp_path, n_val=12)
    make(root).check_split("val")  # all good
    path = root / "ann" / "val" / "000111.png"  # the 12th
    lab = read_map(path)
    lab[3, 4] = 40  # 16 classes
    write_map(path, lab)
    with pytest.raises(HarnessError) as err:
        make(root).check_split("val")
    assert str(err.value).endswith("ann/val/000111.png: label 40 > 16 (16 classes, 0 = ignored background); "
                                   "expected 0..16 or 255 (ignored)")


def test_every_bad_file_is_reported_the_first_ten_and_a_count(tmp_path):
    root = pascal(tmp_path, n_val=13)
    for i in range(13):
        path = root / "ann" / "val" / f"{100 + i:06d}.png"
        lab = read_map(path)
        lab[0, :2] = (17, 30) if i % 2 else (17, 17)
        write_map(path, lab)
    with pytest.raises(HarnessError) as err:
        make(root).check_split("val")
    lines = str(err.value).splitlines()
    assert lines[0] == "13 of 13 label maps are bad:"
    assert [line.split(": ")[0].rsplit("/", 1)[1] for line in lines[1:11]] == [f"{100 + i:06d}.png" for i in range(10)]
    assert lines[1].endswith("000100.png: label 17 > 16 (16 classes, 0 = ignored background); "
                             "expected 0..16 or 255 (ignored)")
    assert "000101.png: labels 17, 30 > 16" in lines[2]
    assert lines[11:] == ["  ... and 3 more"]


def test_the_verdict_is_cached_by_the_fingerprint_and_an_edited_map_is_checked_again(tmp_path, monkeypatch):
    root = pascal(tmp_path, n_val=5)
    decoded = []
    real = label_maps.check_pair
    monkeypatch.setattr(label_maps, "check_pair", lambda *a: decoded.append(a[1]) or real(*a))
    make(root).check_split("val")
    assert len(decoded) == 5
    verdicts = list((label_maps.default_cache_dir() / "validated").glob("label_maps-*.json"))
    assert len(verdicts) == 1
    make(root).check_split("val")  # unchanged data: nothing decoded
    assert len(decoded) == 5
    path = root / "ann" / "val" / "000103.png"
    lab = read_map(path)
    lab[0, 0] = 200
    write_map(path, lab)
    with pytest.raises(HarnessError, match=r"000103\.png: label 200 > 16"):
        make(root).check_split("val")
    assert len(decoded) == 10  # the edited split is checked again
    with pytest.raises(HarnessError, match=r"000103\.png: label 200 > 16"):  # a bad verdict is remembered too
        make(root).check_split("val")
    assert len(decoded) == 10
    write_map(path, np.where(lab == 200, 0, lab))  # fixed: checked again, and good
    make(root).check_split("val")
    assert len(decoded) == 15


def test_the_synthetic_masks_go_through_the_same_check(tmp_path):
    from fixtures_data import instantiate
    from partbench_plugins.datasets.synthetic import SyntheticParts

    ds = instantiate(SyntheticParts, root=str(tmp_path / "gen"), num_images=6, image_size=64, format="seg_parts")
    ds.check_split("train")  # not generated yet: nothing to check (prepare writes it at run time)
    ds.prepare()
    ann = tmp_path / "gen" / "seg" / "parts" / "ann_dir"
    split = "train" if any((ann / "train").iterdir()) else "val"
    ds.check_split(split)
    path = sorted((ann / split).glob("*.png"))[0]
    write_map(path, np.zeros((32, 32)))
    with pytest.raises(HarnessError, match=r"size 32x32 differs from its image .* \(64x64\)"):
        ds.check_split(split)


def test_the_verdict_lives_in_the_cache_folder_the_spec_or_the_command_line_chose(tmp_path, monkeypatch):
    from harness.cli import main

    root = pascal(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        encoders: {{e: {{plugin: random_vit, options: {{depth: 1, embed_dim: 32, num_heads: 2}}}}}}
        datasets: {{d: {{plugin: pascal_object, options: {{root: "{root}"}}}}}}
        tasks: {{t: {{plugin: linear_seg, options: {{protocol: fast, blocks: []}}}}}}
        cache_dir: {tmp_path / "spec_cache"}
        """))
    default = label_maps.default_cache_dir() / "validated"
    before = set(default.glob("*.json"))
    build_plan(spec, Plugins())
    assert len(list((tmp_path / "spec_cache" / "validated").glob("label_maps-*.json"))) == 2  # train and val
    assert main(["validate", str(spec), "--cache-dir", str(tmp_path / "cli_cache")]) == 0
    assert len(list((tmp_path / "cli_cache" / "validated").glob("label_maps-*.json"))) == 2
    assert set(default.glob("*.json")) == before  # nothing written where neither pointed


def test_processes_checking_the_same_split_at_once_scan_it_once(tmp_path, monkeypatch):
    import threading

    root = pascal(tmp_path, n_val=4)
    scans = []
    real = label_maps.scan
    gate = threading.Barrier(2)

    def slow_scan(samples, desc=""):
        scans.append(1)
        return real(samples, desc)

    monkeypatch.setattr(label_maps, "scan", slow_scan)

    def check():
        ds = make(root)
        gate.wait()
        ds.check_split("val")

    threads = [threading.Thread(target=check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(scans) == 1  # the second waited for the first's verdict
