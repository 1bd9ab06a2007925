"""COCO keypoint evaluation (OKS AP/AR) with ``pycocotools.cocoeval.COCOeval(iouType="keypoints")``.

``keypoint_results`` builds predictions in the COCO results format; ``evaluate_keypoints`` scores them
against a person_keypoints annotation file and returns COCOeval's ten summary numbers in percent:

    AP AP50 AP75 APm APl AR AR50 AR75 ARm ARl   (= COCOeval.stats[0..9])

COCOeval's rules apply unchanged: OKS of a prediction and a person is the mean over the person's
labelled keypoints (v > 0) of exp(-d^2 / (2 * area * (2 sigma_i)^2)) with the annotation's ``area``;
crowd persons and persons with ``num_keypoints == 0`` are ignored (matches to them are neither
rewarded nor punished); at most 20 predictions per image count (by score); area ranges: medium
32^2..96^2, large > 96^2. A summary number COCOeval reports as -1 (no ground truth in that range) is NaN.
No OKS-NMS: with ground-truth boxes there is one prediction per annotated person. (mmpose runs OKS-NMS
at 0.9 over detected boxes; with a detections file that step is not reproduced here.)
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from typing import Sequence

import numpy as np

from harness.api import HarnessError

#: COCO's per-keypoint OKS constants for the 17 person keypoints (pycocotools' default)
COCO_PERSON_SIGMAS = tuple(s / 10 for s in (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                                           .89, .89))
#: names of COCOeval.stats[0..9] for iouType "keypoints"
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def keypoint_results(image_ids: Sequence[int], keypoints, keypoint_scores, scores,
                     category_id: int = 1) -> list[dict]:
    """COCO keypoint results: one dict per instance with ``image_id``, ``category_id``, ``keypoints``
    ([x, y, confidence] * K, image pixels) and ``score``. ``keypoints`` [N, K, 2], ``keypoint_scores``
    [N, K] (e.g. heatmap maxvals), ``scores`` [N] (e.g. ``pose_codec.instance_scores``)."""
    xy = np.asarray(keypoints, dtype=np.float64)
    ks = np.asarray(keypoint_scores, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(image_ids)
    if xy.shape[:1] != (n,) or xy.ndim != 3 or xy.shape[2] != 2 or ks.shape != xy.shape[:2] or sc.shape != (n,):
        raise ValueError(f"shapes differ: {n} image ids, keypoints {xy.shape} (expected [N, K, 2]), "
                         f"keypoint scores {ks.shape} (expected [N, K]), scores {sc.shape}")
    flat = np.concatenate([xy, ks[..., None]], axis=2).reshape(n, -1)
    return [{"image_id": int(i), "category_id": int(category_id), "keypoints": [float(v) for v in row],
             "score": float(s)} for i, row, s in zip(image_ids, flat, sc)]


def load_ground_truth(path):
    """pycocotools COCO of a person_keypoints file (prints silenced; bad files are one-line errors)."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except FileNotFoundError:
        raise HarnessError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (KeyError, TypeError, AssertionError) as exc:
        raise HarnessError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None


def _keypoint_category(gt, where: str) -> dict:
    cats = [c for c in gt.dataset.get("categories", []) if c.get("keypoints")]
    if not cats:
        raise HarnessError(f"{where}: no category with a 'keypoints' list (not a person_keypoints file?)")
    return next((c for c in cats if c.get("name") == "person"), cats[0])


def evaluate_keypoints(ground_truth, results: Sequence[dict], image_ids: Sequence[int] | None = None,
                       sigmas: Sequence[float] | None = None, per_image: dict | None = None) -> dict[str, float]:
    """COCOeval keypoint summary in percent: {"AP", "AP50", ..., "ARl"} (see ``STAT_NAMES``).

    ``ground_truth``: a person_keypoints json path or a pycocotools ``COCO``. ``results``: COCO keypoint
    results (``keypoint_results``). ``image_ids``: evaluate only these images (default: every image of
    the file; persons of images without predictions then count as misses). ``sigmas``: per-keypoint OKS
    constants (default COCO's 17). No results at all gives 0 for every number that has ground truth.
    pycocotools' prints are silenced. ``per_image``: a dict that receives ``matches(ev)``, the per-image data
    from which ``resampled_stats`` recomputes the numbers on resampled images.
    """
    gt = ground_truth if hasattr(ground_truth, "dataset") else load_ground_truth(ground_truth)
    where = str(ground_truth) if not hasattr(ground_truth, "dataset") else "ground truth"
    cat = _keypoint_category(gt, where)
    k = len(cat["keypoints"])
    sig = np.asarray(COCO_PERSON_SIGMAS if sigmas is None else sigmas, dtype=np.float64)
    if len(sig) != k:
        raise HarnessError(f"{where}: category '{cat.get('name')}' has {k} keypoints but {len(sig)} OKS sigmas "
                           f"were given{' (COCO defaults are for 17)' if sigmas is None else ''}")
    known = set(gt.getImgIds())
    for i, r in enumerate(results):
        kp = r.get("keypoints")
        if not isinstance(kp, (list, tuple)) or len(kp) != 3 * k:
            raise HarnessError(f"result {i}: 'keypoints' must list {3 * k} numbers, got "
                               f"{len(kp) if isinstance(kp, (list, tuple)) else type(kp).__name__}")
        if not all(math.isfinite(v) for v in kp) or not math.isfinite(r.get("score", math.nan)):
            raise HarnessError(f"result {i} (image {r.get('image_id')}): non-finite keypoint or score")
        if r.get("image_id") not in known:
            raise HarnessError(f"result {i}: image_id {r.get('image_id')} is not in {where}")
    imgs = sorted(known if image_ids is None else {int(i) for i in image_ids})
    missing = [i for i in imgs if i not in known]
    if missing:
        raise HarnessError(f"{where}: image id {missing[0]} (of {len(missing)} asked for) is not in the file")

    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = gt.loadRes([dict(r) for r in results])  # loadRes adds area/bbox/id in place: copy
        else:  # loadRes cannot take an empty list: an empty result set scores 0
            dt = _empty_results(gt)
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.params.imgIds = imgs
        ev.params.kpt_oks_sigmas = sig
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if per_image is not None:
        per_image.update(matches(ev))
    return {name: _percent(v) for name, v in zip(STAT_NAMES, ev.stats)}


