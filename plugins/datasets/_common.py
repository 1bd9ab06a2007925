"""Private helpers of the built-in dataset plugins: strict text/image readers, a small cache of decoded
images and option checks.
(The official part-crop rule and the crop Samples class are public: ``part_crops``.)
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.api import HarnessError


def expand(path) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(str(path))))


def need_file(path: Path, what: str = "") -> Path:
    if not path.is_file():
        raise HarnessError(f"{path}: file not found{(' (' + what + ')') if what else ''}")
    return path


def need_dir(path: Path, what: str = "") -> Path:
    if not path.is_dir():
        raise HarnessError(f"{path}: directory not found{(' (' + what + ')') if what else ''}")
    return path


def read_rows(path: Path, fields: Sequence[type], rest: bool = False) -> Iterator[tuple[int, list]]:
    """Yield (line number, parsed fields) of a whitespace-separated text file, skipping blank lines.

    ``fields`` are converters for the leading columns; with ``rest`` the remaining text of the line
    (joined by single spaces, as the official code does for ``parts.txt``) is appended as a string.
    Any deviation raises a one-line HarnessError naming the file and line.
    """
    need_file(path)
    names = ", ".join(t.__name__ for t in fields) + (", name" if rest else "")
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            n = len(fields)
            if len(parts) < n + (1 if rest else 0) or (not rest and len(parts) != n):
                raise HarnessError(f"{path}:{lineno}: malformed line {line.strip()!r} (expected: {names})")
            try:
                vals = [t(p) for t, p in zip(fields, parts)]
            except ValueError:
                raise HarnessError(
                    f"{path}:{lineno}: malformed line {line.strip()!r} (expected: {names})") from None
            if rest:
                vals.append(" ".join(parts[n:]))
            yield lineno, vals


def open_rgb(path) -> Image.Image:
    """Decode an image fully as RGB; a missing or unreadable file is a one-line HarnessError."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise HarnessError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HarnessError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


def image_size(path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise HarnessError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HarnessError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


class SourceCache:
    """A small thread-safe LRU of decoded source images (the feature loader decodes in a thread).
    Pickles empty, so Samples holding one stay picklable for worker processes."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, load):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()  # decode outside the lock
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __getstate__(self):
        return {"size": self.size}

    def __setstate__(self, state):
        self.__init__(state["size"])


def subsample_per_class(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices keeping at most ``per_class`` items of each label, drawn with a fixed seed."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.RandomState(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def distinct_ids_check(what: str):
    """Option check: a non-empty list of distinct positive 1-based ids; ``what`` names them."""

    def check(v):
        if not v or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v):
            return f"expected a non-empty list of positive {what}"
        if len(set(v)) != len(v):
            return f"{what.split(' (')[0]} must be distinct"
        return None

    return check


def positive(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


class ReadAtValidation:
    """Mixin for a Dataset whose ``check_split`` reads the whole split (every error found at validation); the
    read is kept for the run's next ``load`` of the split, so a run parses the files once. Subclasses
    implement ``read(split)``."""

    def check_split(self, split: str) -> None:
        super().check_split(split)
        self.__dict__.setdefault("_read_at_validation", {})[split] = self.read(split)

    def load(self, split: str):
        kept = self.__dict__.setdefault("_read_at_validation", {})
        return kept.pop(split) if split in kept else self.read(split)

    def read(self, split: str):
        raise NotImplementedError
