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
