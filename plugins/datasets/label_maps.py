"""Whole-split validation of segmentation label maps: a public helper for every dataset plugin whose splits
are ``SegSamples`` (ADE20K, Pascal, LIP and any ``seg_folders`` dataset, the synthetic masks).

``check_label_maps(samples)``, called from a dataset's ``check_split`` (so at ``harness validate`` and
before a run computes anything), checks every (image, label map) pair of the split:

- the label map is a single-channel index PNG (mode L or P; I and I;16 are read too) whose size equals
  its image's (both sizes read from the file headers);
- every value of the decoded map is a class or ignored: ``1..C`` and 0 with ``reduce_zero_label``
  (``0..C-1`` without), or 255. Maps are decoded in a thread pool (pillow decodes without the GIL).

Every bad file is reported in one error: the first ``SHOWN``, one line each (file, what is wrong, what was
expected), and how many more. The verdict is stored in the feature cache folder
(``<cache>/validated/label_maps-<key>.json``), keyed by the split's ``fingerprint()`` (item keys and the
size and modification time of every image and map, as the feature cache keys features) with the class
count, so validating unchanged data again decodes nothing, and an edited image or map is checked again. Processes
checking the same split at once (torchrun ranks) take turns on a lock file beside the verdict: one scans.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.api import HarnessError, SegSamples, default_cache_dir, progress, taking_turns

#: bump when the checks change: older verdicts are then ignored
CHECK_VERSION = 1
#: bad files listed one per line in the error; the rest are counted
SHOWN = 10
MODES = ("L", "P", "I", "I;16")
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def _header(path: str, what: str) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(mode, (width, height), problem) from the file header; nothing is decoded."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size, None
    except FileNotFoundError:
        return None, None, f"{what} not found"
    except _UNREADABLE as exc:
        return None, None, f"unreadable {what} ({type(exc).__name__}: {exc})"


def _bad_values(arr: np.ndarray, num_classes: int, reduce_zero_label: bool) -> str | None:
    top = num_classes if reduce_zero_label else num_classes - 1
    if arr.size == 0 or (int(arr.max()) <= top and int(arr.min()) >= 0):
        return None
    bad = np.unique(arr[((arr > top) | (arr < 0)) & (arr != 255)])
    if bad.size == 0:
        return None
    shown = ", ".join(str(int(v)) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
    rel = f"> {top}" if bad.min() > top else f"outside 0..{top}"
    return (f"label{'s' if bad.size > 1 else ''} {shown} {rel} ({num_classes} classes"
            f"{', 0 = ignored background' if reduce_zero_label else ''}); expected 0..{top} or 255 (ignored)")


def check_pair(image_path: str, mask_path: str, num_classes: int, reduce_zero_label: bool = True) -> str | None:
    """What is wrong with one label map (and its pairing with its image), or None."""
    problems = []
    mode, size, err = _header(mask_path, "label map")
    if err:
        return err
    if mode not in MODES:
        return f"label map has mode {mode}; expected a single-channel index PNG (mode L or P)"
    _, image_size, err = _header(image_path, "image")
    if err:
        problems.append(f"its image {image_path}: {err}")
    elif image_size != size:
        problems.append(f"size {size[0]}x{size[1]} differs from its image {image_path} "
                        f"({image_size[0]}x{image_size[1]}); expected the image's size")
    try:
        with Image.open(mask_path) as im:
            arr = np.asarray(im)
    except _UNREADABLE as exc:
        return f"unreadable label map ({type(exc).__name__}: {exc})"
    values = _bad_values(arr, num_classes, reduce_zero_label)
    if values:
        problems.append(values)
    return "; ".join(problems) or None


def _verdict_path(samples: SegSamples) -> Path:
    ident = {"check": CHECK_VERSION, "fingerprint": samples.fingerprint(), "classes": len(samples.classes),
             "reduce_zero_label": bool(samples.reduce_zero_label)}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    return default_cache_dir() / "validated" / f"label_maps-{key}.json"


def _read_verdict(path: Path, n: int) -> list | None:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("maps") != n or not isinstance(verdict.get("bad"), list):
        return None
    return verdict["bad"]


def _write_verdict(path: Path, n: int, bad: list) -> None:
    """Atomically (temporary + rename); a cache folder that cannot be written only costs a recheck."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"check": CHECK_VERSION, "maps": n, "bad": bad}))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def scan(samples: SegSamples, desc: str = "checking label maps") -> list[tuple[int, str]]:
    """(item index, problem) of every bad label map of ``samples``, in item order."""
    n, classes, rzl = len(samples), len(samples.classes), samples.reduce_zero_label
    workers = max(1, min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))

    def one(i: int) -> str | None:
        return check_pair(samples.image_paths[i], samples.mask_paths[i], classes, rzl)

    with ThreadPoolExecutor(workers) as pool:
        found = progress(pool.map(one, range(n)), desc=desc, total=n, unit="map")
        return [(i, what) for i, what in enumerate(found) if what]


def check_label_maps(samples: SegSamples, desc: str = "checking label maps") -> None:
    """Check every label map of a split once (see the module docstring); one HarnessError lists the bad ones."""
    n = len(samples)
    path = _verdict_path(samples)
    bad = _read_verdict(path, n)
    if bad is None:
        with taking_turns(path.with_name(f".{path.name}.lock")):  # torchrun ranks: one scans, the others read
            bad = _read_verdict(path, n)
            if bad is None:
                bad = [list(b) for b in scan(samples, desc)]
                _write_verdict(path, n, bad)
    if not bad:
        return
    lines = [f"{samples.mask_paths[i]}: {what}" for i, what in bad[:SHOWN]]
    if len(bad) == 1:
        raise HarnessError(lines[0])
    more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    raise HarnessError(f"{len(bad)} of {n} label maps are bad:\n  " + "\n  ".join(lines) + more)