def _percent(v: float) -> float:
    return math.nan if v < 0 else round(100.0 * float(v), 6)


def matches(ev) -> dict:
    """What ``COCOeval.accumulate`` reads for the all-area, 20-detection summary numbers, per image, after
    ``evaluate``: ``items`` (the image ids), ``gt_count`` (each image's persons that are not ignored),
    ``dt_image`` (each detection's image, as an index into ``items``) and ``dt_tp``/``dt_fp`` (bool [D, T]:
    matched / unmatched and not ignored at each OKS threshold), the detections in accumulate's order
    (by score, descending, a stable sort of the images' detections in image order)."""
    p = ev.params
    if len(p.catIds) != 1:
        raise HarnessError(f"per-image keypoint data needs one category, got {len(p.catIds)}")
    a_all = [list(r) for r in p.areaRng].index([0 ** 2, 1e5 ** 2])
    max_det = p.maxDets[-1]
    n_img = len(p.imgIds)
    gt_count = np.zeros(n_img, np.int64)
    scores, images, tps, fps = [], [], [], []
    for i in range(n_img):
        e = ev.evalImgs[a_all * n_img + i]
        if e is None:
            continue
        gt_count[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        dtm, dtig = e["dtMatches"][:, :max_det], e["dtIgnore"][:, :max_det]
        scores.append(np.asarray(e["dtScores"][:max_det], np.float64))
        images.append(np.full(dtm.shape[1], i, np.int64))
        tps.append(np.logical_and(dtm, np.logical_not(dtig)))
        fps.append(np.logical_and(np.logical_not(dtm), np.logical_not(dtig)))
    T = len(p.iouThrs)
    cat = (lambda xs, shape: np.concatenate(xs, axis=-1) if xs else np.zeros(shape))  # noqa: E731
    sc = cat(scores, (0,))
    order = np.argsort(-sc, kind="mergesort")
    return {"items": np.asarray(p.imgIds, np.int64), "gt_count": gt_count,
            "dt_image": cat(images, (0,)).astype(np.int64)[order],
            "dt_tp": cat(tps, (T, 0)).astype(bool)[:, order].T, "dt_fp": cat(fps, (T, 0)).astype(bool)[:, order].T,
            "iou_thrs": np.asarray(p.iouThrs, np.float64), "rec_thrs": np.asarray(p.recThrs, np.float64)}


def resampled_stats(data: dict, counts: np.ndarray) -> dict[str, np.ndarray]:
    """AP, AP50, AP75, AR, AR50 (percent, as ``evaluate_keypoints``) of each resample of the images (counts
    [b, images]), exactly as COCOeval on the resampled image set: an image drawn k times is k images with the
    same detections, so each detection counts k times in accumulate's cumulative true and false positives and
    each image's persons k times in the recall denominator. The copies of a detection are adjacent in score
    order (equal scores keep image order), and within such a run precision only rises for true positives and
    recall stays for false ones, so after the monotone envelope the run's last point stands for all of them."""
    w = counts[:, data["dt_image"]].astype(np.int64)  # [b, D]
    npig = counts.astype(np.int64) @ data["gt_count"]  # [b]
    tp_w = np.cumsum(w[:, None, :] * data["dt_tp"].T[None].astype(np.int64), axis=2).astype(float)  # [b, T, D]
    fp_w = np.cumsum(w[:, None, :] * data["dt_fp"].T[None].astype(np.int64), axis=2).astype(float)
    b, T, D = tp_w.shape
    rec_thrs = data["rec_thrs"]
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tp_w / npig[:, None, None]
        pr = tp_w / (fp_w + tp_w + np.spacing(1))
    pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # accumulate's right-to-left envelope
    q = np.zeros((b, T, len(rec_thrs)))
    for r in range(b):
        for t in range(T):
            inds = np.searchsorted(rc[r, t], rec_thrs, side="left")
            ok = inds < D
            q[r, t, ok] = pr[r, t, inds[ok]]
    recall = rc[:, :, -1] if D else np.zeros((b, T))
    # summarize picks a threshold by exact equality (none found: -1), and averages what it picked
    at = lambda thr, v: v[:, data["iou_thrs"] == thr].reshape(b, -1)  # noqa: E731
    stats = {"AP": q.reshape(b, -1), "AP50": at(.5, q), "AP75": at(.75, q), "AR": recall, "AR50": at(.5, recall)}
    stats = {k: v.mean(1) if v.shape[1] else np.full(b, -1.0) for k, v in stats.items()}
    out = {}
    for name, v in stats.items():
        v = np.where(npig > 0, v, -1.0)  # COCOeval leaves -1 where no person counts
        out[name] = np.array([_percent(x) for x in v.tolist()])
    return out


def _empty_results(gt):
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset.get("images", [])), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt
