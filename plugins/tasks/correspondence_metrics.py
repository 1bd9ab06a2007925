"""PCK of keypoint correspondence under the three averaging conventions published numbers use
(docs/correspondence.md; the sources are DIFT, sd-dino and probe3d):

- ``point``: correct keypoints / all keypoints, pooled over every pair (DIFT's "per point");
- ``image``: the mean over pairs of each pair's fraction of correct keypoints (DIFT's "per image");
- ``category``: the per-point PCK of each category, then the plain mean over categories (sd-dino's
  "Average", probe3d).

A keypoint is correct when its error is at most alpha * max(h, w) of the target's box (DIFT ``<=``).
"""
from __future__ import annotations

import numpy as np

CONVENTIONS = {
    "point": "per point: correct keypoints / all keypoints over all pairs (DIFT 'per point')",
    "image": "per image: mean over pairs of each pair's fraction of correct keypoints (DIFT 'per image')",
    "category": "per category: per-point PCK within each category, then the mean over categories (sd-dino "
                "'Average', probe3d)",
}


def metric_name(alpha: float, convention: str, viewpoint: int | None = None) -> str:
    return f"PCK@{alpha:g}_{convention}" + ("" if viewpoint is None else f"_vp{viewpoint}")


def correct_within(errors: np.ndarray, thresholds: np.ndarray, alpha: float) -> np.ndarray:
    """Per keypoint: error <= alpha * threshold (the target box's max side)."""
    return errors <= alpha * thresholds


def pck(points: np.ndarray, correct: np.ndarray, categories: np.ndarray) -> dict[str, float | None]:
    """The three conventions (in %) from per-pair counts: ``points`` and ``correct`` keypoints of each pair and
    its ``categories``; None where there is no pair."""
    points, correct, categories = (np.asarray(a) for a in (points, correct, categories))
    if points.sum() == 0:
        return {c: None for c in CONVENTIONS}
    per_cat = [correct[categories == c].sum() / points[categories == c].sum() for c in np.unique(categories)]
    return {"point": float(100.0 * correct.sum() / points.sum()),
            "image": float(100.0 * np.mean(correct / points)),
            "category": float(100.0 * np.mean(per_cat))}


def per_category(points, correct, categories, names) -> dict[str, dict]:
    """Per category: its pairs, keypoints and per-point PCK (%)."""
    out = {}
    for c in np.unique(categories):
        m = categories == c
        out[names[int(c)]] = {"pairs": int(m.sum()), "points": int(points[m].sum()),
                              "PCK": float(100.0 * correct[m].sum() / points[m].sum())}
    return out


def resampled_pck(per_item: dict, counts: np.ndarray, alphas, rounding) -> dict[str, np.ndarray]:
    """``pck`` of each resample (``counts`` [b, pairs]: how often each pair is drawn), for each alpha and
    convention, computed in the order ``pck`` computes them so the identity resample gives its numbers exactly."""
    from .resampling import class_sums, elementwise, weighted_sums

    points = np.asarray(per_item["points"], np.int64)
    cats = np.asarray(per_item["category"], np.int64)
    n_points = weighted_sums(counts, points)
    cat_points = class_sums(counts * points, cats)
    out = {}
    for a in alphas:
        correct = np.asarray(per_item[f"correct@{a:g}"], np.int64)
        frac = correct / points  # each pair's fraction, as pck divides
        with np.errstate(invalid="ignore", divide="ignore"):
            point = 100.0 * weighted_sums(counts, correct) / n_points
            # per image: the mean over the drawn pairs (a pair drawn twice counts twice), summed as np.mean does
            image = 100.0 * np.array([np.repeat(frac, row).mean() if row.any() else np.nan for row in counts])
            per_cat = class_sums(counts * correct, cats) / cat_points  # NaN: a category not drawn
            # the mean over the categories drawn, of exactly those values (as pck's np.mean over its list)
            category = 100.0 * np.array([r[~np.isnan(r)].mean() if (~np.isnan(r)).any() else np.nan for r in per_cat])
        for conv, v in (("point", point), ("image", image), ("category", category)):
            out[metric_name(a, conv)] = elementwise(rounding, v)
    return out
