"""The figure of a correspondence unit: a few pairs, source image with its keypoints beside the target image
with the predicted points, green where correct and red where wrong (a thin line to the true point)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def figure_pairs(n_pairs: int, count: int) -> list[int]:
    """``count`` pair indices spread evenly over the pairs (deterministic)."""
    count = min(count, n_pairs)
    return sorted({int(round(k * (n_pairs - 1) / max(1, count - 1))) for k in range(count)}) if count else []


def draw_pairs(samples, preds, correct, count: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = figure_pairs(len(samples.pairs), count)
    fig, axes = plt.subplots(len(chosen), 2, figsize=(7, 3.2 * len(chosen)), dpi=100, squeeze=False)
    for row, k in zip(axes, chosen):
        pair = samples.pairs[k]
        ok = np.asarray(correct[k], bool)
        colours = plt.cm.tab20(np.arange(len(pair.source_kps)) % 20)
        row[0].imshow(samples.image(pair.source))
        row[0].scatter(pair.source_kps[:, 0], pair.source_kps[:, 1], s=28, c=colours, edgecolors="white",
                       linewidths=0.8)
        row[0].set_title(f"source: {samples.keys[pair.source]}", fontsize=7)
        row[1].imshow(samples.image(pair.target))
        for (px, py), (tx, ty), good in zip(preds[k], pair.target_kps, ok):
            row[1].plot([px, tx], [py, ty], color="#2ca02c" if good else "#d62728", linewidth=0.8)
        row[1].scatter(preds[k][:, 0], preds[k][:, 1], s=28, c=np.where(ok, "#2ca02c", "#d62728"),
                       edgecolors="white", linewidths=0.8)
        row[1].set_title(f"target: {samples.keys[pair.target]} ({int(ok.sum())}/{len(ok)} correct)", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{title} (green: correct, red: wrong; lines to the true points)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return path
