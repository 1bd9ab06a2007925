"""retrieval: every item queries the whole set by cosine similarity; AP and mAP (paper Tables 2 and 4).

Protocol of the official ``pr_patch_retrieval.py`` (``calc_acc``): frozen features of every item,
cosine similarity of each item against all items, the query's own item kept in its gallery (it ranks
first and counts as a positive), per-query ``sklearn.metrics.average_precision_score`` with
positives = same label. ``AP`` is the mean over queries (the paper's "average all the obtained AP
scores"), ``mAP`` the mean over classes of the per-class mean AP. Both are reported in percent.

``representation: best`` computes CLS and mean-patch and reports the one with the higher AP, as the
paper did by hand; both values and the winner are kept in the result. The exact AP (tie-aware,
equal to sklearn's) is computed by ``retrieval_metrics.retrieval_ap`` in blocks of queries; see
docs/retrieval.md.
"""
from __future__ import annotations

import math

import numpy as np

from harness.api import HarnessError, Option, Task, clusters_of, hookimpl
from harness.api import FeatureRequest

from .resampling import class_sums, elementwise, nanmean_rows
from .retrieval_metrics import auto_block_size, class_mean_ap, mean_ap, per_class_ap, retrieval_ap_part

VECTOR_REPS = ("cls", "mean_patch", "projected", "pooled")
BEST_OF = ("cls", "mean_patch")


def _check_extra(value) -> str | None:
    bad = [v for v in value if v not in VECTOR_REPS]
    if bad:
        return f"unknown representation(s) {bad}; expected a list of {', '.join(VECTOR_REPS)}"
    return None


def _pct(x: float) -> float:
    return round(100.0 * x, 6) if not math.isnan(x) else math.nan


