"""Independent references for the numbers end-to-end tests get back from a run (used by several test files).

Plain module (not a conftest) so any test can import it: ``from oracles import check_retrieval_unit``.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score


def sklearn_retrieval_metrics(x, y, exclude_self=False) -> tuple[float, float]:
    """(AP, mAP) in percent: sklearn's average precision of every query against all items by cosine
    similarity (itself left out with ``exclude_self``), queries without a positive left out; AP = mean over
    queries, mAP = mean over classes of the class mean."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    aps = []
    for i in range(len(y)):
        keep = np.ones(len(y), dtype=bool)
        keep[i] = not exclude_self
        yt = y[keep] == y[i]
        aps.append(average_precision_score(yt, (u @ u[i])[keep]) if yt.any() else np.nan)
    aps = np.array(aps)
    ok = ~np.isnan(aps)
    per_class = [aps[(y == c) & ok].mean() for c in np.unique(y) if ((y == c) & ok).any()]
    return 100 * aps[ok].mean(), 100 * np.mean(per_class)


def check_retrieval_unit(result: dict, plan, out_dir, cache_dir=None) -> None:
    """A retrieval unit's AP and mAP equal sklearn's reference on its encoder's features of its items,
    computed here through the real executor (so the runner handed the task the right items, labels,
    transform and options). ``plan``: the spec's plan (``harness.spec.build_plan``)."""
    from harness.testing import FakeContext

    d = result["details"]
    rep, ds = d["representation"]["reported"], plan.datasets[result["dataset"]]
    items = ds.load(d["split"])
    ctx = FakeContext(plan.encoders[result["encoder"]], ds, samples={d["split"]: items}, out_dir=out_dir,
                      cache_dir=cache_dir)
    x = ctx.features(d["split"], [rep], d["transform"])[rep]
    expected = sklearn_retrieval_metrics(x, items.labels, d["exclude_self"])
    assert (result["metrics"]["AP"], result["metrics"]["mAP"]) == pytest.approx(expected, abs=1e-5), result["unit"]


def check_probe_counts(result: dict) -> None:
    """A probe unit's top-1 accuracies are shares of its test items, exactly: whole counts of
    details.n.test (the probes' own numbers are pinned by tests/test_task_probes.py)."""
    n = result["details"]["n"]["test"]
    counts = [result["metrics"][m] * n / 100 for m in ("top1_best_epoch", "top1_final", "top1_heldout")]
    assert counts == pytest.approx([round(c) for c in counts], abs=1e-9), (result["unit"], counts)
