"""SPair-71k (``spair``) for ``correspondence``, read from the official layout of ``SPair-71k.tar.gz``::

    JPEGImages/<category>/<imname>.jpg
    ImageAnnotation/<category>/<imname>.json     (per-image keypoints; not needed: the pair files hold them)
    PairAnnotation/{trn,val,test}/<pair>.json
    Layout/{large,small}/{trn,val,test}.txt      (one pair name per line, no extension)

A pair name is ``<pair_id>-<src_imname>-<trg_imname>:<category>``. The pairs of a split are the lines of
``Layout/<layout>/<split>.txt`` (as HPF reads them), or every file of ``PairAnnotation/<split>/`` with
``pairs_from: annotations``. A pair file's fields: ``src_imname``, ``trg_imname`` (with ``.jpg``),
``src_imsize``, ``trg_imsize`` ([W, H, C]), ``trg_bndbox`` ([x1, y1, x2, y2]), ``category``, ``src_kps``,
``trg_kps`` (N x [x, y] in original pixels, row i of one matching row i of the other), ``kps_ids``,
``viewpoint_variation`` (0/1/2). Checked when the split is read, which ``check_split`` does at validation (the
read is kept for the run): a malformed pair file (not JSON, a missing or mistyped field, keypoint lists of
different lengths), a keypoint outside its image, a missing image: one line naming the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from harness.api import Dataset, HarnessError, KeypointPair, Option, PairSamples, hookimpl

from ._common import ReadAtValidation, SourceCache, expand, need_dir, need_file, open_rgb

SPLITS = ("trn", "val", "test")


def _kps(doc: dict, key: str, path: Path) -> np.ndarray:
    v = doc.get(key)
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.ndim != 2 or a.shape[1] != 2 or not np.isfinite(a).all():
        if not (isinstance(v, list) and len(v) == 0):
            raise HarnessError(f"{path}: malformed pair file: '{key}' must be a list of [x, y] points, got {v!r:.80}")
        a = np.zeros((0, 2))
    return a


def _numbers(doc: dict, key: str, n: int, path: Path) -> list[float]:
    v = doc.get(key)
    if not (isinstance(v, list) and len(v) >= n and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         for x in v[:n])):
        raise HarnessError(f"{path}: malformed pair file: '{key}' must be a list of {n} numbers, got {v!r:.80}")
    return [float(x) for x in v[:n]]


def _text(doc: dict, key: str, path: Path) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v:
        raise HarnessError(f"{path}: malformed pair file: '{key}' must be a non-empty string, got {v!r:.80}")
    return v


def read_pair_file(path: Path) -> dict:
    """The checked fields of one pair file (see the module docstring)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: pair file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: malformed pair file: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise HarnessError(f"{path}: malformed pair file: expected a JSON object")
    out = {k: _text(doc, k, path) for k in ("src_imname", "trg_imname", "category")}
    out["src_imsize"] = _numbers(doc, "src_imsize", 2, path)
    out["trg_imsize"] = _numbers(doc, "trg_imsize", 2, path)
    x1, y1, x2, y2 = out["trg_bndbox"] = _numbers(doc, "trg_bndbox", 4, path)
    if x2 <= x1 or y2 <= y1:
        raise HarnessError(f"{path}: malformed pair file: 'trg_bndbox' {[x1, y1, x2, y2]} has no area")
    src, trg = _kps(doc, "src_kps", path), _kps(doc, "trg_kps", path)
    if len(src) != len(trg) or len(src) == 0:
        raise HarnessError(f"{path}: malformed pair file: {len(src)} source and {len(trg)} target keypoints "
                           "(expected the same number, at least one)")
    ids = doc.get("kps_ids", list(range(len(src))))
    try:
        ids = tuple(int(i) for i in ids)
    except (TypeError, ValueError):
        raise HarnessError(f"{path}: malformed pair file: 'kps_ids' must be keypoint ids, got {ids!r:.80}") from None
    if len(ids) != len(src):
        raise HarnessError(f"{path}: malformed pair file: {len(ids)} kps_ids for {len(src)} keypoints")
    vp = doc.get("viewpoint_variation")
    if vp is not None and vp not in (0, 1, 2):
        raise HarnessError(f"{path}: malformed pair file: 'viewpoint_variation' must be 0, 1 or 2, got {vp!r}")
    for which, kps, (w, h) in (("src", src, out["src_imsize"]), ("trg", trg, out["trg_imsize"])):
        bad = np.flatnonzero((kps[:, 0] < 0) | (kps[:, 1] < 0) | (kps[:, 0] >= w) | (kps[:, 1] >= h))
        if len(bad):
            x, y = kps[bad[0]]
            raise HarnessError(f"{path}: keypoint {bad[0]} of {which}_kps ({x:g}, {y:g}) is outside its "
                               f"{w:g}x{h:g} image")
    out.update(src_kps=src, trg_kps=trg, kps_ids=ids, viewpoint=vp)
    return out


