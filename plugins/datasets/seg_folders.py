"""Segmentation datasets in mmsegmentation's folder convention: a public helper for dataset plugins.

A split is an image folder and a label folder under a root, paired by file stem (``<stem>.jpg`` and
``<stem>.png``); labels are single-channel index PNGs (mode L or P: palette PNGs give indices, never
colours), 0 = background/unlabelled, classes 1..C (``reduce_zero_label``: 0 -> 255 ignored, k -> k-1).

``SegFolderDataset`` is the base of the ADE20K, Pascal and LIP plugins: it declares the split folders,
the classes and the official evaluation geometry; ``check_split`` (run at spec validation) finds missing
folders and unpaired files, then checks every label map (``label_maps``: size equal to its image's, values
within the classes; the verdict is cached); ``load`` returns a ``harness.api.SegSamples`` whose ``layout``
lets mmseg's ``BaseSegDataset`` read the very same files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from harness.api import Dataset, HarnessError, Option
from harness.api import SegSamples

from ._common import expand, need_dir
from .label_maps import check_label_maps


def _stems(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()}


def pair_files(img_dir: Path, ann_dir: Path, img_suffix: str = ".jpg", seg_suffix: str = ".png"):
    """Sorted (stems, image paths, label paths); an image without its label (or the reverse) is an error
    naming the first such file and how many there are."""
    need_dir(img_dir, "images")
    need_dir(ann_dir, "label maps")
    imgs, anns = _stems(img_dir, img_suffix), _stems(ann_dir, seg_suffix)
    if not imgs:
        raise HarnessError(f"{img_dir}: no '*{img_suffix}' images")
    lonely_img = sorted(set(imgs) - set(anns))
    lonely_ann = sorted(set(anns) - set(imgs))
    if lonely_img:
        raise HarnessError(f"{imgs[lonely_img[0]]}: no label map {ann_dir / (lonely_img[0] + seg_suffix)} "
                           f"({len(lonely_img)} image(s) without labels)")
    if lonely_ann:
        raise HarnessError(f"{anns[lonely_ann[0]]}: no image {img_dir / (lonely_ann[0] + img_suffix)} "
                           f"({len(lonely_ann)} label map(s) without images)")
    stems = sorted(imgs)
    return stems, [str(imgs[s]) for s in stems], [str(anns[s]) for s in stems]


def read_classes_file(path) -> list[str]:
    p = expand(path)
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise HarnessError(f"{p}: no class names (one per line)")
    return names


#: the paper authors' releases (ADE20K-Part, Pascal-Part/-Object, LIP): img/{train,val}, ann/{train,val}
RELEASE_LAYOUT = {"train": ("img/train", "ann/train"), "val": ("img/val", "ann/val")}


class SegFolderDataset(Dataset):
    """Base of the folder-convention segmentation datasets. Subclasses set ``folders`` {split: (image dir,
    label dir)} relative to the root, ``classes`` (names, or None for names numbered after the ``level``:
    part_001, ...), ``num_classes``, ``defaults`` (official geometry) and ``level``/``hierarchy`` (object
    or part, and the family that pairs them, for the object-vs-part figure)."""

    folders: dict[str, tuple[str, str]] = RELEASE_LAYOUT
    classes: Sequence[str] | None = None
    num_classes: int = 0
    defaults: dict = {}
    img_suffix, seg_suffix = ".jpg", ".png"
    options = {
        "root": Option(str, help="dataset root folder", path="dir"),
        "classes_file": Option(str, None, "class names, one per line, in label order (1..C)", path="file",
                               nullable=True),
    }

    @property
    def splits(self):  # type: ignore[override]
        return tuple(self.folders)

    def class_names(self) -> list[str]:
        if self.opts.get("classes_file"):
            names = read_classes_file(self.opts["classes_file"])
            if len(names) != self.num_classes:
                raise HarnessError(f"{self.opts['classes_file']}: {len(names)} class names; dataset "
                                   f"'{self.name}' has {self.num_classes} classes")
            return names
        if self.classes is not None:
            return list(self.classes)
        width = len(str(self.num_classes))
        return [f"{self.level or 'class'}_{k:0{width}d}" for k in range(1, self.num_classes + 1)]

    def _dirs(self, split: str) -> tuple[Path, Path]:
        if split not in self.folders:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of "
                               f"{', '.join(self.folders)})")
        root = expand(self.opts["root"])
        img, ann = self.folders[split]
        return root / img, root / ann

    def check_split(self, split: str) -> None:
        super().check_split(split)
        check_label_maps(self.load(split), f"{self.name} {split}: checking label maps")

    def load(self, split: str) -> SegSamples:
        img_dir, ann_dir = self._dirs(split)
        return folder_samples(expand(self.opts["root"]), img_dir, ann_dir, self.class_names(), self.defaults,
                              split, self.img_suffix, self.seg_suffix)


def folder_samples(root: Path, img_dir: Path, ann_dir: Path, classes: Sequence[str], defaults: dict, split: str,
                   img_suffix: str = ".jpg", seg_suffix: str = ".png") -> SegSamples:
    """SegSamples of one split folder pair (reduce_zero_label), with the layout mmseg reads them by."""
    stems, images, labels = pair_files(img_dir, ann_dir, img_suffix, seg_suffix)
    summary = {"split": split, "images": len(stems), "classes": len(classes),
               "image_dir": str(img_dir), "label_dir": str(ann_dir)}
    layout = {"data_root": str(root), "img_path": str(img_dir.relative_to(root)),
              "seg_map_path": str(ann_dir.relative_to(root)), "img_suffix": img_suffix,
              "seg_map_suffix": seg_suffix, "reduce_zero_label": True}
    return SegSamples(stems, list(classes), summary, images, labels, reduce_zero_label=True,
                      defaults=dict(defaults), layout=layout)
