"""coco_parts (both distance rules) and coco_objects on tiny COCO 2017 annotation files."""
import json

import numpy as np
import pytest
from fixtures_data import (COCO_INSTANCES, COCO_OBJECTS_EXPECTED, COCO_OFFICIAL, COCO_TRAIN,
                           COCO_WITHIN_PERSON, instantiate, write_coco)

from harness import HarnessError
from partbench_plugins.datasets.coco import CocoObjects, CocoParts


@pytest.fixture()
def coco(tmp_path):
    return write_coco(tmp_path / "coco")


def _boxes(s):
    return {k: (int(y), s.source(i)[1]) for i, (k, y) in enumerate(zip(s.keys, s.labels))}


def test_within_person_boxes_match_hand_computed(coco):
    s = instantiate(CocoParts, root=str(coco)).load("all")
    assert _boxes(s) == COCO_WITHIN_PERSON
    assert s.classes == ["nose", "right_wrist", "left_ankle"]
    assert s.source(0)[0] == str(coco / "images" / "train2017" / "000000000001.jpg")


def test_official_annid_quirk_boxes_match_hand_computed(coco):
    s = instantiate(CocoParts, root=str(coco), distance="official_annid").load("all")
    assert _boxes(s) == COCO_OFFICIAL
    assert s.summary["dropped_too_close"] == 2 and s.summary["distance"] == "official_annid"


def test_summary_counts_visibility_and_single_keypoint_persons(coco):
    sm = instantiate(CocoParts, root=str(coco)).load("train").summary
    assert sm["persons"] == 4 and sm["persons_used"] == 3 and sm["persons_single_keypoint"] == 1
    # selected and labelled: image 1: 2 + 3, image 2: 2, image 3: 2
    assert sm["keypoints_annotated"] == 9
    assert (sm["kept"], sm["dropped_not_visible"], sm["dropped_person_single_keypoint"]) == (6, 2, 1)
    assert sm["kept_crop_partly_outside_image"] == 2
    assert sm["per_class"] == {"nose": 3, "right_wrist": 2, "left_ankle": 1}
    assert sm["kept"] + sum(v for k, v in sm.items() if k.startswith("dropped_")) == sm["keypoints_annotated"]


def test_min_visibility_one_uses_occluded_keypoints(coco):
    s = instantiate(CocoParts, root=str(coco), min_visibility=1).load("all")
    # image 2's person now has nose (30,30) and wrist (60,60): d = 42.43 -> d_min/2 = 21.2 -> half-side 11
    assert _boxes(s)["000000000002.jpg#20#nose"] == (0, (19, 19, 41, 41))


def test_test_split_reads_val2017(coco):
    s = instantiate(CocoParts, root=str(coco)).load("test")
    assert s.keys == ["000000000007.jpg#70#nose", "000000000007.jpg#70#left_ankle"]
    assert s.source(0)[0].endswith("images/val2017/000000000007.jpg")


def test_flat_layout_and_explicit_dirs(tmp_path):
    root = write_coco(tmp_path / "c", layout="flat")
    assert len(instantiate(CocoParts, root=str(root)).load("all")) == 6
    ann = tmp_path / "ann"
    (root / "annotations").rename(ann)
    s = instantiate(CocoParts, root=str(tmp_path), annotations_dir=str(ann), images_dir=str(root)).load("all")
    assert s.source(0)[0] == str(root / "train2017" / "000000000001.jpg")


def test_crop_pixels_black_outside(coco):
    from PIL import Image
    s = instantiate(CocoParts, root=str(coco)).load("all")
    i = s.keys.index("000000000003.jpg#30#nose")  # (-12, -11, 18, 19) on a 100x80 image
    crop = np.asarray(s.image(i))
    src = np.asarray(Image.open(coco / "images" / "train2017" / "000000000003.jpg").convert("RGB"))
    assert crop.shape == (30, 30, 3) and (crop[:11] == 0).all() and (crop[:, :12] == 0).all()
    assert np.array_equal(crop[11:, 12:], src[:19, :18])


