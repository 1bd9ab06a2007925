"""Helpers for ``Task.resample`` (bootstrap statistics from per-item data; see harness.bootstrap): weighted
sums under a count matrix, and the tasks' own rounding applied element by element so that the identity
resample reproduces the reported number exactly."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def weighted_sums(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[b, ...]: sum over items of count x value (counts [b, n], values [n, ...]); integer values stay exact."""
    v = np.asarray(values)
    flat = v.reshape(len(v), -1)
    if flat.dtype == bool or np.issubdtype(flat.dtype, np.integer):
        out = counts.astype(np.int64) @ flat.astype(np.int64)
    else:
        out = counts.astype(np.float64) @ flat.astype(np.float64)
    return out.reshape((counts.shape[0],) + v.shape[1:])


def elementwise(fn: Callable[[float], float], values: np.ndarray) -> np.ndarray:
    """``fn`` (a task's scalar rounding, e.g. Python's ``round(100 * x, 6)``) on every value: numpy's rounding
    differs from Python's in the last bit for some values."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([math.nan if math.isnan(x) else fn(x) for x in v.ravel().tolist()]).reshape(v.shape)


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """``np.nanmean(values, axis=1)``, NaN (and no warning) for a row without a number."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def class_sums(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[b, classes]: per class, the sum of ``weights`` [b, n] over its items (classes 0 .. max label), without
    a one-hot matrix: items sorted by class (stably), each class's run summed."""
    labels = np.asarray(labels, dtype=np.int64)
    C = int(labels.max()) + 1 if len(labels) else 0
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    out = np.zeros((weights.shape[0], C), dtype=np.result_type(weights, np.float64))
    if len(present):
        out[:, present] = np.add.reduceat(weights[:, order], starts, axis=1)
    return out
