"""Retrieval metrics: exact, tie-aware average precision over cosine similarities, in blocks.

Definition (identical to ``sklearn.metrics.average_precision_score(y_true, scores)``): for one query
with gallery scores ``s`` and P positives, sort the distinct score values in decreasing order; at each
distinct threshold t_k let TP_k / N_k be the positives / all items with score >= t_k; then

    AP = sum_k (R_k - R_{k-1}) * P_k,   R_k = TP_k / P,  P_k = TP_k / N_k.

Tied scores form one threshold, so AP does not depend on how ties are ordered. The same sum, taken
item by item, is ``AP = (1/P) * sum_{j positive} TP(>= s_j) / N(>= s_j)``, which is what is computed
here, for a block of queries at a time: one value-only sort per query of keys that pack the score
and the positive flag, then counts read off the sorted rows (see "the AP kernel" below). Nothing of
size N x N is ever built: peak memory is about block x N x 8 bytes on CPU (a few times that with
the torch kernel).

Numerics. Cosine similarities are computed in float64 from the (float32) features. Each *distinct*
feature vector is normalised and scored once and its column is reused for all its duplicates, so
bit-identical feature vectors always receive bit-identical scores (a tie), whatever BLAS does with
matrix edges. Scores of different vectors carry float64 rounding (~1e-16 * sqrt(D) relative); two
different vectors whose cosines are equal only in exact arithmetic may therefore rank as distinct.
-0.0 and +0.0 compare equal (as in sklearn). Non-finite features are an error.

Zero vectors: a feature vector's norm is clamped at 1e-8 (as ``torch.nn.functional.cosine_similarity``
does), so an all-zero vector scores 0 against everything, itself included.

Queries without positives (possible only with ``exclude_self=True`` and a class of one item): AP is
undefined; such queries get NaN and are left out of every mean below. sklearn would warn and return 0.

Backends: on accelerators everything is torch. On CPU the matrix product is numpy's (OpenBLAS
dgemm, ~2x torch's here) and the per-row work runs as numpy kernels on chunks of 8 rows, which stay
in cache, in a thread pool of ``torch.get_num_threads()`` workers (numpy's SIMD sort releases the
GIL and is 5-10x faster than torch.sort on CPU). The tensors are shared zero-copy; both kernels
compute the same integers and are tested against sklearn.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

#: memory target for one block of queries when ``block_size`` is not given (bytes)
DEFAULT_BLOCK_BYTES = 256 << 20
#: bytes per (query, gallery item) pair held at once: the float64 score block (+ its gather when
#: features repeat) for the in-place numpy kernel; the torch kernel's temporaries, sort values and
#: indices come on top
_BYTES_PER_PAIR = {"cpu": 16, "other": 64}
_NORM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------
# the AP kernel
# ---------------------------------------------------------------------------------------------
# A block of queries is ranked with ONE value-only sort per row of int64 keys that carry both the
# score and the positive flag: key = (order-preserving int64 image of the float64 score) * 2 + flag.
# The doubling is lossless because every score lies in (-2, 2), where bit 62 of a float64's bit
# pattern is 0 (exponent <= 0x3FF). Items absent from a row's gallery get the score -1.5, below
# every cosine, and flag 0, so they never count as ranked at or above a positive.
# After the sort, the a-th positive (ascending, 0-based) at position i has, when it ties with
# nothing below it, n_pos - a positives and N - i items at or above its score; inside a tie group
# both counts are taken at the group's first position instead (the threshold of sklearn's curve).
_ABSENT = -1.5
_CHUNK_ROWS = 8  # CPU: rows handled together, small enough for the working set to stay in cache
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


def _threads() -> ThreadPoolExecutor:
    global _pool, _pool_workers
    workers = max(1, torch.get_num_threads())
    if _pool is None or _pool_workers != workers:
        _pool, _pool_workers = ThreadPoolExecutor(workers), workers  # numpy releases the GIL in sorts
    return _pool


def _drop_numpy(s: np.ndarray, flags: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
    if drop is None:
        return flags
    rows = np.arange(s.shape[0])
    flags = np.array(np.broadcast_to(flags, s.shape))
    s[rows, drop] = _ABSENT
    flags[rows, drop] = 0
    return flags


def _pack_numpy(s: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """In place: float64 scores (|s| < 2) -> int64 keys 2 * (sign * magnitude bits) + flag."""
    k = s.view(np.int64)
    # ((k << 1) ^ t) - t with t = k >> 62 (0 or -2, bit 62 being 0) is 2 * magnitude * sign;
    # -0.0 and +0.0 both get 0 (they tie in sklearn)
    t = k >> 62
    np.left_shift(k, 1, out=k)
    np.bitwise_xor(k, t, out=k)
    np.subtract(k, t, out=k)
    np.bitwise_or(k, flags, out=k)
    return k


def _tied_rows(k: np.ndarray) -> np.ndarray:
    """Rows of sorted packed keys with a tie: neighbours equal up to the flag bit. Compared
    unsigned, because keys of opposite signs XOR to a negative number."""
    return ((k[:, 1:] ^ k[:, :-1]).view(np.uint64) < 2).any(axis=1)


def _ap_rows_numpy(s: np.ndarray, flags: np.ndarray, n_pos: int, drop: np.ndarray | None) -> np.ndarray:
    """CPU kernel. s: float64 [b,N] scores in (-2,2), consumed; flags: int64 0/1, [N] or [b,N]."""
    b, n = s.shape
    flags = _drop_numpy(s, flags, drop)
    k = _pack_numpy(s, flags)
    k.sort(axis=1)
    # the flag bit, as bool (little-endian: the low byte comes first; flatnonzero is fast on bool)
    low = (k.view(np.uint8)[:, ::8] & 1).view(bool)
    pos = np.flatnonzero(low).reshape(b, n_pos) - (np.arange(b) * n)[:, None]
    before = np.broadcast_to(np.arange(n_pos), (b, n_pos))
    start = pos
    rows = np.flatnonzero(_tied_rows(k))
    if rows.size:
        # A tie group starts at the first key >= the positive's key with the flag bit cleared.
        start, before = pos.copy(), before.copy()
        for r in rows:
            kr = k[r]
            start[r] = np.searchsorted(kr, kr[pos[r]] & ~np.int64(1), side="left")
            before[r] = np.searchsorted(pos[r], start[r], side="left")  # positives strictly before
    return ((n_pos - before) / (n - start)).sum(axis=1) / n_pos


def _ap_rows_torch(s: torch.Tensor, flags: torch.Tensor, n_pos: int, drop: torch.Tensor | None) -> torch.Tensor:
    """Accelerator kernel (same algorithm in torch). s float64 [b,N] consumed; flags int64 0/1."""
    b, n = s.shape
    dev = s.device
    if drop is not None:
        rows = torch.arange(b, device=dev)
        flags = flags.expand(b, n).clone()
        s[rows, drop] = _ABSENT
        flags[rows, drop] = 0
    k = s.view(torch.int64)
    t = k >> 62  # same key as the numpy kernel: 2 * magnitude bits * sign, then the flag
    k = torch.sort((((k << 1) ^ t) - t) | flags, dim=1).values
    low = k & 1
    pos = low.nonzero()[:, 1].view(b, n_pos)
    before = torch.arange(n_pos, device=dev).expand(b, n_pos)
    start = pos
    x = k[:, 1:] ^ k[:, :-1]  # a tie: keys equal up to the flag bit (0 <= x < 2)
    rows = ((x >= 0) & (x < 2)).any(dim=1).nonzero().flatten()
    if rows.numel():  # as in the numpy kernel: tie groups start at the key with the flag cleared
        kr, pr = k[rows], pos[rows]
        start, before = pos.clone(), before.clone()
        start[rows] = torch.searchsorted(kr, kr.gather(1, pr) & ~1, side="left")
        before[rows] = torch.searchsorted(pr.contiguous(), start[rows].contiguous(), side="left")
    return ((n_pos - before).double() / (n - start).double()).sum(dim=1) / n_pos


def _ap_block(s: torch.Tensor, flags: torch.Tensor, n_pos: int, drop: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor:
    """AP of each row of float64 scores ``s`` [b,N] (|s| < 2, consumed) with 0/1 ``flags``
    ([N] or [b,N]). ``drop`` [b] (optional): one column per row removed from that row's gallery.
    Every row must have exactly ``n_pos`` flagged items left. NaN rows when n_pos == 0."""
    b = s.shape[0]
    if n_pos == 0 or b == 0:
        return torch.full((b,), math.nan, dtype=torch.float64, device=s.device)
    flags = flags.to(torch.int64)
    if backend is None:
        backend = "numpy" if s.device.type == "cpu" else "torch"
    if backend == "torch":
        return _ap_rows_torch(s, flags, n_pos, drop)
    if backend != "numpy" or s.device.type != "cpu":
        raise ValueError(f"backend must be 'numpy' (CPU tensors) or 'torch', got {backend!r}")
    sa, fa = s.numpy(), flags.numpy()
    da = None if drop is None else drop.numpy()
    out = np.empty(b, dtype=np.float64)

    def work(r: int) -> None:
        rr = slice(r, r + _CHUNK_ROWS)
        out[rr] = _ap_rows_numpy(sa[rr], fa if fa.ndim == 1 else fa[rr], n_pos,
                                 None if da is None else da[rr])

    list(_threads().map(work, range(0, b, _CHUNK_ROWS)))
    return torch.from_numpy(out)


def ap_from_scores(scores, positive, gallery=None, *, backend: str | None = None) -> np.ndarray:
    """Tie-aware AP of each row of ``scores`` [B,N] against boolean ``positive`` [B,N].

    ``gallery`` [B,N] (optional, bool) marks the items that take part in each row's ranking.
    Equals ``sklearn.metrics.average_precision_score(positive[i][gallery[i]], scores[i][gallery[i]])``
    row by row (NaN where a row has no positive). Memory O(B*N): for large problems use
    ``retrieval_ap``, which blocks the queries.
    """
    s = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)
    s = s.to(torch.float64).clone()
    pos = torch.as_tensor(np.asarray(positive) if not isinstance(positive, torch.Tensor) else positive)
    pos = pos.to(device=s.device, dtype=torch.bool)
    if s.ndim != 2 or pos.shape != s.shape:
        raise ValueError(f"scores {tuple(s.shape)} and positive {tuple(pos.shape)} must be the same 2-D shape")
    if not torch.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    if gallery is not None:
        keep = torch.as_tensor(np.asarray(gallery) if not isinstance(gallery, torch.Tensor) else gallery)
        keep = keep.to(device=s.device, dtype=torch.bool)
        if keep.shape != s.shape:
            raise ValueError(f"gallery mask {tuple(keep.shape)} must have the shape of scores {tuple(s.shape)}")
    else:
        keep = torch.ones_like(pos)
    # Scale into (-1, 1) by a power of two (exact, so ranks and ties are unchanged), then mark
    # absent items. Rows are grouped by their number of positives: the kernel wants equal counts.
    top = float(s.abs().max()) if s.numel() else 0.0
    if top >= 1.0:
        e = math.frexp(top)[1]
        scaled = s * math.ldexp(1.0, -e)
        if not torch.equal(scaled * math.ldexp(1.0, e), s):  # a tiny value lost bits (subnormal)
            raise ValueError("scores span too many orders of magnitude to be ranked exactly")
        s = scaled
    s[~keep] = _ABSENT
    flags = pos & keep
    counts = flags.sum(dim=1)
    out = torch.full((s.shape[0],), math.nan, dtype=torch.float64)
    for c in torch.unique(counts).tolist():
        rows = (counts == c).nonzero().flatten()
        out[rows.cpu()] = _ap_block(s[rows], flags[rows], int(c), backend=backend).cpu()
    return out.numpy()


# ---------------------------------------------------------------------------------------------
# blocked retrieval over a feature matrix
# ---------------------------------------------------------------------------------------------
def _as_tensor(x, device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device) if device is not None else t


def _unit_unique(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``features`` normalised in float64, and each row's index among them."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D array [N,D], got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        bad = int((~torch.isfinite(features)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"features contain NaN or inf (first at row {bad})")
    uniq, inv = torch.unique(features, dim=0, return_inverse=True)
    u = uniq.to(torch.float64)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
    return u, inv


def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T in float64 (numpy/OpenBLAS on CPU, torch elsewhere)."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy().T))
    return a @ b.T


def auto_block_size(n: int, budget_bytes: int = DEFAULT_BLOCK_BYTES, device: str | torch.device = "cpu") -> int:
    """Queries per block so that the block x N working arrays stay near ``budget_bytes``."""
    per_pair = _BYTES_PER_PAIR["cpu" if torch.device(device).type == "cpu" else "other"]
    return int(max(1, min(4096, budget_bytes // max(1, per_pair * n))))


def retrieval_ap(features, labels, *, exclude_self: bool = False, block_size: int | None = None,
                 device: str | torch.device | None = None,
                 progress: Callable[..., Iterable] | None = None,
                 backend: str | None = None, part: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Per-query AP, every item a query against the whole set, by cosine similarity.

    features [N,D] (numpy or torch; float32 is fine, scores are float64), labels [N] integers:
    an item is a positive for a query when it has the query's label. With ``exclude_self`` the
    query is removed from its own gallery (its duplicates stay); without it (the paper's code) the
    query is in the gallery and ranks among the top as a positive.

    Returns float64 numpy [N] in 0..1, row i = AP of query i; NaN where the query has no positive.
    Memory: O(block_size x N) besides the features; ``block_size=None`` picks it from a 256 MB
    budget (16 bytes per pair on CPU, 64 on accelerators). ``device`` defaults to the features'
    device. ``progress(iterable, desc=, total=)`` wraps the loop over blocks (e.g. ``ctx.progress``).
    ``backend``: None picks numpy kernels on CPU and torch on accelerators; "torch" forces torch
    (used by the tests to cover that path). ``part=(rank, world)`` computes only every world-th block
    of queries (see ``retrieval_ap_part``); the other rows are NaN.
    """
    rows, values = retrieval_ap_part(features, labels, exclude_self=exclude_self, block_size=block_size,
                                     device=device, progress=progress, backend=backend, part=part)
    out = np.full(len(labels), math.nan)
    out[rows] = values
    return out