def test_keypoint_id_out_of_range(coco):
    with pytest.raises(HarnessError, match=r"person_keypoints_train2017\.json: keypoint id 18 is not in "
                                           r"category 'person' \(ids 1\.\.17\)"):
        instantiate(CocoParts, root=str(coco), keypoints=[1, 18]).load("all")


def test_bad_keypoint_list_and_bad_json(tmp_path):
    bad = json.loads(json.dumps(COCO_TRAIN))
    bad["annotations"][0]["keypoints"] = [1, 2, 2]
    root = write_coco(tmp_path / "a", train=bad)
    with pytest.raises(HarnessError, match=r"annotation 10: 'keypoints' must list 51 numbers, got 3"):
        instantiate(CocoParts, root=str(root)).load("all")
    f = root / "annotations" / "person_keypoints_train2017.json"
    f.write_text('{"images": [\n  1,,\n]}')
    with pytest.raises(HarnessError, match=r"person_keypoints_train2017\.json: not valid JSON \(line 2"):
        instantiate(CocoParts, root=str(root)).load("all")


def test_missing_annotation_file(coco):
    (coco / "annotations" / "person_keypoints_val2017.json").unlink()
    with pytest.raises(HarnessError, match=r"annotations/person_keypoints_val2017\.json: file not found"):
        instantiate(CocoParts, root=str(coco)).load("test")


def test_corrupt_image_fails_on_decode_with_its_path(coco):
    (coco / "images" / "train2017" / "000000000003.jpg").write_bytes(b"garbage")
    s = instantiate(CocoParts, root=str(coco)).load("all")
    with pytest.raises(HarnessError, match=r"000000000003\.jpg: unreadable image"):
        s.image(s.keys.index("000000000003.jpg#30#nose"))


def test_objects_square_rule(coco):
    s = instantiate(CocoObjects, root=str(coco)).load("all")
    assert _boxes(s) == COCO_OBJECTS_EXPECTED
    assert s.classes == ["person", "car"]
    sm = s.summary
    assert (sm["objects"], sm["kept"], sm["dropped_crowd"], sm["dropped_small"], sm["dropped_not_square"]) \
        == (5, 2, 1, 1, 1)
    assert sm["kept_crop_partly_outside_image"] == 1 and sm["per_class"] == {"person": 1, "car": 1}
    assert s.image(0).size == (40, 40)


def test_objects_options(coco):
    s = instantiate(CocoObjects, root=str(coco), max_aspect=3.0, min_size=5.0, include_crowd=True).load("all")
    assert len(s) == 5
    one = instantiate(CocoObjects, root=str(coco), max_aspect=3.0, min_size=5.0, per_class=1).load("all")
    assert sorted(one.labels.tolist()) == [0, 1] and one.summary["dropped_per_class_limit"] == 2
    again = instantiate(CocoObjects, root=str(coco), max_aspect=3.0, min_size=5.0, per_class=1).load("all")
    assert again.keys == one.keys


def test_objects_unknown_category(tmp_path):
    inst = json.loads(json.dumps(COCO_INSTANCES))
    inst["annotations"][0]["category_id"] = 42
    root = write_coco(tmp_path / "c", instances=inst)
    with pytest.raises(HarnessError, match=r"instances_train2017\.json: annotation 1: category_id 42"):
        instantiate(CocoObjects, root=str(root)).load("all")


