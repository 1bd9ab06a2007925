"""cifar10: the python pickle batches, pixel layout, splits, per-class subsampling and bad files."""
import pickle

import numpy as np
import pytest
from fixtures_data import CIFAR_CLASSES, instantiate, write_cifar10

from harness import HarnessError
from partbench_plugins.datasets.cifar10 import Cifar10


@pytest.fixture()
def cifar(tmp_path):
    return write_cifar10(tmp_path / "cifar")


def test_splits_labels_and_pixel_layout(cifar):
    ds = instantiate(Cifar10, root=str(cifar))
    train, test, every = ds.load("train"), ds.load("test"), ds.load("all")
    assert (len(train), len(test), len(every)) == (30, 6, 36)
    assert every.keys[:2] == ["data_batch_1:0", "data_batch_1:1"] and every.keys[-1] == "test_batch:5"
    assert train.classes == CIFAR_CLASSES
    with open(cifar / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    i = train.keys.index("data_batch_2:3")
    assert train.labels[i] == raw[b"labels"][3]
    img = np.asarray(train.image(i))
    assert img.shape == (32, 32, 3)
    row = raw[b"data"][3]  # R plane, G plane, B plane, each 32x32 row-major
    assert tuple(img[0, 1]) == (row[1], row[1024 + 1], row[2048 + 1])
    assert tuple(img[2, 0]) == (row[64], row[1024 + 64], row[2048 + 64])


def test_root_may_be_the_batches_folder_itself(cifar):
    assert len(instantiate(Cifar10, root=str(cifar / "cifar-10-batches-py")).load("test")) == 6


def test_per_class_subsample_is_deterministic(cifar):
    a = instantiate(Cifar10, root=str(cifar), per_class=2).load("all")
    b = instantiate(Cifar10, root=str(cifar), per_class=2).load("all")
    c = instantiate(Cifar10, root=str(cifar), per_class=2, seed=1).load("all")
    assert a.keys == b.keys and a.keys != c.keys
    assert max(np.bincount(a.labels)) == 2 and a.summary["dropped_per_class_limit"] == 36 - len(a)
    full = instantiate(Cifar10, root=str(cifar)).load("all")
    for i in range(len(a)):  # a subsampled item is the same image and label as in the full split
        j = full.keys.index(a.keys[i])
        assert a.labels[i] == full.labels[j]
        assert np.array_equal(np.asarray(a.image(i)), np.asarray(full.image(j)))


def test_missing_batch(cifar):
    (cifar / "cifar-10-batches-py" / "data_batch_3").unlink()
    ds = instantiate(Cifar10, root=str(cifar))
    assert len(ds.load("test")) == 6
    with pytest.raises(HarnessError, match=r"data_batch_3: file not found"):
        ds.load("train")


def test_bad_and_malicious_pickles(cifar):
    d = cifar / "cifar-10-batches-py"
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(HarnessError, match=r"test_batch: not a CIFAR-10 python batch"):
        instantiate(Cifar10, root=str(cifar)).load("test")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(HarnessError, match=r"forbidden global"):
        instantiate(Cifar10, root=str(cifar)).load("test")
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(HarnessError, match=r"'data' must be uint8 \[N, 3072\]"):
        instantiate(Cifar10, root=str(cifar)).load("test")
