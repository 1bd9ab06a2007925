"""correspondence: keypoint correspondence with no training (SPair-71k, CUB and COCO-person pairs; protocol in
docs/correspondence.md).

Each image is resized (bicubic, aspect kept) so that its longer side is ``input_size``, padded to a square and
encoded once (the token maps are cached through the feature cache like every dense task's). The map of
``representation`` is optionally upsampled bilinearly by ``upsample``; its cells that cover the image are the
candidates. For every pair, the source feature of each source keypoint is the cell that contains it (DIFT
indexes its upsampled map at the keypoint, sd-dino takes the keypoint's patch), its match the most
cosine-similar candidate cell of the target image (exact, by blocked normalised matrix products with a top-1
per source keypoint: ``knn.topk_cosine``), and the prediction that cell's centre in target pixels. A
keypoint is correct when its error is at most alpha * max(h, w) of the target's box. PCK is reported under
the three averaging conventions of ``correspondence_metrics`` (and per SPair viewpoint level); the
``convention`` option picks the headline.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.api import HarnessError, Option, PairSamples, hookimpl

from .correspondence_figure import draw_pairs
from .correspondence_metrics import resampled_pck, CONVENTIONS, correct_within, metric_name, pck, per_category
from .dense import DerivedSamples
from .dense_task import DenseHeadTask, check_token_map
from .knn import normalise, topk_cosine


def _check_alpha(v):
    if not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a <= 1 for a in v):
        return "expected a non-empty list of thresholds in (0, 1], e.g. [0.1] or [0.05, 0.1, 0.15]"
    return None


def resized_size(w: int, h: int, longer: int) -> tuple[int, int]:
    """(w, h) of an image whose longer side becomes ``longer`` (aspect kept, at least 1 pixel)."""
    s = longer / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def image_view(samples: PairSamples, size: int, name: str) -> DerivedSamples:
    """Every image of the split resized so that its longer side is ``size`` (padded to a square by the
    transform)."""
    geometry = []
    for i in range(len(samples)):
        w, h = samples.image_size(i)
        geometry.append(resized_size(w, h, size) + (w, h))

    def render(img: Image.Image, g: np.ndarray) -> Image.Image:
        rw, rh = int(g[0]), int(g[1])
        return img if img.size == (rw, rh) else img.resize((rw, rh), Image.BICUBIC)

    return DerivedSamples(samples, np.arange(len(samples)), np.asarray(geometry, np.float64).reshape(-1, 4),
                          np.zeros(len(samples), bool), render, f"{name}/longer:{size}")


class Candidates:
    """The normalised candidate cells of one image: the (upsampled) token map cut to the cells that cover the
    image, as [rows * cols, D] unit rows, and the mapping between image pixels and cells."""

    def __init__(self, grid_map: torch.Tensor, geometry, patch: int, factor: int):
        rw, rh, w, h = (float(v) for v in geometry)
        self.cell = patch / factor  # input pixels per cell
        self.sx, self.sy = rw / w, rh / h  # image -> input pixels
        self.cols = min(grid_map.shape[-1] * factor, math.ceil(rw / self.cell))
        self.rows = min(grid_map.shape[-2] * factor, math.ceil(rh / self.cell))
        m = grid_map[None].float()
        if factor > 1:
            m = F.interpolate(m, scale_factor=factor, mode="bilinear", align_corners=False)
        m = m[0, :, :self.rows, :self.cols]
        self.features = normalise(m.reshape(m.shape[0], -1).T)

    def cells(self, kps: np.ndarray) -> np.ndarray:
        """Row-major index of the cell that contains each (x, y) image point (clamped to the candidates)."""
        col = np.clip(np.floor(kps[:, 0] * self.sx / self.cell), 0, self.cols - 1).astype(np.int64)
        row = np.clip(np.floor(kps[:, 1] * self.sy / self.cell), 0, self.rows - 1).astype(np.int64)
        return row * self.cols + col

    def centres(self, idx: np.ndarray) -> np.ndarray:
        """(x, y) image pixels of the centres of cells ``idx``."""
        row, col = np.divmod(np.asarray(idx, np.int64), self.cols)
        return np.stack([(col + 0.5) * self.cell / self.sx, (row + 0.5) * self.cell / self.sy], 1)


class Correspondence(DenseHeadTask):
    """Training-free keypoint correspondence: nearest-neighbour matching of frozen features, PCK (three
    averaging conventions)."""

    samples_type, kind, item = PairSamples, "keypoint-pair", "image"
    options = {
        "split": Option(str, "test", "split whose pairs are evaluated"),
        "representation": Option(str, "tokens", "token map matched: 'tokens' (after the final norm) or "
                                 "'block.<i>' (raw output of block i)", check=check_token_map),
        "input_size": Option(int, 448, "longer side of every image after resizing (aspect kept, padded to a "
                             "square; a multiple of the patch size): the feature resolution",
                             check=lambda v: None if v > 0 else "must be > 0"),
        "upsample": Option(int, 1, "bilinear upsampling factor of the token map before matching (1: patch "
                           "cells; f: cells of patch/f pixels)", check=lambda v: None if 1 <= v <= 64 else
                           "must be in [1, 64]"),
        "alpha": Option(list, [0.1], "PCK thresholds as fractions of max(h, w) of the target box (the first "
                        "is the headline's)", check=_check_alpha),
        "convention": Option(str, "category", "averaging of the headline metric: " + "; ".join(
            f"{k}: {v}" for k, v in CONVENTIONS.items()), choices=list(CONVENTIONS)),
        "figure_pairs": Option(int, 4, "pairs drawn in correspondence.png (0: no figure)",
                               check=lambda v: None if v >= 0 else "must be >= 0"),
        "mode": Option(str, "auto", "cache the image features (the only way this task reads them); auto: "
                       "refuse beyond max_cache_gb", choices=["auto", "cache"]),
        "max_cache_gb": Option(float, 64.0, "the largest image feature cache to build"),
    }

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        a = self.opts["alpha"][0]
        first = self.opts["convention"]
        self.headline = tuple(metric_name(a, c) for c in [first, *(c for c in CONVENTIONS if c != first)])

    # -- DenseHeadTask hooks ----------------------------------------------------------------------------
    def reps(self) -> list[str]:
        return [self.opts["representation"]]

    def view_splits(self):
        return [("test", self.opts["split"], False)]

    def split_option(self, role: str) -> str:
        return "split"

    def check(self, encoder, dataset) -> None:
        super().check(encoder, dataset)
        if self.opts["input_size"] % int(encoder.patch_size):
            raise ValueError(f"input_size {self.opts['input_size']} is not a multiple of encoder "
                             f"'{encoder.name}''s patch size {encoder.patch_size}")

    def make_view(self, samples, split, flip):
        return image_view(samples, self.opts["input_size"], split)

    def input_size(self, samples):
        return (self.opts["input_size"], self.opts["input_size"])

    # -- a unit -------------------------------------------------------------------------------------------
    def run(self, ctx) -> dict:
        unit = self.prepare(ctx)
        samples, view, maps = unit.samples["test"], unit.views["test"], unit.maps("test")
        o, p = self.opts, int(ctx.encoder.patch_size)
        if not samples.pairs:
            raise HarnessError(f"{self.name}: dataset '{ctx.dataset.name}' split '{o['split']}' has no pairs")
        t0 = time.perf_counter()
        cand = _CandidateCache(maps, view.geometry, p, o["upsample"])
        preds = match_pairs(samples.pairs, cand, progress=lambda it, n: ctx.progress(
            it, desc=f"{self.name} {ctx.encoder.name}", total=n))
        seconds = time.perf_counter() - t0
        return self.report(unit, samples, preds, seconds)

    def report(self, unit, samples: PairSamples, preds: list[np.ndarray], seconds: float) -> dict:  # type: ignore[override]
        o, ctx = self.opts, unit.ctx
        pairs = samples.pairs
        errors = [np.linalg.norm(pr - p.target_kps, axis=1) for pr, p in zip(preds, pairs)]
        sides = np.asarray([max(p.target_bbox[2] - p.target_bbox[0], p.target_bbox[3] - p.target_bbox[1])
                            for p in pairs], np.float64)
        points = np.asarray([len(p.target_kps) for p in pairs], np.int64)
        cats = np.asarray([p.category for p in pairs], np.int64)
        vps = np.asarray([-1 if p.viewpoint is None else p.viewpoint for p in pairs], np.int64)
        keys = [p.name or f"{samples.keys[p.source]}->{samples.keys[p.target]}#{k}" for k, p in enumerate(pairs)]
        metrics, details_alpha = {}, {}
        per_item = {"items": np.asarray(keys, dtype=str), "points": points, "category": cats, "viewpoint": vps}
        for a in o["alpha"]:
            correct = np.asarray([int(correct_within(e, s, a).sum()) for e, s in zip(errors, sides)], np.int64)
            per_item[f"correct@{a:g}"] = correct
            overall = pck(points, correct, cats)
            for conv, v in overall.items():
                metrics[metric_name(a, conv)] = _round(v)
            by_vp = {}
            for level in sorted(set(vps.tolist()) - {-1}):
                m = vps == level
                by_vp[str(level)] = {k: _round(v) for k, v in pck(points[m], correct[m], cats[m]).items()}
                by_vp[str(level)]["pairs"] = int(m.sum())
                metrics[metric_name(a, o["convention"], level)] = by_vp[str(level)][o["convention"]]
            details_alpha[f"{a:g}"] = {"conventions": {k: _round(v) for k, v in overall.items()},
                                       "per_category": per_category(points, correct, cats, samples.classes),
                                       "by_viewpoint": by_vp}
        artifacts = []
        if o["figure_pairs"]:
            a0 = o["alpha"][0]
            artifacts.append(draw_pairs(samples, preds, [correct_within(e, s, a0) for e, s in zip(errors, sides)],
                                        o["figure_pairs"], ctx.out_dir / "correspondence.png",
                                        f"{ctx.encoder.name} on {ctx.dataset.name}: PCK@{a0:g}"))
        details = {
            "headline": {"metric": self.headline[0], "convention": o["convention"],
                         "meaning": CONVENTIONS[o["convention"]]},
            "conventions": dict(CONVENTIONS), "per_alpha": details_alpha,
            "threshold": "error <= alpha * max(h, w) of the target box, in target image pixels",
            "pairs": len(pairs), "points": int(points.sum()), "images": len(samples),
            "categories": len(set(cats.tolist())), "dataset_summary": samples.summary,
            "matching": {"representation": o["representation"], "input_size": o["input_size"],
                         "upsample": o["upsample"], "grid": list(unit.grid),
                         "rule": "source: the cell containing the keypoint; target: cosine top-1 over the cells "
                                 "covering the image; prediction: that cell's centre"},
            "cache_gb": None if unit.cache_gb is None else round(unit.cache_gb, 3),
            "seconds": {"total": round(time.perf_counter() - unit.t0, 3), "matching": round(seconds, 3)},
        }
        return {"metrics": metrics, "details": details, "artifacts": [str(a) for a in artifacts],
                "per_item": per_item}


    def resample(self, per_item, counts):
        """PCK@alpha under each convention for resamples of the pairs (``counts`` [b, pairs]): per point, the
        drawn pairs' correct keypoints over their keypoints; per image, the mean of the drawn pairs' fractions;
        per category, the per-point PCK of each category drawn, then their mean. Rounded as reported."""
        return resampled_pck(per_item, counts, self.opts["alpha"], _round)


class _CandidateCache:
    """``Candidates`` of the view's images, built on first use and kept in a small LRU (an image is the
    source or the target of many pairs)."""

    def __init__(self, maps, geometry: np.ndarray, patch: int, factor: int, max_bytes: int = 1 << 30):
        self.maps, self.geometry, self.patch, self.factor, self.max_bytes = maps, geometry, patch, factor, max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0

    def __call__(self, i: int) -> Candidates:
        if i in self._items:
            self._items.move_to_end(i)
            return self._items[i]
        c = Candidates(self.maps.batch([i])[0], self.geometry[i], self.patch, self.factor)
        self._items[i] = c
        self._bytes += c.features.numel() * 4
        while self._bytes > self.max_bytes and len(self._items) > 2:  # a pair's two images always stay
            _, old = self._items.popitem(last=False)
            self._bytes -= old.features.numel() * 4
        return c


def match_pairs(pairs, candidates, progress=None) -> list[np.ndarray]:
    """Predicted target (x, y) of every source keypoint of every pair: pairs sharing a target are matched in
    one blocked top-1 search. ``candidates(i)`` gives image i's ``Candidates``."""
    by_target: dict[int, list[int]] = {}
    for k, p in enumerate(pairs):
        by_target.setdefault(p.target, []).append(k)
    preds: list = [None] * len(pairs)
    targets = sorted(by_target)
    for t in (progress(targets, len(targets)) if progress else targets):
        ks = by_target[t]
        src = [candidates(pairs[k].source) for k in ks]
        queries = torch.cat([c.features[torch.from_numpy(c.cells(pairs[k].source_kps))] for c, k in zip(src, ks)])
        tgt = candidates(t)
        _, idx = topk_cosine(queries, tgt.features, 1, normalised=True)
        centres = tgt.centres(idx[:, 0].cpu().numpy())
        a = 0
        for k in ks:
            n = len(pairs[k].source_kps)
            preds[k] = centres[a:a + n]
            a += n
    return preds


def _round(v):
    return None if v is None else round(float(v), 4)


@hookimpl
def register_tasks(register):
    register("correspondence", Correspondence)