class Retrieval(Task):
    """Part/object retrieval: cosine similarity, per-query AP (sklearn-exact), AP and mAP in percent."""

    headline = ("AP", "mAP")
    distributed = True  # under torchrun the blocks of queries are dealt over the ranks
    options = {
        "representation": Option(str, "best", "vector reported as AP/mAP: cls, mean_patch, projected, pooled, or "
                                 "best (the better of cls and mean_patch by AP, as in the paper)",
                                 choices=["best", *VECTOR_REPS]),
        "extra": Option(list, [], "further representations reported beside it as AP.<rep>/mAP.<rep>, "
                        "e.g. [projected] for the 'Projected' columns", check=_check_extra),
        "split": Option(str, "all", "dataset split whose items are both queries and gallery"),
        "exclude_self": Option(bool, False, "drop each query from its own gallery (the official code keeps "
                               "it: false reproduces the paper)"),
        "block_size": Option(int, None, "queries per block (memory ~ 8-16 x block x N bytes on CPU); "
                             "default: automatic from a 256 MB budget", nullable=True,
                             check=lambda v: None if v is None or v > 0 else "must be > 0"),
        "transform": Option(str, "resize:224", "image transform before the encoder (official: Resize 224, bicubic)"),
    }

    def __init__(self, name: str, **opts):
        super().__init__(name, **opts)
        # tables show AP per representation next to the reported one ("per encoder and representation")
        main = self.opts["representation"]
        per_rep = list(BEST_OF) if main == "best" else []
        per_rep += [r for r in self.opts.get("extra") or [] if r not in per_rep]
        self.headline = ("AP", "mAP", *[f"AP.{r}" for r in per_rep])

    # -- which representations -------------------------------------------------------------------
    def _wanted(self, encoder) -> tuple[list[str], list[str]]:
        """(representations to compute, candidates for 'best')."""
        main = self.opts["representation"]
        candidates = [r for r in BEST_OF if encoder.supports(r)] if main == "best" else [main]
        reps = list(candidates)
        for r in self.opts.get("extra") or []:
            if r not in reps:
                reps.append(r)
        return reps, candidates

    def check(self, encoder, dataset) -> None:
        main = self.opts["representation"]
        if main == "best":
            if not any(encoder.supports(r) for r in BEST_OF):
                raise ValueError(f"representation 'best' needs cls or mean_patch; encoder '{encoder.name}' has "
                                 f"{', '.join(encoder.representations)}")
        for r in [main] * (main != "best") + list(self.opts.get("extra") or []):
            if not encoder.supports(r):
                raise ValueError(f"encoder '{encoder.name}' has no '{r}' representation (has: "
                                 f"{', '.join(encoder.representations)}); remove it from the retrieval task's "
                                 f"{'representation' if r == main else 'extra'} option or pick another encoder")
        split = self.opts["split"]
        if split not in dataset.splits:
            raise ValueError(f"dataset '{dataset.name}' has no split '{split}' (has: {', '.join(dataset.splits)})")

    def requests(self, encoder, dataset) -> list[FeatureRequest]:
        reps, _ = self._wanted(encoder)
        return [FeatureRequest(self.opts["split"], tuple(reps), self.opts["transform"])]

    # -- run -----------------------------------------------------------------------------------
    def run(self, ctx) -> dict:
        split, excl = self.opts["split"], bool(self.opts["exclude_self"])
        samples = ctx.samples(split)
        labels = np.asarray(samples.labels, dtype=np.int64)
        n = len(labels)
        if n < 2:
            raise HarnessError(f"retrieval: dataset '{ctx.dataset.name}' split '{split}' has {n} item(s); "
                               "retrieval needs at least 2")
        reps, candidates = self._wanted(ctx.encoder)
        feats = ctx.features(split, reps, self.opts["transform"])
        block = self.opts.get("block_size") or auto_block_size(n, device=ctx.device)
        classes = list(samples.classes)

        per_rep: dict[str, dict] = {}
        ap_arrays: dict[str, np.ndarray] = {}
        for rep in reps:
            x = np.asarray(feats[rep])
            if x.ndim != 2 or x.shape[0] != n:
                raise HarnessError(f"retrieval: features '{rep}' of encoder '{ctx.encoder.name}' have shape "
                                   f"{x.shape}; expected [{n}, D]")
            try:
                rows, vals = retrieval_ap_part(
                    x, labels, exclude_self=excl, block_size=block, device=ctx.device, part=(ctx.rank, ctx.world_size),
                    progress=lambda it, desc, total: ctx.progress(it, desc=f"AP {rep}", total=total))
            except ValueError as exc:  # e.g. NaN features from a broken checkpoint
                raise HarnessError(f"retrieval: encoder '{ctx.encoder.name}' representation '{rep}': {exc}") from None
            ap = np.full(n, np.nan)
            for r, v in ctx.gather((rows, vals)):  # every rank's blocks (one part outside torchrun)
                ap[r] = v
            ap_arrays[rep] = ap
            means, counts, n_valid = per_class_ap(ap, labels, len(classes))
            per_rep[rep] = {
                "AP": _pct(mean_ap(ap)),
                "mAP": _pct(class_mean_ap(ap, labels)),
                "dim": int(x.shape[1]),
                "per_class": {classes[c]: {"AP": _pct(float(means[c])), "count": int(counts[c]),
                                           "queries_with_positives": int(n_valid[c])}
                              for c in range(len(classes))},
            }

        main = self.opts["representation"]
        chosen = max(candidates, key=lambda r: (per_rep[r]["AP"], -candidates.index(r))) if main == "best" else main
        metrics = {"AP": per_rep[chosen]["AP"], "mAP": per_rep[chosen]["mAP"]}
        for rep in reps:
            metrics[f"AP.{rep}"] = per_rep[rep]["AP"]
            metrics[f"mAP.{rep}"] = per_rep[rep]["mAP"]

        no_pos = int(np.isnan(ap_arrays[chosen]).sum())
        if not ctx.is_main:  # only rank 0's result is kept
            return {"metrics": metrics}
        npz = ctx.out_dir / "per_query_ap.npz"
        np.savez_compressed(npz, keys=np.asarray(samples.keys, dtype=str), labels=labels,
                            **{f"AP.{r}": a for r, a in ap_arrays.items()})
        details = {
            "representation": {"requested": main, "reported": chosen,
                               "candidates": {r: per_rep[r]["AP"] for r in candidates} if main == "best" else None},
            "per_representation": per_rep,
            "split": split,
            "exclude_self": excl,
            "transform": self.opts["transform"],
            "n_items": n,
            "n_classes": len(classes),
            "classes": classes,
            "queries_without_positives": no_pos,
            "block_size": int(block),
            "units": "percent",
            "similarity": "cosine, float64 (exact ties for identical features)",
            "ap_definition": "sklearn.metrics.average_precision_score per query (tie-aware, no interpolation); "
                             "AP = mean over queries, mAP = mean over classes of the class mean; queries "
                             "without any positive are left out of both",
            "dataset_summary": dict(samples.summary),
        }
        per_item = {"items": np.asarray(samples.keys, dtype=str), "labels": labels, "AP": ap_arrays[chosen],
                    **{f"AP.{r}": a for r, a in ap_arrays.items()}, **clusters_of(samples)}
        return {"metrics": metrics, "details": details, "artifacts": [str(npz)], "per_item": per_item}

    def resample(self, per_item, counts):
        """AP: the mean AP of the resampled queries; mAP: the mean over classes of the mean AP of the class's
        resampled queries (classes drawn without a query with positives left out), for the reported
        representation (AP, mAP) and each computed one (AP.<rep>, mAP.<rep>)."""
        labels = np.asarray(per_item["labels"], dtype=np.int64)
        out = {}
        for name in [k for k in per_item if k == "AP" or k.startswith("AP.")]:
            ap = np.asarray(per_item[name], dtype=np.float64)
            valid = ~np.isnan(ap)
            w = counts * valid  # queries without positives count nowhere
            drawn = counts * np.where(valid, ap, 0.0)  # [b, n]: each query's AP times how often it is drawn
            with np.errstate(invalid="ignore", divide="ignore"):
                ap_mean = drawn.sum(1) / w.sum(1)
                n_class = class_sums(w, labels)
                class_means = np.where(n_class > 0, class_sums(drawn, labels) / np.maximum(n_class, 1), np.nan)
                class_map = nanmean_rows(class_means)
            suffix = name[2:]
            out["AP" + suffix] = elementwise(_pct, ap_mean)
            out["mAP" + suffix] = elementwise(_pct, class_map)
        return out


@hookimpl
def register_tasks(register):
    register("retrieval", Retrieval)
