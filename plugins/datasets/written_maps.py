"""Label maps a dataset plugin writes itself, once, into the cache folder: a public helper for releases that
ship masks only as COCO/LVIS JSON (polygons or RLE: PartImageNet_OOD, PACO, SPIN without its rasterised PNGs,
ADE20K-Part-234's objects) or as maps the harness cannot read as they are (16-bit maps with 65535 = ignore).

``written_maps(...)`` paints every image's map with the plugin's ``paint(i)`` and returns ``SegSamples`` over
them, in the folder layout mmseg reads (so the paper segmentation protocol runs on them too)::

    <cache>/label_maps/<key>/img/<stem><suffix>   a link to the release's image (a copy where links fail)
    <cache>/label_maps/<key>/ann/<stem>.png       8-bit map: class index 0..C-1, 255 = ignore
    <cache>/label_maps/<key>/done.json            written last: the folder is complete

``<cache>`` is the run's cache folder (``--cache-dir``, the spec's ``cache_dir``, ``$HARNESS_CACHE_DIR``).
``<key>`` hashes what the maps are made from: the plugin's ``ident`` (plugin, version, level, split, the rule),
the class list, the size and modification time of every source file (the annotation files) and every
(stem, image path) pair; an edited annotation file gives new maps, unchanged files reuse the folder without
decoding anything. The folder is built under a temporary name and renamed into place when complete, so an
interrupted or failed run leaves nothing half-written; concurrent writers (torchrun ranks) take turns on a lock
file beside it, so one paints and the others find its folder (without locks, each paints and one copy is kept);
the temporary folder of a killed writer is removed by a later writer. ``label_maps/`` may be deleted at any time
to reclaim space (``harness cache`` does not manage it): maps are painted again when needed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from harness.api import HarnessError, SegSamples, default_cache_dir, pid_alive, progress, taking_turns

#: bump when how maps are written changes: older folders are then ignored
WRITE_VERSION = 1
IGNORE = 255
#: a temporary folder whose writer is gone is removed once this old (seconds)
STALE_AFTER_S = 3600


def _stat(path: Path) -> list:
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def maps_folder(ident: dict, sources: Sequence[Path], entries: Sequence[tuple], classes: Sequence[str]) -> Path:
    h = hashlib.sha256(json.dumps({"write": WRITE_VERSION, "ident": ident, "classes": list(classes),
                                   "sources": [_stat(p) for p in sources]}, sort_keys=True).encode())
    for stem, image, *_ in entries:
        h.update(f"{stem}\t{image}\n".encode())
    return default_cache_dir() / "label_maps" / h.hexdigest()[:32]


def _complete(folder: Path, n: int) -> bool:
    try:
        return json.loads((folder / "done.json").read_text()).get("maps") == n
    except (OSError, ValueError, AttributeError):
        return False


def _link(image: Path, link: Path) -> None:
    try:
        os.symlink(os.path.abspath(image), link)
    except OSError:  # a file system without links
        shutil.copyfile(image, link)


def written_maps(ident: dict, sources: Sequence[Path], entries: Sequence[tuple[str, Path, int, int]],
                 paint: Callable[[int], np.ndarray], classes: Sequence[str], split: str, defaults: dict,
                 summary: dict | None = None, desc: str = "writing label maps") -> SegSamples:
    """SegSamples of label maps painted by ``paint(i)`` (a uint8 array [height, width] for ``entries[i]`` =
    (stem, image path, height, width); values 0..C-1 or 255), written once (see the module docstring)."""
    if not entries:
        raise HarnessError(f"{', '.join(map(str, sources))}: no image with annotations in split '{split}'")
    stems = [e[0] for e in entries]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise HarnessError(f"{sources[0]}: two images of split '{split}' share the file stem '{dup}'")
    suffixes = {Path(e[1]).suffix for e in entries}
    if len(suffixes) != 1:
        raise HarnessError(f"{sources[0]}: the images of split '{split}' mix file suffixes ({', '.join(sorted(suffixes))})"
                           "; the segmentation layout needs one")
    suffix = suffixes.pop()
    missing = [e[1] for e in entries if not Path(e[1]).is_file()]
    if missing:
        raise HarnessError(f"{missing[0]}: image not found (listed in {sources[0]}; {len(missing)} image(s) missing)")
    folder = maps_folder(ident, sources, entries, classes)
    if not _complete(folder, len(entries)):
        with taking_turns(folder.with_name(f".{folder.name}.lock")):  # another rank waits, then finds it complete
            if not _complete(folder, len(entries)):
                _write(folder, entries, paint, suffix, len(classes), desc)
    layout = {"data_root": str(folder), "img_path": "img", "seg_map_path": "ann", "img_suffix": suffix,
              "seg_map_suffix": ".png", "reduce_zero_label": False}
    info = {"split": split, "images": len(entries), "classes": len(classes), "label_dir": str(folder / "ann"),
            "maps_written_from": [str(p) for p in sources], **(summary or {})}
    return SegSamples(stems, list(classes), info, [str(e[1]) for e in entries],
                      [str(folder / "ann" / f"{s}.png") for s in stems], reduce_zero_label=False,
                      defaults=dict(defaults), layout=layout)


def _sweep(parent: Path) -> None:
    """Temporary folders of writers that died (killed before they could remove their own) and are an hour old."""
    for p in parent.glob(".*.part"):
        try:
            if pid_alive(int(p.name.rsplit(".", 2)[-2])):
                continue  # its writer runs
        except ValueError:  # not a writer's name: judged by age alone
            pass
        try:
            if time.time() - p.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _write(folder: Path, entries, paint, suffix: str, num_classes: int, desc: str) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    _sweep(folder.parent)  # the parent exists: the lock file beside the folder is in it
    try:
        (tmp / "img").mkdir(parents=True)
        (tmp / "ann").mkdir()

        def one(i: int) -> None:
            stem, image, h, w = entries[i]
            arr = paint(i)
            if arr.shape != (h, w) or arr.dtype != np.uint8:
                raise HarnessError(f"{image}: painted label map is {arr.dtype} {arr.shape}; expected uint8 ({h}, {w})")
            top = arr[arr != IGNORE].max(initial=0)
            if top >= num_classes:
                raise HarnessError(f"{image}: painted label {int(top)} outside the {num_classes} classes")
            Image.fromarray(arr, mode="L").save(tmp / "ann" / f"{stem}.png")
            _link(Path(image), tmp / "img" / f"{stem}{suffix}")

        workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
        with ThreadPoolExecutor(workers) as pool:
            for _ in progress(pool.map(one, range(len(entries))), desc=desc, total=len(entries), unit="map"):
                pass
        (tmp / "done.json").write_text(json.dumps({"maps": len(entries), "write": WRITE_VERSION}))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder, len(entries)):  # not another writer's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- painting COCO/LVIS masks ------------------------------------------------------------------------------
def decode(seg, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a bool mask [h, w], decoded with
    pycocotools. Polygons of fewer than 3 points cover nothing (the PartImageNet release has some)."""
    from pycocotools import mask as mask_util

    if isinstance(seg, list):
        polys = [list(map(float, p)) for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((h, w), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
    else:
        rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else dict(seg)
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
    with warnings.catch_warnings():  # pycocotools' Cython decode warns under numpy 2 (copy keyword); harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def paint_regions(h: int, w: int, fill: int, regions: Sequence[tuple[int, object]], order: str) -> np.ndarray:
    """A uint8 map [h, w] of ``fill`` with each (value, segmentation) of ``regions`` painted over it. ``order``:
    ``file`` paints in the given order (a later region wins where they overlap: the rule of the releases'
    own rasterisers), ``area`` paints larger regions first, so a small part (an eye, a handle) stays visible
    on the larger one it overlaps (ties keep the given order)."""
    out = np.full((h, w), fill, dtype=np.uint8)
    masks = [(v, decode(seg, h, w)) for v, seg in regions]
    if order == "area":
        masks = sorted(masks, key=lambda vm: -int(vm[1].sum()))  # stable: ties keep the given order
    elif order != "file":
        raise ValueError(f"order must be 'file' or 'area', got {order!r}")
    for v, m in masks:
        out[m] = v
    return out