def pair_names(root: Path, split: str, pairs_from: str, layout: str) -> list[tuple[str, Path]]:
    """(name, pair file) of every pair of the split."""
    folder = root / "PairAnnotation" / split
    if pairs_from == "annotations":
        need_dir(folder, "SPair-71k pair annotations")
        return [(p.stem, p) for p in sorted(folder.glob("*.json"))]
    listing = need_file(root / "Layout" / layout / f"{split}.txt", "SPair-71k layout")
    out = []
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if ":" not in name or name.count("-") < 2:
            raise HarnessError(f"{listing}:{lineno}: malformed pair name {name!r} (expected "
                               "<pair_id>-<src_imname>-<trg_imname>:<category>)")
        out.append((name, folder / f"{name}.json"))
    return out


class SpairSamples(PairSamples):
    def __init__(self, keys, labels, classes, summary, pairs, paths, sizes, files):
        super().__init__(keys, labels, classes, summary, pairs, files=files)
        self.paths, self.sizes = list(paths), list(sizes)
        self._sources = SourceCache(4)

    def image(self, i: int):
        return self._sources.get(i, lambda: open_rgb(self.paths[i]))

    def image_size(self, i: int) -> tuple[int, int]:
        return self.sizes[i]


def read_spair(root, split: str, pairs_from: str = "layout", layout: str = "large", categories=None,
               pairs_per_category: int | None = None, seed: int = 0) -> SpairSamples:
    root = expand(root)
    need_dir(root, "SPair-71k root")
    named = pair_names(root, split, pairs_from, layout)
    docs = []
    for name, path in named:
        doc = read_pair_file(path)
        if categories and doc["category"] not in categories:
            continue
        docs.append((name, path, doc))
    cats = sorted({d["category"] for _, _, d in docs})
    if pairs_per_category:  # a seeded subset per category (sd-dino: 20, probe3d: 200)
        rng = np.random.default_rng([seed, 0x59A1])
        keep = []
        for c in cats:
            idx = [k for k, (_, _, d) in enumerate(docs) if d["category"] == c]
            if len(idx) > pairs_per_category:
                idx = sorted(rng.choice(idx, pairs_per_category, replace=False).tolist())
            keep += idx
        docs = [docs[k] for k in sorted(keep)]
    if not docs:
        raise HarnessError(f"{root}: split '{split}' has no pairs"
                           f"{' of categories ' + ', '.join(categories) if categories else ''}")
    index, keys, labels, paths, sizes, pairs = {}, [], [], [], [], []

    def image(cat: str, imname: str, size, pair_file: Path) -> int:
        key = f"{cat}/{imname}"
        if key not in index:
            path = root / "JPEGImages" / cat / imname
            if not os.path.isfile(path):
                raise HarnessError(f"{pair_file}: image {path} is missing")
            index[key] = len(keys)
            keys.append(key)
            labels.append(cats.index(cat))
            paths.append(str(path))
            sizes.append((int(size[0]), int(size[1])))
        return index[key]

    for name, path, d in docs:
        c = d["category"]
        s = image(c, d["src_imname"], d["src_imsize"], path)
        t = image(c, d["trg_imname"], d["trg_imsize"], path)
        pairs.append(KeypointPair(s, t, d["src_kps"], d["trg_kps"], tuple(d["trg_bndbox"]), cats.index(c),
                                  d["kps_ids"], d["viewpoint"], name))
    vps = [p.viewpoint for p in pairs]
    summary = {"split": split, "pairs": len(pairs), "images": len(keys), "categories": len(cats),
               "keypoints": int(sum(len(p.source_kps) for p in pairs)),
               "pairs_per_category": {c: sum(p.category == k for p in pairs) for k, c in enumerate(cats)},
               "pairs_per_viewpoint": {str(v): vps.count(v) for v in (0, 1, 2) if v in vps},
               "pairs_from": f"Layout/{layout}/{split}.txt" if pairs_from == "layout" else f"PairAnnotation/{split}"}
    files = [p for _, p, _ in docs] + ([root / "Layout" / layout / f"{split}.txt"] if pairs_from == "layout" else [])
    return SpairSamples(keys, labels, cats, summary, pairs, paths, sizes, files + paths)


class Spair(ReadAtValidation, Dataset):
    """SPair-71k keypoint pairs (18 categories, viewpoint-variation levels) in the official layout."""

    splits = SPLITS
    options = {
        "root": Option(str, help="the SPair-71k folder (JPEGImages/, PairAnnotation/, Layout/)", path="dir"),
        "pairs_from": Option(str, "layout", "the split's pairs: the names in Layout/<layout>/<split>.txt, or every "
                             "file of PairAnnotation/<split>/", choices=["layout", "annotations"]),
        "layout": Option(str, "large", "Layout/ subfolder", choices=["large", "small"]),
        "categories": Option(list, None, "only these categories (default: all)", nullable=True),
        "pairs_per_category": Option(int, None, "a seeded subset of at most this many pairs per category "
                                     "(sd-dino samples 20, probe3d 200; default: all)", nullable=True,
                                     check=lambda v: None if v is None or v > 0 else "must be > 0"),
        "seed": Option(int, 0, "seed of the pairs_per_category subset"),
    }

    def read(self, split: str):
        if split not in self.splits:
            raise HarnessError(f"dataset '{self.name}': unknown split '{split}' (expected one of {self.splits})")
        o = self.opts
        return read_spair(o["root"], split, o["pairs_from"], o["layout"], o["categories"],
                          o["pairs_per_category"], o["seed"])


@hookimpl
def register_datasets(register):
    register("spair", Spair)
