"""The correspondence matcher (blocked, normalised matrix products, pairs that share a target matched together,
top-1 per source keypoint) against a plain ``torch.cdist`` + ``argmin`` per pair, on the same features.

Workload shaped like SPair-71k's test split at the task's defaults for a ViT-B/16: 20 images of 500 x 375
pixels at input 448 (28 x 28 token maps of width 768, upsampled x4 before matching: 112 x 84 candidate cells
per image), 200 pairs (each image the target of about ten), 10 keypoints each. Both sides get the same
L2-normalised candidate features (built once per image, outside the timing) and the same source vectors; on
unit vectors the Euclidean argmin is the cosine argmax, so the predictions must be identical.

    python bench/correspondence.py [--images 20] [--pairs 200] [--repeat 2]

Last line: ``correspondence: N.N x faster than cdist, identical predictions``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.api import KeypointPair
from partbench_plugins.tasks.correspondence import Candidates, match_pairs, resized_size


def workload(images: int, pairs: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    w, h, size, patch = 500, 375, 448, 16
    rw, rh = resized_size(w, h, size)
    maps = torch.randn(images, dim, size // patch, size // patch, generator=g)
    cands = [Candidates(maps[i], (rw, rh, w, h), patch, 4) for i in range(images)]
    out = []
    for k in range(pairs):
        s, t = rng.choice(images, 2, replace=False)
        kps = np.stack([rng.uniform(0, w, 10), rng.uniform(0, h, 10)], 1)
        out.append(KeypointPair(int(s), int(t), kps, kps, (0.0, 0.0, float(w), float(h)), 0, name=str(k)))
    return cands, out


def cdist_baseline(pairs, cands) -> list[np.ndarray]:
    preds = []
    for p in pairs:
        src, tgt = cands[p.source], cands[p.target]
        q = src.features[torch.from_numpy(src.cells(p.source_kps))]
        idx = torch.cdist(q, tgt.features).argmin(1)
        preds.append(tgt.centres(idx.numpy()))
    return preds


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    cands, pairs = workload(a.images, a.pairs, a.dim)
    cells = cands[0].features.shape[0]
    print(f"{a.images} images, {cells} candidate cells of width {a.dim} each, {a.pairs} pairs x 10 keypoints "
          f"({torch.get_num_threads()} threads)")
    t_ours, ours = best_of(lambda: match_pairs(pairs, lambda i: cands[i]), a.repeat)
    t_cdist, base = best_of(lambda: cdist_baseline(pairs, cands), a.repeat)
    same = all(np.array_equal(x, y) for x, y in zip(ours, base))
    differ = sum(int((x != y).any(1).sum()) for x, y in zip(ours, base))
    print(f"blocked matcher: {t_ours:.3f} s   cdist + argmin: {t_cdist:.3f} s   (best of {a.repeat})")
    print(f"predictions: {'identical' if same else f'{differ} of {10 * a.pairs} keypoints differ'}")
    print(f"correspondence: {t_cdist / t_ours:.1f} x faster than cdist, "
          f"{'identical predictions' if same else 'DIFFERENT predictions'}")


if __name__ == "__main__":
    main()