def retrieval_ap_part(features, labels, *, exclude_self: bool = False, block_size: int | None = None,
                      device: str | torch.device | None = None, progress: Callable[..., Iterable] | None = None,
                      backend: str | None = None, part: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, their AP) of this part's blocks. The blocks of queries are formed from the whole
    set exactly as in a single process and dealt round-robin to ``world`` parts, so the union of all
    parts equals ``retrieval_ap`` bit for bit (each block is computed by the same operations)."""
    rank, world = part
    feats = _as_tensor(features, device)
    dev = feats.device
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    y = y.to(device=dev, dtype=torch.int64)
    if y.ndim != 1 or y.shape[0] != feats.shape[0]:
        raise ValueError(f"labels must be 1-D with one entry per feature row: got {tuple(y.shape)} "
                         f"for features {tuple(feats.shape)}")
    n = feats.shape[0]
    if block_size is None:
        block_size = auto_block_size(n, device=dev)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    unit, inv = _unit_unique(feats)
    # Without duplicates, the score columns can stay in the unique order (a row's sort does not
    # care about column order) and the gather back to item order is skipped.
    distinct = unit.shape[0] == n
    if distinct:
        perm = torch.empty_like(inv)
        perm[inv] = torch.arange(n, device=dev)  # unique index -> item index
        col_label = y[perm]
    else:
        col_label = y

    # Queries are grouped by class so that every row of a block has the same number of positives.
    jobs = []
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().flatten()
        for start in range(0, members.numel(), block_size):
            jobs.append((c, members[start:start + block_size]))
    jobs = jobs[rank::world]
    it = progress(jobs, desc="retrieval AP", total=len(jobs)) if progress else jobs
    rows, values = [], []
    for c, q in it:
        s = _matmul_t(unit[inv[q]], unit)  # [B, U] float64, |s| <= 1 + rounding
        if not distinct:
            s = s[:, inv]  # duplicates share one computed column: exact ties
        flags = col_label == c
        n_pos = int(flags.sum())
        drop = None
        if exclude_self:  # the query's own column leaves its gallery (its duplicates stay)
            drop = inv[q] if distinct else q
            n_pos -= 1
        rows.append(q.cpu().numpy())
        values.append(_ap_block(s, flags, n_pos, drop=drop, backend=backend).cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(values).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------
def mean_ap(ap) -> float:
    """AP: the mean over queries (NaN queries, i.e. without positives, left out)."""
    a = np.asarray(ap, dtype=np.float64)
    valid = ~np.isnan(a)
    return float(a[valid].mean()) if valid.any() else math.nan


def per_class_ap(ap, labels, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: (mean AP over the class's queries, number of items, number of queries with an AP).

    Classes are 0..num_classes-1 (default max label + 1); a class with no valid query gets NaN.
    """
    a = np.asarray(ap, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if a.shape != y.shape:
        raise ValueError(f"ap {a.shape} and labels {y.shape} differ in shape")
    c = int(num_classes if num_classes is not None else (y.max() + 1 if y.size else 0))
    valid = ~np.isnan(a)
    counts = np.bincount(y, minlength=c)[:c]
    n_valid = np.bincount(y[valid], minlength=c)[:c]
    sums = np.bincount(y[valid], weights=a[valid], minlength=c)[:c]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n_valid > 0, sums / np.maximum(n_valid, 1), math.nan)
    return means, counts, n_valid


