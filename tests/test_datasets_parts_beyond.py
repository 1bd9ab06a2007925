"""PartImageNet (both releases), PACO, SPIN, Pascal-Part-116 and ADE20K-Part-234 on tiny files in their official
layouts (tests/_part_files.py): levels, class counts, what one entry serves to crop and to segmentation tasks,
and bad or missing files as one-line validation errors naming the file."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

import _part_files as pf
from harness import HarnessError, SpecError
from harness.api import Samples, SegSamples
from harness.plugins import Plugins
from harness.spec import build_plan, validate_options
from partbench_plugins.datasets.ade20k_part_234 import ADE20KPart234
from partbench_plugins.datasets.paco import Paco
from partbench_plugins.datasets.partimagenet import PartImageNet
from partbench_plugins.datasets.pascal_part_116 import PascalPart116
from partbench_plugins.datasets.spin import Spin


def make(cls, **opts):
    return cls("d", **validate_options(cls.option_schema(), {k: str(v) if hasattr(v, "parent") else v
                                                             for k, v in opts.items()}, "d"))


def crops(ds, split="train"):
    return ds.serve(Samples).load(split)


def maps(ds, split="train"):
    return ds.serve(SegSamples).load(split)


def test_partimagenet_seg_release_serves_part_crops_and_part_maps_from_one_entry(tmp_path):
    ds = make(PartImageNet, root=pf.write_partimagenet_seg(tmp_path / "PartImageNet"))
    assert ds.release() == "seg" and ds.level == "part" and ds.levels == ("object", "part")
    c = crops(ds)
    assert type(c).__name__ == "CropSamples" and len(c.classes) == 40 and c.classes[24] == "Car Body"
    assert sorted(set(c.labels.tolist())) == [0, 3, 24, 26] and len(c) == 12  # two parts per image, all kept
    assert c.summary["kept"] == 12 and c.summary["dropped_too_close"] == 0
    # the crop of a part: the keypoint rule around the region centroid (x 31.5, d_min 64 -> half-side 16)
    assert tuple(c.boxes[0]) == (16, 32, 48, 64)
    m = maps(ds)
    assert isinstance(m, SegSamples) and len(m) == 6 and len(m.classes) == 41 and m.classes[40] == "background"
    assert m.layout["img_suffix"] == ".JPEG" and not m.reduce_zero_label
    assert set(np.unique(m.mask(0)).tolist()) == {0, 3, 40}
    assert ds.serve(SegSamples) is ds.serve(SegSamples)  # one variant per kind
    assert ds.serve(Samples) is ds and ds.serve(SegSamples).splits == ("train", "val", "test")
    obj = make(PartImageNet, root=tmp_path / "PartImageNet", level="object")
    assert len(crops(obj).classes) == 158 and len(maps(obj).classes) == 159
    assert len(crops(obj, "all")) == 18  # every split's objects


def test_partimagenet_ood_release_reads_the_coco_files_objects_by_super_category(tmp_path):
    root = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    part = make(PartImageNet, root=root)
    assert part.release() == "ood"
    c = crops(part, "test")
    assert len(c) == 12 and c.classes[3] == "Quadruped Tail" and c.summary["release"] == "PartImageNet_OOD"
    assert c.paths[0].endswith("test/n02085620/n02085620_test0.JPEG")  # <split>/<wnid>/<bare file_name>
    obj = crops(make(PartImageNet, root=root, level="object"))
    assert obj.classes[0] == "Quadruped" and len(obj.classes) == 11 and sorted(set(obj.labels.tolist())) == [0, 6]
    assert tuple(obj.boxes[0]) == (16, 0, 112, 96)  # the square around the union of the part boxes
    assert len(maps(part).classes) == 41  # painted from the polygons (tests/test_written_maps.py)


def test_paco_objects_and_parts_on_the_coco_images(tmp_path):
    root = pf.write_paco(tmp_path / "paco", tmp_path / "coco" / "images")
    part = make(Paco, root=root, coco_images=tmp_path / "coco" / "images")
    c = crops(part, "val")
    assert c.classes == ["bicycle:handlebar", "bicycle:wheel", "dog:head", "dog:tail"] and len(c) == 12
    assert c.paths[0].endswith("coco/images/train2017/000000000006.jpg")
    obj = crops(make(Paco, root=root, coco_images=tmp_path / "coco" / "images", level="object"), "val")
    assert obj.classes == ["bicycle", "dog"] and len(obj) == 6


def test_spin_has_three_levels_crops_from_rle_and_the_rasterised_maps(tmp_path):
    root = pf.write_spin(tmp_path / "spin")
    assert Spin.levels == ("object", "part", "subpart")
    sub = make(Spin, root=root)
    assert sub.level == "subpart" and sub.hierarchy == "spin"
    c = crops(sub, "test")
    assert len(c) == 12 and len(c.classes) == 203 and c.classes[0] == "subpart_1"
    m = maps(sub, "test")
    assert len(m.classes) == 204 and m.classes[0] == "background" and m.classes[1] == "subpart_1"
    for level, n_maps in (("part", 41), ("object", 159)):
        ds = make(Spin, root=root, level=level)
        assert len(maps(ds).classes) == n_maps and len(crops(ds)) == (12 if level == "part" else 6)


def test_pascal_part_116_and_ade20k_part_234_in_the_ov_parts_layout(tmp_path):
    pascal = make(PascalPart116, root=pf.write_pascal116(tmp_path / "PascalPart116"))
    m = maps(pascal, "val")
    assert len(m.classes) == 116 and m.classes[43] == "cat's head" and m.classes[115] == "tvmonitor's screen"
    assert m.layout["seg_map_path"] == "annotations_detectron2_part/val" and not m.reduce_zero_label
    assert 255 in np.unique(m.mask(0)).tolist()  # ignore stays ignore
    assert sorted(set(crops(pascal, "val").labels.tolist())) == [0, 3, 42, 43]
    obj = make(PascalPart116, root=tmp_path / "PascalPart116", level="object")
    assert maps(obj).classes[7] == "cat" and len(maps(obj).classes) == 20
    assert maps(obj).layout["seg_map_path"] == "annotations_detectron2_obj/train"
    ade = make(ADE20KPart234, root=pf.write_ade234(tmp_path / "ADE20KPart234"))
    m = maps(ade, "val")
    assert len(m.classes) == 234 and m.classes[126] == "car's door" and m.layout["img_path"] == "images/validation"
    assert sorted(set(crops(ade, "val").labels.tolist())) == [5, 8, 126, 132]
    ade_obj = make(ADE20KPart234, root=tmp_path / "ADE20KPart234", level="object")
    assert crops(ade_obj).classes == ["person", "car"] and maps(ade_obj).classes == ["person", "car"]


# -- bad and missing files: validation errors of one line naming the file ----------------------------------------
def validate(tmp_path, plugin: str, options: dict, task: str = "retrieval", task_options: str = "{}"):
    spec = tmp_path / "spec.yaml"
    opts = ", ".join(f"{k}: {json.dumps(str(v))}" for k, v in options.items())
    spec.write_text(textwrap.dedent(f"""\
        encoders: {{e: {{plugin: random_vit, options: {{depth: 1, embed_dim: 32, num_heads: 2}}}}}}
        datasets: {{d: {{plugin: {plugin}, options: {{{opts}}}}}}}
        tasks: {{t: {{plugin: {task}, options: {task_options}}}}}
        """))
    return build_plan(spec, Plugins())


def one_line_error(tmp_path, *args, **kw) -> str:
    with pytest.raises(SpecError) as err:
        validate(tmp_path, *args, **kw)
    text = str(err.value)
    assert "\n" not in text, text
    return text


SEG = ("linear_seg", "{protocol: fast, blocks: [], scale: [128, 96], crop: [64, 64], stride: [64, 64]}")


def test_a_label_value_outside_the_classes_names_the_map(tmp_path):
    root = pf.write_pascal116(tmp_path / "PascalPart116")
    validate(tmp_path, "pascal_part_116", {"root": root}, *SEG)  # all good
    bad = root / "annotations_detectron2_part" / "train" / "2008_000002.png"
    pf.label_map(bad, 255, [((0, 0, 8, 8), 200)])
    for task in (SEG, ("retrieval", "{split: train}")):  # the crops are read from the same maps
        text = one_line_error(tmp_path, "pascal_part_116", {"root": root}, *task)
        assert f"{bad}: label 200 > 115 (116 classes); expected 0..115 or 255 (ignored)" in text


def test_a_map_of_another_size_than_its_image_names_both(tmp_path):
    root = pf.write_partimagenet_seg(tmp_path / "PartImageNet")
    bad = root / "annotations" / "val_whole" / "n02085620_1.png"
    pf.label_map(bad, 158, [], size=(64, 48))
    text = one_line_error(tmp_path, "partimagenet", {"root": root, "level": "object"}, *SEG)
    assert f"{bad}: size 64x48 differs from its image" in text and "n02085620_1.JPEG (128x96)" in text


def test_a_polygon_outside_its_image_names_the_file(tmp_path):
    root = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    path = root / "val.json"
    data = json.loads(path.read_text())
    data["annotations"][2]["segmentation"] = [[10, 10, 300, 10, 300, 50]]
    path.write_text(json.dumps(data))
    text = one_line_error(tmp_path, "partimagenet", {"root": root}, "retrieval", "{split: all}")
    assert text.endswith(f"{path}: annotation 3: polygon reaches (300, 50) / (10, 10), outside its image "
                         "n02085620_val1.JPEG (128x96)")


def test_a_category_id_missing_from_the_categories_names_the_file(tmp_path):
    root = pf.write_paco(tmp_path / "paco", tmp_path / "coco")
    path = root / "paco_lvis_v1_train.json"
    data = json.loads(path.read_text())
    data["annotations"][4]["category_id"] = 9999
    path.write_text(json.dumps(data))
    text = one_line_error(tmp_path, "paco", {"root": root, "coco_images": tmp_path / "coco"}, "linear_probe",
                          "{test_split: val}")
    assert text.endswith(f"{path}: annotation 5: category_id 9999 is not in the file's 'categories'")


def test_an_rle_of_another_size_than_its_image_names_the_file(tmp_path):
    root = pf.write_spin(tmp_path / "spin")
    path = root / "spin_train_parts.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"]["size"] = [48, 64]
    path.write_text(json.dumps(data))
    text = one_line_error(tmp_path, "spin", {"root": root, "level": "part"}, "retrieval", "{split: train}")
    assert f"{path}: annotation 1: RLE mask size [48, 64] differs from its image" in text


@pytest.mark.parametrize("plugin, remove, what", [
    ("partimagenet", None, "PartImageNet_Seg's images/ and annotations/"),
    ("spin", "spin_test_subparts.json", "SPIN subparts annotation file of split 'test'"),
    ("pascal_part_116", "annotations_detectron2_obj", "object label-map folder"),
])
def test_a_missing_or_partial_download_names_what_and_where_to_get_it(tmp_path, plugin, remove, what):
    import shutil

    root = tmp_path / "data"
    level = {}
    if plugin == "spin":
        pf.write_spin(root)
    elif plugin == "pascal_part_116":
        pf.write_pascal116(root)
        level = {"level": "object"}
    else:
        root.mkdir()
    if remove:
        target = root / remove
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    text = one_line_error(tmp_path, plugin, {"root": root, **level}, "retrieval",
                          "{split: test}" if plugin == "spin" else "{split: all}")
    assert what in text and "download: https://github.com/" in text


def test_spin_maps_that_were_not_rasterised_are_painted_and_a_named_masks_folder_must_exist(tmp_path):
    root = pf.write_spin(tmp_path / "spin", rasterise=False)
    validate(tmp_path, "spin", {"root": root}, *SEG)  # painted from the JSON by the API's rule
    text = one_line_error(tmp_path, "spin", {"root": root, "masks": root}, *SEG)
    assert f"{root / 'train_subpart'}: rasterised label-map folder" in text and "'masks' option" in text


def test_segmentation_reads_the_painted_maps_of_every_json_only_release(tmp_path):
    paco = pf.write_paco(tmp_path / "paco", tmp_path / "coco")
    validate(tmp_path, "paco", {"root": paco, "coco_images": tmp_path / "coco"}, *SEG)
    ood = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    validate(tmp_path, "partimagenet", {"root": ood, "level": "object"}, *SEG)
    ade = pf.write_ade234(tmp_path / "ADE20KPart234")
    validate(tmp_path, "ade20k_part_234", {"root": ade, "level": "object"}, *SEG)
    gone = tmp_path / "coco" / "train2017" / "000000000002.jpg"
    gone.unlink()
    text = one_line_error(tmp_path, "paco", {"root": paco, "coco_images": tmp_path / "coco", "level": "object"},
                          *SEG)
    assert f"{gone}: image not found" in text


def test_the_images_are_checked_too(tmp_path):
    root = pf.write_ade234(tmp_path / "ADE20KPart234")
    gone = root / "images" / "validation" / "ADE_validation_00000007.jpg"
    gone.unlink()
    text = one_line_error(tmp_path, "ade20k_part_234", {"root": root, "level": "object"}, "retrieval",
                          "{split: all}")
    assert f"{gone}: image not found" in text and "download: https://github.com/OpenRobotLab/OV_PARTS" in text
    with Image.open(root / "images" / "training" / "ADE_training_00000000.jpg") as im:
        assert im.size == (pf.W, pf.H)


def test_all_refuses_splits_whose_classes_differ(tmp_path):
    root = pf.write_ade234(tmp_path / "ADE20KPart234")
    path = root / "ade20k_instance_val.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 3, "name": "bus"})
    path.write_text(json.dumps(data))
    ds = make(ADE20KPart234, root=root, level="object")
    assert len(crops(ds, "val").classes) == 3
    with pytest.raises(HarnessError, match="split 'val' lists other classes than split 'train' \\(3 against 2\\)"):
        crops(ds, "all")
