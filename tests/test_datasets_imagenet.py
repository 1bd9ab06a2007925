"""imagenet_folder and imagenet_patches on a tiny ImageFolder tree."""
import numpy as np
import pytest
from fixtures_data import instantiate, write_imagefolder
from PIL import Image

from harness import HarnessError
from partbench_plugins.datasets.imagenet import ImagenetFolder, ImagenetPatches, patch_box


@pytest.fixture()
def inet(tmp_path):
    return write_imagefolder(tmp_path / "imagenet")


def test_folder_classes_are_shared_between_splits(inet):
    ds = instantiate(ImagenetFolder, root=str(inet))
    val, train = ds.load("val"), ds.load("train")
    assert val.classes == train.classes == ["n01440764", "n01443537", "n01484850"]
    assert val.keys == ["n01440764/ILSVRC2012_val_00000003.JPEG", "n01443537/ILSVRC2012_val_00000001.JPEG",
                        "n01443537/ILSVRC2012_val_00030000.JPEG", "n01484850/ILSVRC2012_val_00000002.JPEG"]
    assert val.labels.tolist() == [0, 1, 1, 2] and train.labels.tolist() == [0, 1]
    assert val.image(0).size == (300, 200)
    named = instantiate(ImagenetFolder, root=str(inet), class_names=str(inet / "LOC_synset_mapping.txt"))
    assert named.load("val").classes[0] == "tench, Tinca tinca"


def test_folder_per_class(inet):
    s = instantiate(ImagenetFolder, root=str(inet), per_class=1).load("val")
    assert len(s) == 3 and sorted(s.labels.tolist()) == [0, 1, 2]


def test_folder_errors(inet, tmp_path):
    (inet / "val" / "n01440764" / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"nope")
    s = instantiate(ImagenetFolder, root=str(inet)).load("val")
    with pytest.raises(HarnessError, match=r"ILSVRC2012_val_00000003\.JPEG: unreadable image"):
        s.image(0)
    with pytest.raises(HarnessError, match=r"train: directory not found"):
        instantiate(ImagenetFolder, root=str(tmp_path)).load("train")


def _official_patch(path, j):
    """The official loader, step by step: Resize(256) + CenterCrop(224) + Resize(896), 224 windows."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224)).resize((896, 896), Image.BICUBIC)
    t, l = 112 * (j // 7), 112 * (j % 7)  # official order: rows (t) outer, columns (l) inner
    return np.asarray(img.crop((l, t, l + 224, t + 224)))


def test_patches_grid_and_official_pixels(inet):
    s = instantiate(ImagenetPatches, root=str(inet)).load("val")
    assert len(s) == 4 * 49 and s.summary["patches"] == 196
    assert s.keys[8] == "n01440764/ILSVRC2012_val_00000003.JPEG#8" and s.labels[49] == 1
    path = inet / "val" / "n01440764" / "ILSVRC2012_val_00000003.JPEG"
    for j in (0, 8, 48):
        assert np.array_equal(np.asarray(s.image(j)), _official_patch(path, j))
    assert patch_box(8) == (28, 28, 84, 84) and patch_box(13) == (168, 28, 224, 84)


def test_patch_mode_and_source_box_in_original_coordinates(inet):
    s = instantiate(ImagenetPatches, root=str(inet), upsample="patch").load("val")
    assert s.image(8).size == (56, 56)
    up = instantiate(ImagenetPatches, root=str(inet)).load("val")
    a = np.asarray(s.image(8).resize((224, 224), Image.BICUBIC), dtype=np.float64)
    assert np.abs(a - np.asarray(up.image(8), dtype=np.float64)).mean() < 25  # same window, other resampling
    # 300x200 -> 384x256, crop left 80, top 16; patch 8 = (28, 28, 84, 84) -> (108, 44, 164, 100) / 1.28
    path, box = s.source(8)
    assert path.endswith("ILSVRC2012_val_00000003.JPEG") and box == (84, 34, 128, 78)


def test_patches_official_image_selection(inet):
    s = instantiate(ImagenetPatches, root=str(inet), max_id=25000).load("val")
    assert s.summary["images"] == 3 and s.summary["images_found"] == 4
    s = instantiate(ImagenetPatches, root=str(inet), max_id=25000, include=[30000], max_images=2).load("val")
    assert s.summary["images"] == 2 and s.keys[49].startswith("n01443537/ILSVRC2012_val_00000001")