def class_mean_ap(ap, labels) -> float:
    """mAP: the mean over classes of the per-class mean AP (classes without a valid query left out)."""
    means, counts, _ = per_class_ap(ap, labels)
    means = means[counts > 0]
    means = means[~np.isnan(means)]
    return float(means.mean()) if means.size else math.nan


# ---------------------------------------------------------------------------------------------
# nearest neighbours for galleries
# ---------------------------------------------------------------------------------------------
def cosine_topk(features, queries: Sequence[int], k: int, *, exclude_self: bool = True,
                device: str | torch.device | None = None, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery items by cosine similarity (float64) for the given query rows.

    Returns (indices [Q,k'], similarities [Q,k']) with k' = min(k, available items), by decreasing
    similarity; equal similarities go to the lower index. ``exclude_self`` drops each query itself
    (its duplicates stay). The gallery is scanned in chunks of ``chunk`` rows: memory O(Q x chunk),
    so it works on memory-mapped or very large feature arrays.
    """
    q = np.asarray(list(queries), dtype=np.int64)
    n = int(features.shape[0])
    if q.size and (q.min() < 0 or q.max() >= n):
        raise ValueError(f"query index out of range 0..{n - 1}")
    dev = torch.device(device) if device is not None else (
        features.device if isinstance(features, torch.Tensor) else torch.device("cpu"))

    def unit_rows(lo: int, hi: int) -> torch.Tensor:
        x = features[lo:hi]
        x = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(dev, torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError(f"features contain NaN or inf (rows {lo}..{hi - 1})")
        return x / x.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)

    qv = torch.cat([unit_rows(int(i), int(i) + 1) for i in q]) if q.size else torch.zeros((0, 1), device=dev)
    kk = max(0, min(k, n - (1 if exclude_self else 0)))
    best_s = torch.empty((q.size, 0), dtype=torch.float64, device=dev)
    best_i = torch.empty((q.size, 0), dtype=torch.int64, device=dev)
    qt = torch.from_numpy(q).to(dev)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        s = qv @ unit_rows(lo, hi).T  # [Q, chunk]
        idx = torch.arange(lo, hi, device=dev).expand(q.size, -1)
        if exclude_self:
            s = s.masked_fill(idx == qt[:, None], -math.inf)
        # earlier chunks hold lower indices: a stable sort of [best so far, this chunk] keeps ties by index
        cs = torch.cat([best_s, s], dim=1)
        ci = torch.cat([best_i, idx], dim=1)
        order = torch.sort(cs, dim=1, descending=True, stable=True).indices[:, :kk]
        best_s, best_i = cs.gather(1, order), ci.gather(1, order)
    return best_i.cpu().numpy(), best_s.cpu().numpy()