def test_a_missing_split_file_is_found_at_validation(coco, tmp_path):
    """coco_parts with split 'all' reads train2017: a missing train file is a spec error, not a failed unit."""
    import textwrap

    from harness import SpecError
    from harness.plugins import Plugins
    from harness.spec import build_plan

    (coco / "annotations" / "person_keypoints_train2017.json").unlink()
    instantiate(CocoParts, root=str(coco)).check_split("test")  # val2017 is there
    with pytest.raises(HarnessError, match=r"person_keypoints_train2017\.json: file not found"):
        instantiate(CocoParts, root=str(coco)).check_split("all")
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{pixels: {{plugin: pixels}}}}
        datasets: {{coco: {{plugin: coco_parts, options: {{root: {coco}}}}}}}
        tasks: {{r: {{plugin: retrieval}}}}
    """))
    with pytest.raises(SpecError, match=r"datasets\.coco \(split 'all', read by tasks\.r\): .*"
                                        r"person_keypoints_train2017\.json: file not found"):
        build_plan(spec, Plugins())


def test_a_chosen_annotation_file_and_image_folder(coco, tmp_path):
    custom = tmp_path / "mine" / "my_keypoints.json"
    custom.parent.mkdir()
    custom.write_text((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    images = tmp_path / "pics"
    (coco / "images" / "val2017").rename(images)
    ds = instantiate(CocoParts, root=str(coco), annotation_file=str(custom), image_folder=str(images))
    for split in ("all", "test"):  # the chosen file serves every split
        s = ds.load(split)
        assert len(s) == len(instantiate(CocoParts, root=str(write_coco(tmp_path / f"ref_{split}"))).load("test"))
        assert s.files == [str(custom)] or str(custom) in map(str, s.files)
    with pytest.raises(HarnessError, match=r"my_keypoints\.json"):
        custom.unlink()
        ds.check_split("all")


# ---------------------------------------------------------------- coco_persons: validated when the spec is
def _persons(root):
    from partbench_plugins.datasets.coco_persons import CocoPersons

    return instantiate(CocoPersons, root=str(root))


def test_persons_keypoint_lists_of_the_wrong_length_are_found_at_check_split(tmp_path):
    bad = json.loads(json.dumps(COCO_TRAIN))
    bad["annotations"][1]["keypoints"] = bad["annotations"][1]["keypoints"][:48]
    bad["annotations"][2]["keypoints"] = bad["annotations"][2]["keypoints"] + [0, 0, 0]
    root = write_coco(tmp_path / "coco", train=bad)
    with pytest.raises(HarnessError, match=r"person_keypoints_train2017\.json: annotation 11: 'keypoints' must list "
                                           r"51 numbers, got 48 \(x, y, v for each of the 17 keypoints of category "
                                           r"'person'\) \(1 more annotation\(s\) like it, e\.g\. 20\)"):
        _persons(root).check_split("train")


def test_persons_an_empty_split_is_found_at_check_split(tmp_path):
    empty = json.loads(json.dumps(COCO_TRAIN))
    for a in empty["annotations"]:
        a["num_keypoints"] = 0
    root = write_coco(tmp_path / "coco", train=empty)
    with pytest.raises(HarnessError, match=r"train2017\.json: no usable person .*'dropped_no_keypoints': 4"):
        _persons(root).check_split("train")


def test_persons_missing_images_are_found_at_validation(tmp_path):
    import textwrap

    from harness import SpecError
    from harness.plugins import Plugins
    from harness.spec import build_plan

    root = write_coco(tmp_path / "coco")
    for name in ("000000000001.jpg", "000000000003.jpg"):
        (root / "images" / "train2017" / name).unlink()
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{depth: 2, embed_dim: 24, num_heads: 2, seed: 0}}}}}}
        datasets: {{persons: {{plugin: coco_persons, options: {{root: {root}}}}}}}
        tasks: {{pose: {{plugin: linear_pose, options: {{blocks: [0, 1], test_split: train}}}}}}
    """))
    with pytest.raises(SpecError, match=r"datasets\.persons \(split 'train', .*images/train2017: 2 of the 3 images "
                                        r"with persons in \S+person_keypoints_train2017\.json are missing: "
                                        r"000000000001\.jpg, 000000000003\.jpg$"):
        build_plan(spec, Plugins())


def test_persons_check_split_reads_the_annotations_once_for_the_run(tmp_path, monkeypatch):
    from partbench_plugins.datasets import coco_persons

    ds = _persons(write_coco(tmp_path / "coco"))
    parsed = []
    real = coco_persons.load_coco
    monkeypatch.setattr(coco_persons, "load_coco", lambda p: parsed.append(p) or real(p))
    ds.check_split("train")
    assert len(parsed) == 1  # validation reads the split
    s = ds.load("train")
    assert len(parsed) == 1 and len(s) == 4 and s.summary["split"] == "train"
    assert len(ds.load("train")) == 4 and len(parsed) == 2  # a later load reads the files again
