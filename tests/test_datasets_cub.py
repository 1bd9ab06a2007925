"""cub_parts: the official crop rule on a tiny CUB-200-2011 tree, splits, summary counts and errors."""
import numpy as np
import pytest
from fixtures_data import CUB_EXPECTED, instantiate, write_cub

from harness import HarnessError
from partbench_plugins.datasets.cub import CubParts


@pytest.fixture()
def cub(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_crop_boxes_labels_and_classes_match_hand_computed(cub):
    s = instantiate(CubParts, root=str(cub)).load("all")
    got = {k: (int(y), s.source(i)[1]) for i, (k, y) in enumerate(zip(s.keys, s.labels))}
    assert got == CUB_EXPECTED
    assert s.classes == ["right eye", "right leg", "left wing", "tail"]
    assert s.source(0)[0] == str(cub / "images" / "001.Albatross" / "a_0001.jpg")


def test_summary_counts_every_drop_reason(cub):
    sm = instantiate(CubParts, root=str(cub)).load("all").summary
    assert sm["images"] == 4 and sm["keypoints_annotated"] == 16
    assert (sm["kept"], sm["dropped_invisible"], sm["dropped_no_other_keypoint"], sm["dropped_too_close"],
            sm["dropped_too_far"]) == (5, 8, 1, 2, 0)
    assert sm["kept_crop_partly_outside_image"] == 2 and sm["kept_centre_outside_image"] == 0
    assert sm["per_class"] == {"right eye": 2, "right leg": 1, "left wing": 1, "tail": 1}


def test_crop_pixels_are_the_source_region_with_black_outside(cub):
    from PIL import Image
    s = instantiate(CubParts, root=str(cub)).load("all")
    i = s.keys.index("001.Albatross/a_0002.jpg#11")  # box (-15, -10, 25, 30) on a 100x100 image
    crop = np.asarray(s.image(i))
    assert crop.shape == (40, 40, 3)
    src = np.asarray(Image.open(cub / "images" / "001.Albatross" / "a_0002.jpg").convert("RGB"))
    assert (crop[:10] == 0).all() and (crop[:, :15] == 0).all()  # outside the image: black
    assert np.array_equal(crop[10:, 15:], src[0:30, 0:25])
    j = s.keys.index("001.Albatross/a_0001.jpg#12")
    src1 = np.asarray(Image.open(cub / "images" / "001.Albatross" / "a_0001.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(s.image(j)), src1[25:75, 126:176])


def test_official_train_test_split(cub):
    ds = instantiate(CubParts, root=str(cub))
    train, test = ds.load("train"), ds.load("test")
    assert sorted(train.keys) == sorted(CUB_EXPECTED)  # all kept crops are in train images 1, 2
    assert len(test) == 0 and test.summary["dropped_too_close"] == 2 and test.summary["images"] == 2


def test_configurable_keypoints_change_labels_and_distances(cub):
    s = instantiate(CubParts, root=str(cub), keypoints=[9, 11]).load("all")
    # image 1 now has only 9 and 11 (70 px apart): half-side 18 for both; image 2 keeps only 11 -> dropped
    assert dict(zip(s.keys, s.labels.tolist())) == {"001.Albatross/a_0001.jpg#11": 1,
                                                    "001.Albatross/a_0001.jpg#9": 0}
    assert s.classes == ["left wing", "right eye"]
    assert s.summary["dropped_no_other_keypoint"] == 2


def test_fingerprint_depends_on_boxes(cub):
    a = instantiate(CubParts, root=str(cub)).load("all")
    b = instantiate(CubParts, root=str(cub)).load("all")
    assert a.fingerprint() == b.fingerprint()
    b.boxes[0, 0] += 1
    assert a.fingerprint() != b.fingerprint()


def test_unknown_keypoint_id_names_parts_file(cub):
    with pytest.raises(HarnessError, match=r"parts\.txt: keypoint id 16 is not listed"):
        instantiate(CubParts, root=str(cub), keypoints=[11, 16]).load("all")


def test_malformed_line_names_file_and_line(cub):
    locs = cub / "parts" / "part_locs.txt"
    lines = locs.read_text().splitlines()
    lines[6] = "1 7 12.0 oops 1"
    locs.write_text("\n".join(lines) + "\n")
    with pytest.raises(HarnessError, match=r"part_locs\.txt:7: malformed line '1 7 12\.0 oops 1'") as e:
        instantiate(CubParts, root=str(cub)).load("all")
    assert "\n" not in str(e.value)


def test_part_locs_with_unknown_ids_name_the_line(cub):
    locs = cub / "parts" / "part_locs.txt"
    locs.write_text(locs.read_text() + "99 1 1.0 1.0 1\n")
    with pytest.raises(HarnessError, match=r"part_locs\.txt:61: image id 99 is not in .*images\.txt"):
        instantiate(CubParts, root=str(cub)).load("all")


def test_missing_file(cub):
    (cub / "images.txt").unlink()
    with pytest.raises(HarnessError, match=r"images\.txt: file not found"):
        instantiate(CubParts, root=str(cub)).load("all")


def test_missing_split_file_only_matters_for_train_test(cub):
    (cub / "train_test_split.txt").unlink()
    assert len(instantiate(CubParts, root=str(cub)).load("all")) == 5
    with pytest.raises(HarnessError, match=r"train_test_split\.txt: file not found"):
        instantiate(CubParts, root=str(cub)).load("test")


def test_corrupt_image_fails_with_its_path(cub):
    bad = cub / "images" / "001.Albatross" / "a_0002.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(HarnessError, match=r"a_0002\.jpg: unreadable image"):
        instantiate(CubParts, root=str(cub)).load("all")
    # without the load-time header check the same error surfaces when the crop is decoded
    s = instantiate(CubParts, root=str(cub), check_images=False).load("all")
    i = s.keys.index("001.Albatross/a_0002.jpg#11")
    with pytest.raises(HarnessError, match=r"a_0002\.jpg: unreadable image"):
        s.image(i)
    s.image(s.keys.index("001.Albatross/a_0001.jpg#11"))  # the good image still decodes


def test_truncated_jpeg_fails_on_decode(cub):
    bad = cub / "images" / "001.Albatross" / "a_0001.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    s = instantiate(CubParts, root=str(cub), check_images=False).load("all")
    with pytest.raises(HarnessError, match=r"a_0001\.jpg: unreadable image"):
        s.image(0)


def test_pickle_roundtrip_keeps_items(cub):
    import pickle
    s = instantiate(CubParts, root=str(cub)).load("all")
    s.image(0)
    t = pickle.loads(pickle.dumps(s))
    assert t.keys == s.keys and np.array_equal(np.asarray(t.image(2)), np.asarray(s.image(2)))


def test_keypoint_outside_the_image_is_kept_black_as_official(tmp_path):
    from fixtures_data import CUB_IMAGES
    images = dict(CUB_IMAGES)
    images[2] = ("001.Albatross/a_0002.jpg", (100, 100), 1, {11: (5.0, 10.0, 1), 14: (5.0, 130.0, 1)})
    root = write_cub(tmp_path / "cub", images)
    s = instantiate(CubParts, root=str(root)).load("all")
    i = s.keys.index("001.Albatross/a_0002.jpg#14")  # d = 120 -> half-side 30, centre below the image
    assert s.source(i)[1] == (-25, 100, 35, 160)
    assert s.summary["kept_centre_outside_image"] == 1 and s.summary["kept_crop_partly_outside_image"] == 1
    assert (np.asarray(s.image(i)) == 0).all()
    sm = s.summary
    assert sm["kept"] + sum(v for k, v in sm.items() if k.startswith("dropped_")) == sm["keypoints_annotated"]
