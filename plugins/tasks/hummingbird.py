"""The parts of the Hummingbird protocol (open-hummingbird-eval, ``hbird/hbird_eval.py`` and
``hbird/utils/transforms.py``) that ``in_context_seg`` uses: the training augmentation, the patch soft labels,
the rare-class-favouring patch sampling of the memory bank, the label transfer and the scores.

- Augmentation: a RandomResizedCrop of scale (0.5, 2.0) and ratio (3/4, 4/3) shared by image and label map
  (torchvision's sampling: 10 tries, then the central crop), resized to input_size x input_size (bilinear,
  labels nearest); ColorJitter (brightness, contrast, saturation, hue 0.1) applied with probability 0.5, its
  four operations in a random order.
- Soft label of a patch: the histogram of its p x p pixels over the C classes, divided by p^2 (ignored
  pixels, 255, count for no class).
- Sampling: each training view keeps its K = memory_size // views patches of smallest score, where a patch's
  score is the sum over the classes it contains of the number of the view's patches containing that class,
  times U(0, 1); patches with no class go last.
- Transfer: softmax over the k neighbours of cosine / beta, the weighted sum of their soft labels.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

SCALE, RATIO = (0.5, 2.0), (3.0 / 4.0, 4.0 / 3.0)
JITTER = 0.1


def random_resized_crop(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with the protocol's scale and ratio: (x0, y0, w, h)."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augmentation(rng: np.random.Generator, width: int, height: int, jitter: bool) -> list[float]:
    """One training view's parameters: crop (x0, y0, w, h), jitter applied (0/1), brightness, contrast,
    saturation and hue factors, and the order of the four jitter operations."""
    crop = random_resized_crop(rng, width, height)
    apply = bool(jitter and rng.random() < 0.5)
    factors = [rng.uniform(1 - JITTER, 1 + JITTER) for _ in range(3)] + [rng.uniform(-JITTER, JITTER)]
    order = rng.permutation(4).tolist()
    return [*crop, float(apply), *factors, *order]


def _hue(img: Image.Image, shift: float) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def render_view(img: Image.Image, g: np.ndarray, size: int) -> Image.Image:
    """The augmented training view of ``img`` with parameters ``g`` (``augmentation``) at size x size."""
    x0, y0, w, h = (int(v) for v in g[:4])
    out = img.crop((x0, y0, x0 + w, y0 + h)).resize((size, size), Image.BILINEAR)
    if g[4]:
        b, c, s, hue = g[5:9]
        ops = [lambda im: ImageEnhance.Brightness(im).enhance(b), lambda im: ImageEnhance.Contrast(im).enhance(c),
               lambda im: ImageEnhance.Color(im).enhance(s), lambda im: _hue(im, hue)]
        for k in g[9:13]:
            out = ops[int(k)](out)
    return out


def crop_label(mask: np.ndarray, g: np.ndarray, size: int) -> np.ndarray:
    """The label map of a training view: the same crop, nearest-resized to size x size."""
    x0, y0, w, h = (int(v) for v in g[:4])
    return np.asarray(Image.fromarray(mask[y0:y0 + h, x0:x0 + w]).resize((size, size), Image.NEAREST))


def soft_labels(label: np.ndarray, patch: int, classes: int) -> torch.Tensor:
    """float [G*G, C]: each patch's class histogram over its p*p pixels / p^2 (255 counts for no class)."""
    g = label.shape[0] // patch
    blocks = label[:g * patch, :g * patch].reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, -1)
    onehot = np.zeros((g * g, classes + 1), np.float64)
    flat = np.where(blocks == 255, classes, blocks).astype(np.int64)
    np.add.at(onehot, (np.repeat(np.arange(g * g), flat.shape[1]), flat.reshape(-1)), 1.0)
    return torch.from_numpy(onehot[:, :classes] / flat.shape[1]).float()


def sample_patches(labels: torch.Tensor, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``keep`` patches of one view with the smallest rare-class score (see the module
    docstring); ``labels`` [P, C] soft labels."""
    present = (labels > 0).numpy()
    frequency = present.sum(0)  # patches of this view containing each class
    score = (present * frequency).sum(1).astype(np.float64)
    nonempty = present.any(1)
    score[nonempty] *= rng.random(int(nonempty.sum()))
    score[~nonempty] = np.inf
    return np.sort(np.argsort(score, kind="stable")[:keep])


def transfer(sims: torch.Tensor, idx: torch.Tensor, bank_labels: torch.Tensor, beta: float) -> torch.Tensor:
    """[Q, C]: softmax(sims / beta) over the k neighbours, times their soft labels."""
    w = torch.softmax(sims / beta, dim=1)
    return torch.einsum("qk,qkc->qc", w, bank_labels[idx])


def predict_map(scores: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Class scores of a patch grid [h*w, C] upsampled bilinearly to ``size``, argmax: long [H, W]."""
    c = scores.shape[1]
    m = scores.T.reshape(1, c, *grid)
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0].argmax(0)


def confusion(pred: np.ndarray, label: np.ndarray, classes: int) -> np.ndarray:
    """int64 [C, C] counts of (true class, predicted class) over the pixels whose label is not 255."""
    keep = label != 255
    return np.bincount(label[keep].astype(np.int64) * classes + pred[keep].astype(np.int64),
                       minlength=classes * classes).reshape(classes, classes)


def hungarian(conf: np.ndarray) -> np.ndarray:
    """The predicted id assigned to each true class, maximising the summed IoU (the reference's
    ``PredsmIoU`` matching: linear_sum_assignment on 1 - IoU)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        from harness.api import HarnessError

        raise HarnessError("match: hungarian needs scipy (pip install scipy)") from None
    iou = _iou_matrix(conf)
    rows, cols = linear_sum_assignment(1.0 - iou)
    out = np.arange(conf.shape[0])
    out[rows] = cols
    return out


def _iou_matrix(conf: np.ndarray) -> np.ndarray:
    inter = conf.astype(np.float64)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def intersection_union(conf: np.ndarray, assigned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per true class c: pixels of c predicted as its id (c, or ``assigned[c]``) and the union of the two."""
    ids = np.arange(conf.shape[0]) if assigned is None else assigned
    inter = conf[np.arange(conf.shape[0]), ids]
    union = conf.sum(1) + conf.sum(0)[ids] - inter
    return inter, union
