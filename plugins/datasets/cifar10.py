"""CIFAR-10 (``cifar10``) from the python pickle batches of ``cifar-10-python.tar.gz``.

Layout: ``root`` holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``
(either directly or in ``root/cifar-10-batches-py/``). Splits: ``train`` (the five data batches),
``test`` (test_batch), ``all`` (both, train first). Images are the native 32x32; the task's transform
upsamples them (bicubic) to the encoder's input size, as the paper's "resized to 224x224".

The batches are pickles; they are read with an unpickler that only admits the builtins and numpy
array types CIFAR-10 uses, so a tampered file cannot run code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from harness.api import Dataset, HarnessError, Option, Samples, hookimpl

from ._common import expand, need_dir, need_file, positive, subsample_per_class

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("builtins", "list"), ("builtins", "dict"),
            ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes with it


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _load_pickle(path: Path) -> dict:
    need_file(path, "CIFAR-10 python batch")
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise HarnessError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise HarnessError(f"{path}: not a CIFAR-10 python batch (expected a dict, got {type(d).__name__})")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def read_batch(path: Path, num_classes: int):
    d = _load_pickle(path)
    for k in ("data", "labels"):
        if k not in d:
            raise HarnessError(f"{path}: missing key '{k}' (expected a CIFAR-10 python batch)")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise HarnessError(f"{path}: 'data' must be uint8 [N, 3072] with N labels, got {data.dtype} "
                           f"{list(data.shape)} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise HarnessError(f"{path}: labels must be in 0..{num_classes - 1}")
    # rows are 1024 R, 1024 G, 1024 B values, each plane row-major 32x32
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class ArraySamples(Samples):
    """Samples backed by an in-memory uint8 [N,H,W,3] array."""

    def __init__(self, keys, labels, classes, summary, pixels: np.ndarray, files=()):
        super().__init__(keys, labels, classes, summary, files=files)
        self.pixels = pixels

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.pixels[i]), "RGB")


class Cifar10(Dataset):
    """CIFAR-10 images (object retrieval, Table 2)."""

    splits = ("all", "train", "test")
    options = {
        "root": Option(str, help="folder with data_batch_1..5, test_batch, batches.meta "
                       "(or its cifar-10-batches-py/ subfolder)", path="dir"),
        "per_class": Option(int, None, "keep at most this many images per class (random, fixed seed)",
                            nullable=True, check=positive),
        "seed": Option(int, 0, "seed of the per_class subsample"),
    }

    def _dir(self) -> Path:
        root = need_dir(expand(self.opts["root"]), "CIFAR-10 root")
        sub = root / "cifar-10-batches-py"
        return sub if not (root / "batches.meta").exists() and sub.is_dir() else root

    def load(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        d = self._dir()
        meta = _load_pickle(d / "batches.meta")
        names = meta.get("label_names")
        if not isinstance(names, list) or not names:
            raise HarnessError(f"{d / 'batches.meta'}: missing 'label_names'")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        files = {"train": TRAIN, "test": TEST, "all": TRAIN + TEST}[split]
        pix, labs, keys = [], [], []
        for name in files:
            x, y = read_batch(d / name, len(classes))
            pix.append(x)
            labs.append(y)
            keys.extend(f"{name}:{j}" for j in range(len(y)))
        pixels, labels = np.concatenate(pix), np.concatenate(labs)
        keep = subsample_per_class(labels, self.opts.get("per_class"), self.opts.get("seed", 0))
        summary = {"split": split, "images": int(len(labels)), "kept": int(len(keep))}
        if len(keep) != len(labels):
            pixels, labels = np.ascontiguousarray(pixels[keep]), labels[keep]
            keys = [keys[j] for j in keep]
            summary["dropped_per_class_limit"] = summary["images"] - summary["kept"]
        summary["per_class"] = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
        return ArraySamples(keys, labels, classes, summary, pixels, files=[d / "batches.meta", *(d / f for f in files)])


@hookimpl
def register_datasets(register):
    register("cifar10", Cifar10)
