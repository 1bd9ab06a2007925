"""in_context_seg: dense segmentation by nearest neighbours in a memory bank of labelled patches, no training
(the Hummingbird protocol of open-hummingbird-eval; docs/segmentation.md#in-context-segmentation-hummingbird).

Memory bank: ``augmentation_epochs`` augmented views of every training image (``hummingbird``: shared
RandomResizedCrop of scale (0.5, 2), ColorJitter 0.1 at p = 0.5) at input_size x input_size are encoded;
each view keeps memory_size // views of its patches, favouring rare classes, as L2-normalised features with
their soft labels (class histograms of their pixels). Every validation image, resized to input_size x
input_size, is encoded; each of its patches takes its k nearest bank patches (cosine, exact: blocked matrix
products in torch, or faiss), weights them by softmax(cosine / beta) and sums their soft labels; the grid of
class scores is upsampled bilinearly and argmax'ed; mIoU over the validation pixels whose label is not 255.
Defaults follow the reference code except where docs/segmentation.md says otherwise (no Hungarian matching of
predicted to true ids: ``match: hungarian`` turns it on).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from harness.api import HarnessError, Option, SegSamples, hookimpl

from . import hummingbird as hb
from .dense import DerivedSamples, tokens_to_maps
from .dense_task import DenseHeadTask, check_token_map
from .knn import faiss_topk, normalise, topk_cosine


def _positive(v):
    return None if v is None or v > 0 else "must be > 0"


def _image_sizes(samples: SegSamples) -> list[tuple[int, int]]:
    out = []
    for p in samples.image_paths:
        with Image.open(p) as im:
            out.append(im.size)
    return out


class InContextSeg(DenseHeadTask):
    """In-context (nearest-neighbour) segmentation from a memory bank of labelled patches: mIoU."""

    headline = ("mIoU", "aAcc")
    _size = 0  # the views' side for the encoder at hand (``bind``)
    samples_type, kind, item = SegSamples, "segmentation", "view"
    options = {
        "train_split": Option(str, "train", "split whose images fill the memory bank"),
        "test_split": Option(str, "val", "split to evaluate on"),
        "representation": Option(str, "tokens", "token map used: 'tokens' (after the final norm) or 'block.<i>'",
                                 check=check_token_map),
        "input_size": Option(int, None, "side of the square views (default: 512 rounded down to a multiple of "
                             "the patch size, 504 for patch 14, as the reference)", nullable=True, check=_positive),
        "memory_size": Option(int, 102400, "patches in the memory bank (reference: 1024 x 10^2, 10^3, 10^4)",
                              check=_positive),
        "augmentation_epochs": Option(int, 2, "augmented passes over the training images (reference numbers: 2)",
                                      check=_positive),
        "jitter": Option(bool, True, "ColorJitter(0.1, 0.1, 0.1, 0.1) at p = 0.5 on the training views"),
        "augmentation_seed": Option(int, 0, "seed of the augmentations and of the patch sampling"),
        "k": Option(int, 30, "neighbours per patch", check=_positive),
        "beta": Option(float, 0.02, "softmax temperature of the neighbours' cosine similarities", check=_positive),
        "score_at": Option(str, "input", "input: labels resized (nearest) to the square input, as the reference; "
                           "original: predictions upsampled to each image's own size", choices=["input", "original"]),
        "match": Option(str, "none", "none: predicted ids are class ids; hungarian: match predicted to true ids "
                        "over the split first (the reference's default, meant for unsupervised use)",
                        choices=["none", "hungarian"]),
        "knn_backend": Option(str, "torch", "torch: exact, blocked matrix products; faiss: exact IndexFlatIP "
                              "(install extra 'faiss')", choices=["torch", "faiss"]),
        "batch_size": Option(int, 32, "views read (or encoded, mode stream) per step", check=_positive),
        "mode": Option(str, "auto", "cache the training views' features (cache), encode them on the fly without "
                       "caching (stream), or cache up to max_cache_gb (auto)", choices=["auto", "cache", "stream"]),
        "max_cache_gb": Option(float, 64.0, "mode auto: the largest view cache to build"),
    }

    # -- DenseHeadTask hooks ----------------------------------------------------------------------------
    def reps(self) -> list[str]:
        return [self.opts["representation"]]

    def size(self, patch: int) -> int:
        return self.opts["input_size"] or 512 // patch * patch

    def check(self, encoder, dataset) -> None:
        super().check(encoder, dataset)
        if self.size(int(encoder.patch_size)) % int(encoder.patch_size):
            raise ValueError(f"input_size {self.opts['input_size']} is not a multiple of encoder '{encoder.name}''s "
                             f"patch size {encoder.patch_size}")
        if self.opts["knn_backend"] == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError:
                raise ValueError("knn_backend 'faiss' needs the faiss package: pip install 'partbench[faiss]' "
                                 "(faiss-cpu) or faiss-gpu; or set knn_backend: torch") from None

    def input_size(self, samples):
        return (self._size, self._size)

    def view_key(self) -> tuple:
        return (self._size,)  # the views' size depends on the encoder's patch

    def bind(self, encoder) -> None:
        self._size = self.size(int(encoder.patch_size))

    def request_transform(self, encoder):
        size = self.size(int(encoder.patch_size))
        return f"pad:{size}:{size}"

    def make_role_view(self, role, samples, split, flip):
        s, o = self._size, self.opts
        sizes = _image_sizes(samples)
        if role == "train":
            geometry, source = [], []
            for e in range(o["augmentation_epochs"]):
                for i, (w, h) in enumerate(sizes):
                    rng = np.random.default_rng([o["augmentation_seed"], e, i])
                    geometry.append(hb.augmentation(rng, w, h, o["jitter"]))
                    source.append(i)
            tag = (f"{split}/hbird:{s}:x{o['augmentation_epochs']}:seed{o['augmentation_seed']}"
                   f"{':jitter' if o['jitter'] else ''}")
            return DerivedSamples(samples, source, np.asarray(geometry, np.float64).reshape(len(source), -1),
                                  np.zeros(len(source), bool), lambda img, g: hb.render_view(img, g, s), tag)
        return DerivedSamples(samples, np.arange(len(sizes)), np.asarray(sizes, np.float64).reshape(-1, 2),
                              np.zeros(len(sizes), bool), lambda img, g: img.resize((s, s), Image.BILINEAR),
                              f"{split}/resize:{s}x{s}")

    # -- a unit -------------------------------------------------------------------------------------------
    def run(self, ctx) -> dict:
        self.bind(ctx.encoder)
        unit = self.prepare(ctx)
        train, test = unit.samples["train"], unit.samples["test"]
        if list(train.classes) != list(test.classes):
            raise HarnessError(f"{self.name}: splits '{self.opts['train_split']}' and '{self.opts['test_split']}' "
                               "have different classes")
        t0 = time.perf_counter()
        bank, bank_labels, keep = self.memory_bank(unit)
        t_bank = time.perf_counter() - t0
        confs = self.evaluate(unit, bank, bank_labels)
        return self.report(unit, confs, bank, keep, {"bank": t_bank, "evaluate": time.perf_counter() - t0 - t_bank})

    def _maps(self, unit, role: str):
        """(view indices, float32 [B, D, G, G]) of every item of a view, in order: read from the cache or, in
        mode stream, encoded on the fly (rounded through fp16 as the cache stores them)."""
        view, bs = unit.views[role], self.opts["batch_size"]
        if role == "train" and unit.mode == "stream":
            for idx, out in unit.ctx.stream(view, unit.reps, unit.transform, np.arange(len(view))):
                yield np.asarray(idx), tokens_to_maps(out, unit.reps, unit.grid, unit.prefix).to(unit.device)
            return
        maps = unit.maps(role)
        for a in range(0, len(view), bs):
            idx = np.arange(a, min(len(view), a + bs))
            yield idx, maps.batch(idx)

    def memory_bank(self, unit):
        """(unit feature rows [M, D], soft labels [M, C], patches kept per view)."""
        o, view, samples = self.opts, unit.views["train"], unit.samples["train"]
        C, p, (g, _) = len(samples.classes), int(unit.ctx.encoder.patch_size), unit.grid
        keep = min(g * g, o["memory_size"] // len(view))
        if keep < 1:
            raise HarnessError(f"{self.name}: memory_size {o['memory_size']} is smaller than the {len(view)} training "
                               "views (each keeps memory_size // views patches)")
        feats, labels, mask_of = [], [], {}
        for idx, maps in unit.ctx.progress(self._maps(unit, "train"), desc=f"{self.name} bank {unit.ctx.encoder.name}",
                                           total=-(-len(view) // o["batch_size"])):
            for b, k in enumerate(idx.tolist()):
                i = int(view.source[k])
                if i not in mask_of:
                    mask_of = {i: samples.mask(i)}
                soft = hb.soft_labels(hb.crop_label(mask_of[i], view.geometry[k], unit.size[0]), p, C)
                sel = hb.sample_patches(soft, keep, np.random.default_rng([o["augmentation_seed"], 0xB1, k]))
                rows = maps[b].reshape(maps.shape[1], -1).T[torch.from_numpy(sel).to(maps.device)]
                feats.append(normalise(rows))
                labels.append(soft[sel].to(maps.device))
        return torch.cat(feats), torch.cat(labels), keep

    def evaluate(self, unit, bank: torch.Tensor, bank_labels: torch.Tensor) -> list[np.ndarray]:
        """The confusion matrix (true x predicted) of every validation image."""
        o, samples = self.opts, unit.samples["test"]
        C, s = len(samples.classes), unit.size[0]
        if o["k"] > bank.shape[0]:
            raise HarnessError(f"{self.name}: k = {o['k']} but the memory bank holds {bank.shape[0]} patches")
        confs = []
        for idx, maps in unit.ctx.progress(self._maps(unit, "test"), desc=f"{self.name} eval {unit.ctx.encoder.name}",
                                           total=-(-len(samples) // o["batch_size"])):
            q = maps.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1])
            if o["knn_backend"] == "faiss":
                sims, nn = faiss_topk(q, bank, o["k"])
            else:
                sims, nn = topk_cosine(q, bank, o["k"], normalised=False)
            scores = hb.transfer(sims, nn, bank_labels, o["beta"]).reshape(len(idx), -1, C)
            for b, i in enumerate(idx.tolist()):
                mask = samples.mask(i)
                if o["score_at"] == "input":
                    mask = np.asarray(Image.fromarray(mask).resize((s, s), Image.NEAREST))
                pred = hb.predict_map(scores[b], unit.grid, mask.shape).cpu().numpy()
                confs.append(hb.confusion(pred, mask, C))
        return confs

    def report(self, unit, confs, bank, keep, seconds) -> dict:  # type: ignore[override]
        o, samples = self.opts, unit.samples["test"]
        classes = list(samples.classes)
        total = np.sum(confs, axis=0)
        assigned = hb.hungarian(total) if o["match"] == "hungarian" else None
        inter, union = hb.intersection_union(total, assigned)
        per_image = [hb.intersection_union(c, assigned) for c in confs]
        iou, miou, a_acc = scores(inter, union, int(total.sum()))
        metrics = {"mIoU": miou, "aAcc": a_acc}
        details = {
            "per_class": {n: {"IoU": None if np.isnan(v) else round(float(100 * v), 4)} for n, v in zip(classes, iou)},
            "classes": classes, "match": o["match"],
            "assignment": None if assigned is None else {classes[t]: classes[int(p)] for t, p in enumerate(assigned)},
            "memory_bank": {"patches": int(bank.shape[0]), "per_view": keep, "views": len(unit.views["train"]),
                            "augmentation_epochs": o["augmentation_epochs"], "jitter": o["jitter"],
                            "memory_size": o["memory_size"]},
            "k": o["k"], "beta": o["beta"], "knn_backend": o["knn_backend"], "score_at": o["score_at"],
            "input_size": unit.size[0], "grid": list(unit.grid), "representation": o["representation"],
            "mode": unit.mode, "cache_gb": None if unit.cache_gb is None else round(unit.cache_gb, 3),
            "n": {"train_images": len(unit.samples["train"]), "test_images": len(samples)},
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        per_item = {"items": np.asarray(samples.keys, dtype=str),
                    "intersection": np.stack([a for a, _ in per_image]).astype(np.int64),
                    "union": np.stack([b for _, b in per_image]).astype(np.int64),
                    "labelled": np.asarray([int(c.sum()) for c in confs], np.int64)}
        return {"metrics": metrics, "details": details, "artifacts": [], "per_item": per_item}

    def resample(self, per_item, counts):
        """mIoU and aAcc of resamples of the validation images (``counts`` [b, images]): the drawn images'
        intersection, union and labelled pixel counts summed (never a mean of per-image IoU), then the formulas
        and rounding of ``report``. A Hungarian assignment, when on, stays the one found on all the images."""
        from .resampling import weighted_sums

        inter, union = weighted_sums(counts, per_item["intersection"]), weighted_sums(counts, per_item["union"])
        labelled = weighted_sums(counts, per_item["labelled"])
        drawn = [scores(i, u, int(n))[1:] for i, u, n in zip(inter, union, labelled)]
        return {name: np.asarray([np.nan if v[k] is None else v[k] for v in drawn])
                for k, name in enumerate(("mIoU", "aAcc"))}


def scores(inter: np.ndarray, union: np.ndarray, labelled: int) -> tuple[np.ndarray, float | None, float | None]:
    """(per-class IoU, mIoU, aAcc) from summed per-class intersection and union counts and the labelled pixels:
    classes with an empty union are left out (NaN), percentages rounded to 4 decimals; a pixel is correct when
    its true class is predicted as that class's id, so the correct pixels are the intersections' sum."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    valid = ~np.isnan(iou)
    miou = float(np.round(100 * iou[valid].mean(), 4)) if valid.any() else None
    a_acc = float(np.round(100 * int(inter.sum()) / labelled, 4)) if labelled else None
    return iou, miou, a_acc


@hookimpl
def register_tasks(register):
    register("in_context_seg", InContextSeg)
