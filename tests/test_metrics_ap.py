"""retrieval_metrics (the retrieval and gallery tasks' AP): tie-aware AP equal to sklearn, blocked retrieval, aggregation, top-k."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

import partbench_plugins.tasks.retrieval_metrics as M
from partbench_plugins.tasks.retrieval_metrics import (ap_from_scores, class_mean_ap, cosine_topk, mean_ap, per_class_ap,
                             retrieval_ap)

BACKENDS = [None, "torch"]  # None = numpy kernels on CPU; "torch" = the accelerator kernel, run on CPU
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sk(y_true, scores) -> float:
    """sklearn's AP, NaN (not sklearn's warning + 0) when there is no positive."""
    y_true = np.asarray(y_true, dtype=int)
    if y_true.sum() == 0:
        return math.nan
    return average_precision_score(y_true, scores)


def _same(a, b, tol=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    ok = ~np.isnan(a)
    assert np.abs(a[ok] - b[ok]).max(initial=0.0) <= tol, (a, b)


# -- the kernel on raw scores ---------------------------------------------------------------------
@st.composite
def tied_scores(draw):
    """Small score matrices with very few distinct values (heavy ties), any scale, random masks."""
    b = draw(st.integers(1, 6))
    n = draw(st.integers(1, 25))
    levels = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1.0, 1e-3, 0.37, 1e3, 1e200, -2.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.integers(-levels, levels + 1, (b, n)).astype(np.float64) * scale
    if draw(st.booleans()):
        scores[rng.random((b, n)) < 0.2] = -0.0  # signed zeros must tie with +0.0
    positive = rng.random((b, n)) < draw(st.sampled_from([0.1, 0.5, 0.9]))
    gallery = rng.random((b, n)) < 0.85 if draw(st.booleans()) else None
    return scores, positive, gallery


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=tied_scores())
def test_ap_from_scores_equals_sklearn_with_heavy_ties(backend, case):
    scores, positive, gallery = case
    ap = ap_from_scores(scores, positive, gallery, backend=backend)
    keep = np.ones_like(positive) if gallery is None else gallery
    ref = [_sk(positive[i][keep[i]], scores[i][keep[i]]) for i in range(len(scores))]
    _same(ap, ref)


def test_ap_from_scores_known_values():
    # ranks: 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): thresholds 0.9 -> P=1, R=.5; 0.8 -> P=2/3, R=1
    ap = ap_from_scores([[0.9, 0.8, 0.8, 0.1]], [[True, False, True, False]])
    assert ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-15)
    # all tied: precision = prevalence
    assert ap_from_scores([[0.5] * 4], [[True, False, False, False]])[0] == pytest.approx(0.25)
    assert np.isnan(ap_from_scores([[0.3, 0.2]], [[False, False]])[0])


def test_ap_from_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or inf"):
        ap_from_scores([[0.1, np.nan]], [[True, False]])
    with pytest.raises(ValueError, match="same 2-D shape"):
        ap_from_scores([[0.1, 0.2]], [[True]])


# -- blocked retrieval on features ------------------------------------------------------------------
@st.composite
def feature_sets(draw):
    """Few distinct feature vectors (so many rows are exact duplicates: score ties), optional zero
    vectors, random labels that may leave a class with a single member."""
    n = draw(st.integers(2, 30))
    d = draw(st.integers(1, 6))
    n_protos = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((n_protos, d)).astype(np.float32)
    if draw(st.booleans()):
        protos[0] = 0.0  # a zero vector: cosine 0 against everything, itself included
    which = rng.integers(0, n_protos, n)
    labels = rng.integers(0, draw(st.integers(1, 4)), n)
    block = draw(st.integers(1, 8))
    return protos, which, labels, block


def _reference(protos, which, labels, exclude_self):
    """sklearn per query on scores computed once per prototype pair (so duplicates tie exactly)."""
    p = protos.astype(np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-8)
    s = (p @ p.T)[which][:, which]
    n = len(labels)
    out = []
    for i in range(n):
        keep = np.ones(n, dtype=bool)
        if exclude_self:
            keep[i] = False
        out.append(_sk(labels[keep] == labels[i], s[i][keep]))
    return np.array(out)


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=feature_sets())
def test_retrieval_ap_equals_sklearn_on_tied_features(exclude_self, backend, case):
    protos, which, labels, block = case
    ap = retrieval_ap(protos[which], labels, exclude_self=exclude_self, block_size=block, backend=backend)
    _same(ap, _reference(protos, which, labels, exclude_self))


@pytest.mark.parametrize("exclude_self", [False, True])
def test_retrieval_ap_equals_sklearn_on_distinct_features(exclude_self):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    y = rng.integers(0, 5, 120)
    ap = retrieval_ap(x, y, exclude_self=exclude_self, block_size=7)
    x64 = x.astype(np.float64)
    u = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    ref = []
    for i in range(len(y)):
        keep = np.ones(len(y), dtype=bool)
        keep[i] = not exclude_self
        ref.append(_sk(y[keep] == y[i], (u @ u[i])[keep]))
    _same(ap, ref, tol=1e-14)


def test_query_kept_in_its_gallery_ranks_first_as_positive():
    # two classes, perfectly separated: with self kept every AP is 1; a singleton's AP is 1 (itself)
    x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, -1]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2])
    assert np.allclose(retrieval_ap(x, y), 1.0)
    ex = retrieval_ap(x, y, exclude_self=True)
    assert np.allclose(ex[:4], 1.0) and np.isnan(ex[4])  # the singleton has no positive left


def test_queries_without_positives_are_nan_and_left_out_of_means():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1, 2])  # class 2 has one member
    ap = retrieval_ap(x, y, exclude_self=True)
    assert np.isnan(ap[6]) and not np.isnan(ap[:6]).any()
    assert mean_ap(ap) == pytest.approx(ap[:6].mean())
    means, counts, n_valid = per_class_ap(ap, y)
    assert counts.tolist() == [3, 3, 1] and n_valid.tolist() == [3, 3, 0] and np.isnan(means[2])
    assert class_mean_ap(ap, y) == pytest.approx((ap[:3].mean() + ap[3:6].mean()) / 2)
    with warnings.catch_warnings():  # what sklearn itself would do with that query: warn, return 0
        warnings.simplefilter("ignore")
        assert average_precision_score(np.zeros(6, dtype=int), rng.random(6)) == 0.0


def test_aggregation_ap_vs_map():
    ap = np.array([1.0, 0.5, 0.0, 0.2, 0.4, 0.6])
    y = np.array([0, 0, 0, 0, 1, 1])  # class 0 has 4 queries, class 1 has 2
    assert mean_ap(ap) == pytest.approx(2.7 / 6)  # AP: every query counts once
    means, counts, n_valid = per_class_ap(ap, y, num_classes=3)
    assert means[:2] == pytest.approx([0.425, 0.5]) and np.isnan(means[2])
    assert counts.tolist() == [4, 2, 0] and n_valid.tolist() == [4, 2, 0]
    assert class_mean_ap(ap, y) == pytest.approx((0.425 + 0.5) / 2)  # mAP: every class counts once
    assert math.isnan(mean_ap([np.nan])) and math.isnan(class_mean_ap([np.nan], [0]))


@pytest.mark.parametrize("dups", [False, True])
def test_block_size_invariance_and_backends_agree(dups):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((97, 12)).astype(np.float32)
    if dups:
        x[50:70] = x[10:30]
    y = rng.integers(0, 4, 97)
    for excl in (False, True):
        ref = retrieval_ap(x, y, exclude_self=excl, block_size=97)
        for b in (1, 5, 32, 1000):
            np.testing.assert_allclose(retrieval_ap(x, y, exclude_self=excl, block_size=b), ref, rtol=0, atol=1e-15)
        np.testing.assert_allclose(retrieval_ap(x, y, exclude_self=excl, block_size=13, backend="torch"), ref,
                                   rtol=0, atol=1e-15)


def test_never_builds_n_by_n(monkeypatch):
    """Every similarity block has at most block_size query rows: memory ~ block x N."""
    shapes = []
    real = M._matmul_t

    def spy(a, b):
        out = real(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(M, "_matmul_t", spy)
    rng = np.random.default_rng(0)
    retrieval_ap(rng.standard_normal((300, 8)).astype(np.float32), rng.integers(0, 3, 300), block_size=16)
    assert shapes and max(s[0] for s in shapes) <= 16 and all(s[1] == 300 for s in shapes)
    assert sum(s[0] for s in shapes) == 300
    assert M.auto_block_size(20000) * 20000 * 16 <= M.DEFAULT_BLOCK_BYTES
    assert M.auto_block_size(10**7) == 1 and M.auto_block_size(10) == 4096


def test_retrieval_ap_input_errors():
    with pytest.raises(ValueError, match="NaN or inf .*row 1"):
        retrieval_ap(np.array([[1.0, 0], [np.nan, 1]], dtype=np.float32), [0, 1])
    with pytest.raises(ValueError, match="one entry per feature row"):
        retrieval_ap(np.ones((3, 2), dtype=np.float32), [0, 1])
    with pytest.raises(ValueError, match="block_size"):
        retrieval_ap(np.ones((3, 2), dtype=np.float32), [0, 1, 1], block_size=0)


def test_progress_callback_sees_every_block():
    seen = []

    def progress(it, desc, total):
        seen.append(total)
        return it

    rng = np.random.default_rng(0)
    retrieval_ap(rng.standard_normal((20, 3)).astype(np.float32), [0] * 10 + [1] * 10, block_size=4,
                 progress=progress)
    assert seen == [6]  # ceil(10/4) blocks per class, two classes


# -- top-k ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [3, 1000])
def test_cosine_topk_matches_brute_force(chunk):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    x[7] = x[3]  # a duplicate of query 3 stays in its gallery
    x[9] = x[8]  # an exact tie: the lower index comes first
    idx, sims = cosine_topk(x, [3, 0, 8], 6, chunk=chunk)
    u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    s = u[[3, 0, 8]] @ u.T
    s[[0, 1, 2], [3, 0, 8]] = -np.inf
    ref = np.argsort(-s, axis=1, kind="stable")[:, :6]
    assert idx.tolist() == ref.tolist()
    assert idx[0, 0] == 7 and sims[0, 0] == pytest.approx(1.0)
    assert (np.diff(sims, axis=1) <= 0).all()
    idx2, _ = cosine_topk(x, [3], 100)
    assert idx2.shape == (1, 39) and 3 not in idx2[0]


def test_tie_detection_only_flags_real_ties():
    """Rows without ties must take the fast path (keys of both signs, flags set or not)."""
    s = np.array([[-0.7, -0.2, -0.0, 0.0, 0.3, 0.9],    # +-0 tie
                  [-0.7, -0.2, -1e-300, 1e-300, 0.3, 0.9],  # no tie
                  [-0.5, -0.5, 0.1, 0.2, 0.3, 0.4]])     # tie
    flags = np.array([1, 0, 1, 0, 1, 1], dtype=np.int64)
    k = M._pack_numpy(s.copy(), flags)
    assert (k[0, 2] >> 1) == (k[0, 3] >> 1) == 0  # -0.0 and +0.0: one key
    assert (np.diff(k[1] >> 1) > 0).all()  # order of the scores preserved
    k.sort(axis=1)
    assert M._tied_rows(k).tolist() == [True, False, True]
