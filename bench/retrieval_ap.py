"""Benchmark: blocked tie-aware retrieval AP (partbench_plugins.tasks.retrieval_metrics) against a per-query sklearn loop.

Both sides are measured in this run on the same random features. The sklearn loop is timed on a
random subset of queries and extrapolated linearly to all N queries (every query costs the same:
one similarity row of length N and one sort inside sklearn); the output says so. For that subset
the per-query APs of both sides are compared (max_abs_diff).

The baseline loop computes, per query, what ours computes for all queries from the same features:
the query's cosine-similarity row (float64 matrix-vector product with features normalised once,
outside the timed loop) and ``sklearn.metrics.average_precision_score``. ``speedup`` on the last
line is features -> per-query APs on both sides. The two parts of the baseline are also printed
separately, with the speedup against sklearn's part alone (the baseline's similarity rows for
free: a lower bound that also holds against a baseline computing its rows by blocked GEMM, whose
cost would be the same as ours).

Peak memory of our side is reported as the growth of the process's peak RSS during the call,
next to block x N x 8 bytes and to what an N x N float64 matrix would take.

Last line: ``speedup=<float> max_abs_diff=<float>``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

import numpy as np
import torch


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000, help="number of items (every item is a query)")
    p.add_argument("--dim", type=int, default=768, help="feature dimension")
    p.add_argument("--classes", type=int, default=4, help="number of classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--signal", type=float, default=0.1,
                   help="class-mean strength added to the N(0,1) features (0 = pure noise)")
    p.add_argument("--dup-frac", type=float, default=0.0,
                   help="fraction of items replaced by exact copies of other items (creates score ties)")
    p.add_argument("--block-size", type=int, default=None, help="queries per block (default: automatic)")
    p.add_argument("--exclude-self", action="store_true", help="drop each query from its own gallery")
    p.add_argument("--sklearn-queries", type=int, default=300,
                   help="queries timed in the sklearn loop (extrapolated to N)")
    args = p.parse_args(argv)

    from sklearn.metrics import average_precision_score

    from partbench_plugins.tasks.retrieval_metrics import auto_block_size, mean_ap, retrieval_ap

    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.dim
    labels = rng.integers(0, args.classes, n)
    centers = rng.standard_normal((args.classes, d)).astype(np.float32)
    feats = rng.standard_normal((n, d), dtype=np.float32) + args.signal * centers[labels]
    if args.dup_frac > 0:
        k = int(round(args.dup_frac * n))
        dst = rng.choice(n, k, replace=False)
        src = rng.integers(0, n, k)
        feats[dst] = feats[src]
        labels[dst] = labels[src]
    block = args.block_size or auto_block_size(n)
    print(f"features: N={n} D={d} classes={args.classes} seed={args.seed} signal={args.signal} "
          f"dup_frac={args.dup_frac} exclude_self={args.exclude_self}")
    print(f"torch threads={torch.get_num_threads()} block_size={block}")

    # -- ours ---------------------------------------------------------------------------------
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    ap = retrieval_ap(feats, labels, exclude_self=args.exclude_self, block_size=block)
    t_ours = time.perf_counter() - t0
    rss_growth = _rss_mib() - rss0
    print(f"ours: {t_ours:.2f} s for all {n} queries ({t_ours / n * 1e3:.3f} ms/query), AP={mean_ap(ap) * 100:.3f}")
    print(f"ours: peak RSS growth {rss_growth:.0f} MiB (includes the N x D float64 unit features, "
          f"{n * d * 8 / 2**20:.0f} MiB); block x N x 8 B = {block * n * 8 / 2**20:.0f} MiB; "
          f"an N x N float64 matrix would be {n * n * 8 / 2**20:.0f} MiB")

    # -- sklearn loop on a subset ---------------------------------------------------------------
    q_count = min(args.sklearn_queries, n)
    queries = rng.choice(n, q_count, replace=False)
    x64 = feats.astype(np.float64)
    unit = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-8)
    t_sim = t_skl = 0.0
    diffs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on queries without positives
        for i in queries:
            t0 = time.perf_counter()
            scores = unit @ unit[i]
            t1 = time.perf_counter()
            keep = np.ones(n, dtype=bool)
            if args.exclude_self:
                keep[i] = False
            y_true = labels[keep] == labels[i]
            ref = average_precision_score(y_true, scores[keep]) if y_true.any() else np.nan
            t2 = time.perf_counter()
            t_sim += t1 - t0
            t_skl += t2 - t1
            if np.isnan(ref) != np.isnan(ap[i]):
                diffs.append(np.inf)
            elif not np.isnan(ref):
                diffs.append(abs(ref - ap[i]))
    scale = n / q_count
    skl_total, sim_total = t_skl * scale, t_sim * scale
    print(f"sklearn loop: timed on {q_count} random queries, extrapolated x{scale:.1f} to all {n}:")
    print(f"  similarity rows {t_sim / q_count * 1e3:.3f} ms/query -> {sim_total:.1f} s; "
          f"average_precision_score {t_skl / q_count * 1e3:.3f} ms/query -> {skl_total:.1f} s")
    speedup = (sim_total + skl_total) / t_ours
    print(f"  speedup vs the loop (similarity row + sklearn): {speedup:.1f}x; "
          f"vs sklearn's part alone (lower bound): {skl_total / t_ours:.1f}x")
    max_abs_diff = max(diffs) if diffs else 0.0
    print(f"max_abs_diff over the {q_count} sklearn queries (AP in 0..1): {max_abs_diff:.3g}")
    print(f"speedup={speedup:.2f} max_abs_diff={max_abs_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
