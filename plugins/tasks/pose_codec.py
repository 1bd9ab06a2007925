"""Top-down pose building blocks: person box -> affine crop, Gaussian heatmap targets, the
visibility-weighted heatmap MSE, heatmap decoding back to image pixels, instance scores and the flip
test. Pure numpy / torch / Pillow; no harness engine. The protocol choices are stated in docs/pose.md.

Coordinates are in the *pixel-index frame* used by mmpose and OpenCV: pixel (i, j) of an image has its
centre at x = i, y = j. COCO keypoints are taken in this frame unchanged. Sizes are (H, W) like the
brief's "256x192"; boxes are COCO (x, y, w, h).

Two crop conventions (``PoseCodec.udp``), both as mmpose 0.x / ViTPose define them:

- ``udp=True`` (default; ViTPose's COCO configs, Huang et al. 2020 "unbiased data processing"): the
  padded box [c - S/2, c + S/2] maps onto the pixel centres 0 .. W-1 of the crop, i.e.
  ``x' = (W-1)/S_w * (x - c_x) + (W-1)/2`` (and the same in y with H, S_h; mmpose ``get_warp_matrix``);
  heatmap pixel j sits at crop x = j * (W-1)/(w-1). Exact under horizontal flips, so no heatmap shift.
- ``udp=False`` (classic SimpleBaseline/HRNet): ``x' = W/S_w * (x - c_x) + W/2``, y with the same scale
  (mmpose ``get_affine_transform``), heatmap pixel j at crop x = 4j (stride W/w); targets are centred on
  the rounded heatmap position; the flip test shifts flipped heatmaps by one pixel (``shift_heatmap``).

Typical use (the linear_pose task)::

    codec = PoseCodec()                                   # 256x192 input, 64x48 heatmaps, UDP, DARK
    centre, size = codec.center_size(samples.box(i))
    crop = codec.warp(samples.image(i), centre, size)     # PIL 192 wide x 256 high
    kps = codec.to_crop(samples.keypoints(i), centre, size)
    target, weight = codec.encode(kps)                    # [K, 64, 48], [K]
    loss = joints_mse_loss(head(features), target, weight)
    fused = codec.fuse_flip(heatmaps, heatmaps_of_flipped_crops, samples.flip_pairs)
    xy, maxvals = codec.decode(fused, centres, sizes)     # image pixels, per-keypoint confidence
    score = instance_scores(maxvals, box_scores)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REFINES = ("dark", "quarter", "none")


# ----------------------------------------------------------------------------------- geometry
def box_center_size(box, aspect_wh: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre (cx, cy) and padded size (S_w, S_h) in pixels of COCO box(es) (x, y, w, h), shape [..., 4].

    mmpose's ``_xywh2cs`` without its 1/200 "pixel std" unit: the box is widened or heightened about
    its centre to the output aspect ``aspect_wh`` (= W/H, 0.75 for 192x256), then scaled by ``padding``.
    """
    b = np.asarray(box, dtype=np.float64)
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=-1)
    wider = w > aspect_wh * h
    sw = np.where(wider, w, h * aspect_wh)
    sh = np.where(wider, w / aspect_wh, h)
    return center, np.stack([sw, sh], axis=-1) * padding


def apply_affine(matrix, points) -> np.ndarray:
    """Points [..., 2] mapped by a 2x3 matrix (or a stack [..., 2, 3] matching the points' batch dims,
    with the point axis in between: matrices [N, 2, 3] and points [N, K, 2])."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if m.ndim == 2:
        return p @ m[:, :2].T + m[:, 2]
    return np.einsum("...ij,...kj->...ki", m[..., :2], p) + m[..., None, :, 2]


def invert_affine(matrix) -> np.ndarray:
    """Inverse of 2x3 affine matrices [..., 2, 3]."""
    m = np.asarray(matrix, dtype=np.float64)
    a = np.linalg.inv(m[..., :2])
    return np.concatenate([a, -(a @ m[..., 2:])], axis=-1)


def flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """0-based (left, right) index pairs of keypoint names that differ only in a 'left'/'right' prefix
    ('left_eye'/'right_eye', 'left eye'/'right eye'), sorted by the left index."""
    lefts, rights = {}, {}
    for i, n in enumerate(names):
        m = re.fullmatch(r"(left|right)([ _-].*)", str(n).strip().lower())
        if m:
            (lefts if m.group(1) == "left" else rights)[m.group(2)] = i
    return sorted((i, rights[s]) for s, i in lefts.items() if s in rights)


def flip_permutation(num_keypoints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Channel order of a mirrored pose: position k takes keypoint perm[k]."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        if not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
            raise ValueError(f"flip pair ({a}, {b}) is outside 0..{num_keypoints - 1}")
        perm[a], perm[b] = b, a
    return perm


# --------------------------------------------------------------------------- loss and scoring
def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mmpose 0.x ``JointsMSELoss(use_target_weight=True)``: the mean over batch, keypoints and heatmap
    pixels of ``(weight * (pred - target))**2``, i.e. (1/K) sum_k MSELoss(w_k pred_k, w_k target_k).
    No 0.5 factor (the original SimpleBaseline code had one; mmpose dropped it). ``weight`` [B, K]."""
    w = weight.to(pred.dtype)[..., None, None]
    return ((pred - target) * w).pow(2).mean()


def instance_scores(maxvals, box_scores, threshold: float = 0.2) -> np.ndarray:
    """mmpose 0.x top-down rescoring: mean of the keypoint confidences above ``threshold`` (``vis_thr``;
    0 when none is) times the box score (1 for ground-truth boxes). ``maxvals`` [N, K]."""
    mv = np.asarray(maxvals, dtype=np.float64)
    keep = mv > threshold
    n = keep.sum(axis=-1)
    mean = np.where(n > 0, (mv * keep).sum(axis=-1) / np.maximum(n, 1), 0.0)
    return mean * np.asarray(box_scores, dtype=np.float64)


def gaussian_blur(heatmaps: torch.Tensor, kernel: int) -> torch.Tensor:
    """OpenCV's ``GaussianBlur(h, (k, k), 0)`` on float maps [..., h, w]: sigma = 0.3*((k-1)/2 - 1) + 0.8,
    normalised separable kernel, border reflected without repeating the edge (BORDER_REFLECT_101)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(kernel, dtype=torch.float64) - r
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = (g / g.sum()).to(heatmaps.dtype).to(heatmaps.device)
    shape = heatmaps.shape
    x = heatmaps.reshape(-1, 1, shape[-2], shape[-1])
    ry, rx = min(r, shape[-2] - 1), min(r, shape[-1] - 1)  # reflection needs r < size (tiny maps only)
    x = F.pad(x, (rx, rx, ry, ry), mode="reflect")
    x = F.conv2d(x, g[r - ry: r + ry + 1].view(1, 1, -1, 1))
    x = F.conv2d(x, g[r - rx: r + rx + 1].view(1, 1, 1, -1))
    return x.reshape(shape)


# ------------------------------------------------------------------------------------- codec
@dataclass(frozen=True)
class PoseCodec:
    """Crop geometry, heatmap encoding and decoding of a top-down pose model (see the module doc).

    ``refine``: sub-pixel refinement of the heatmap argmax: "dark" (Taylor/Newton step on the blurred
    log-heatmap, mmpose's UDP variant ``post_dark_udp``; default with ``udp``), "quarter" (a quarter
    pixel towards the higher neighbour; default without ``udp``) or "none".
    ``shift_heatmap``: shift flipped-back heatmaps one pixel right (default: ``not udp``).
    """

    input_size: tuple[int, int] = (256, 192)
    heatmap_size: tuple[int, int] = (64, 48)
    padding: float = 1.25
    sigma: float = 2.0
    udp: bool = True
    refine: str | None = None
    shift_heatmap: bool | None = None
    dark_kernel: int = 11

    def __post_init__(self):
        for name in ("input_size", "heatmap_size"):
            v = tuple(int(s) for s in getattr(self, name))
            if len(v) != 2 or min(v) < 2:
                raise ValueError(f"{name} must be (H, W) with both sides >= 2, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if self.refine is None:
            object.__setattr__(self, "refine", "dark" if self.udp else "quarter")
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {self.refine!r}")
        if self.shift_heatmap is None:
            object.__setattr__(self, "shift_heatmap", not self.udp)
        if self.sigma <= 0 or self.padding <= 0:
            raise ValueError("sigma and padding must be > 0")
        if self.dark_kernel < 3 or self.dark_kernel % 2 == 0:
            raise ValueError(f"dark_kernel must be odd and >= 3, got {self.dark_kernel}")

    # ---- geometry
    @property
    def aspect(self) -> float:
        """Output width / height (0.75 for 256x192)."""
        return self.input_size[1] / self.input_size[0]

    @property
    def stride(self) -> tuple[float, float]:
        """(x, y) crop pixels per heatmap pixel: W/w (classic) or (W-1)/(w-1) (UDP)."""
        (H, W), (h, w) = self.input_size, self.heatmap_size
        if self.udp:
            return (W - 1) / (w - 1), (H - 1) / (h - 1)
        return W / w, H / h

    def center_size(self, box) -> tuple[np.ndarray, np.ndarray]:
        """(centre, padded size) of box(es) (x, y, w, h) [..., 4] at this codec's aspect and padding."""
        return box_center_size(box, self.aspect, self.padding)

    def geometry(self, box) -> np.ndarray:
        """[cx, cy, S_w, S_h] of box(es) [..., 4]: one row per crop (what ``render`` takes)."""
        c, s = self.center_size(box)
        return np.concatenate([c, s], axis=-1)

    def matrix(self, center, size) -> np.ndarray:
        """Image -> crop affine matrix [..., 2, 3] (no rotation)."""
        H, W = self.input_size
        c = np.asarray(center, dtype=np.float64)
        s = np.asarray(size, dtype=np.float64)
        if self.udp:
            sx, sy, ox, oy = (W - 1) / s[..., 0], (H - 1) / s[..., 1], (W - 1) / 2, (H - 1) / 2
        else:  # mmpose get_affine_transform: one isotropic scale from the width
            sx = sy = W / s[..., 0]
            ox, oy = W / 2, H / 2
        z = np.zeros_like(sx)
        return np.stack([np.stack([sx, z, ox - sx * c[..., 0]], -1),
                         np.stack([z, sy, oy - sy * c[..., 1]], -1)], -2)

    def inverse(self, center, size) -> np.ndarray:
        """Crop -> image affine matrix [..., 2, 3]."""
        return invert_affine(self.matrix(center, size))

    def to_crop(self, keypoints, center, size) -> np.ndarray:
        """Keypoints [..., K, >=2] (x, y, then e.g. visibility) from image to crop pixels; the columns after
        x, y are copied. Batched: centre/size [N, 2] with keypoints [N, K, C]."""
        kp = np.array(keypoints, dtype=np.float64)
        kp[..., :2] = apply_affine(self.matrix(center, size), kp[..., :2])
        return kp

    def to_image(self, keypoints, center, size) -> np.ndarray:
        """Inverse of ``to_crop``."""
        kp = np.array(keypoints, dtype=np.float64)
        kp[..., :2] = apply_affine(self.inverse(center, size), kp[..., :2])
        return kp

    def warp(self, image: Image.Image, center, size) -> Image.Image:
        """The W x H crop of a PIL image: bilinear, black outside the image (no antialiasing when
        shrinking, like cv2.warpAffine). Pillow samples in the pixel-area frame (pixel i covers
        [i, i+1)), so the index-frame matrix is conjugated by a half-pixel shift."""
        H, W = self.input_size
        inv = self.inverse(center, size)
        a, b = inv[:, :2], inv[:, 2]
        b = b + 0.5 - a @ np.array([0.5, 0.5])
        data = (a[0, 0], a[0, 1], b[0], a[1, 0], a[1, 1], b[1])
        return image.convert("RGB").transform((W, H), Image.AFFINE, data, resample=Image.BILINEAR,
                                              fillcolor=(0, 0, 0))

    def render(self, image: Image.Image, geometry) -> Image.Image:
        """``warp`` from one ``geometry`` row [cx, cy, S_w, S_h]."""
        g = np.asarray(geometry, dtype=np.float64)
        return self.warp(image, g[:2], g[2:4])

    # ---- targets
    def encode(self, keypoints, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian heatmap targets of keypoints in *crop* pixels [..., K, 3] (x, y, COCO visibility).

        Returns (target [..., K, h, w] float32, weight [..., K] float32) as torch tensors. A keypoint's
        centre on the heatmap is (x, y) / stride; its unnormalised Gaussian (peak 1 at the centre, sigma
        ``self.sigma`` heatmap pixels) is cut to the (6 sigma + 1)-pixel square window around the rounded
        centre, as mmpose does. UDP keeps the sub-pixel centre; classic centres on the rounded position.
        Weight 1 when v > 0 and the window overlaps the heatmap, else 0 (and an all-zero target).
        """
        kp = keypoints if torch.is_tensor(keypoints) else torch.from_numpy(np.asarray(keypoints, np.float64))
        kp = kp.to(device=device if device is not None else kp.device, dtype=torch.float64)
        lead = kp.shape[:-1]
        kp = kp.reshape(-1, kp.shape[-1])
        h, w = self.heatmap_size
        sx, sy = self.stride
        mu = kp[:, :2] / torch.tensor([sx, sy], dtype=torch.float64, device=kp.device)
        finite = torch.isfinite(mu).all(dim=1)
        mu = torch.where(finite[:, None], mu, torch.zeros_like(mu))
        rounded = torch.floor(mu + 0.5)
        centre = mu if self.udp else rounded
        radius = 3.0 * self.sigma
        weight = (kp[:, 2] > 0) & finite
        weight &= (rounded[:, 0] - radius <= w - 1) & (rounded[:, 0] + radius >= 0)
        weight &= (rounded[:, 1] - radius <= h - 1) & (rounded[:, 1] + radius >= 0)

        def axis(n, c, r):
            grid = torch.arange(n, dtype=torch.float64, device=kp.device)[None]
            g = torch.exp(-(grid - c[:, None]) ** 2 / (2 * self.sigma ** 2))
            return g * ((grid - r[:, None]).abs() <= radius)

        gx = axis(w, centre[:, 0], rounded[:, 0])
        gy = axis(h, centre[:, 1], rounded[:, 1])
        target = gy[:, :, None] * gx[:, None, :] * weight[:, None, None]
        return (target.to(torch.float32).reshape(*lead, h, w),
                weight.to(torch.float32).reshape(lead))

    def flip_keypoints(self, keypoints, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        """Crop keypoints [..., K, C] of the horizontally mirrored crop: x -> W - 1 - x (pixel-index
        mirror, what ``Image.transpose(FLIP_LEFT_RIGHT)`` does), left/right rows swapped."""
        kp = np.array(keypoints, dtype=np.float64)
        kp = kp[..., flip_permutation(kp.shape[-2], flip_pairs), :]
        kp[..., 0] = self.input_size[1] - 1 - kp[..., 0]
        return kp

    # ---- decoding
    def flip_back(self, heatmaps, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Heatmaps [N, K, h, w] predicted on mirrored crops, brought back to the original crop: mirrored
        horizontally, left/right channels swapped (mmpose ``flip_back``), then, with ``shift_heatmap``,
        shifted one pixel right (column 0 keeps its value), as mmpose's classic flip test does."""
        hm = torch.as_tensor(heatmaps)
        hm = hm[:, flip_permutation(hm.shape[1], flip_pairs)].flip(-1)
        if self.shift_heatmap:
            hm = torch.cat([hm[..., :1], hm[..., :-1]], dim=-1)
        return hm

    def fuse_flip(self, heatmaps, flipped_heatmaps, flip_pairs) -> torch.Tensor:
        """Flip-test average of heatmaps and those of the mirrored crops (``flip_back`` first)."""
        return (torch.as_tensor(heatmaps) + self.flip_back(flipped_heatmaps, flip_pairs)) * 0.5

    def peaks(self, heatmaps) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap coordinates [N, K, 2] float64 (x, y), maxvals [N, K]) of heatmaps [N, K, h, w]:
        the argmax (first of ties) refined by ``self.refine``; maxval = the raw heatmap value there."""
        hm = torch.as_tensor(heatmaps).detach().to(torch.float32)
        n, k, h, w = hm.shape
        flat = hm.reshape(n, k, h * w)
        idx = flat.argmax(dim=-1)
        maxvals = flat.gather(-1, idx[..., None])[..., 0]
        px, py = idx % w, idx // w
        xy = torch.stack([px, py], -1).to(torch.float64)
        if self.refine == "quarter":
            xy += 0.25 * self._quarter(flat, px, py, h, w)
        elif self.refine == "dark":
            xy += self._dark(hm, px, py)
        return xy, maxvals

    @staticmethod
    def _quarter(flat, px, py, h, w) -> torch.Tensor:
        """Sign of the neighbour difference per axis (0 at a border of that axis: no neighbour)."""
        def at(x, y):
            return flat.gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))[..., None])[..., 0]

        dx = torch.sign(at(px + 1, py) - at(px - 1, py)) * ((px > 0) & (px < w - 1))
        dy = torch.sign(at(px, py + 1) - at(px, py - 1)) * ((py > 0) & (py < h - 1))
        return torch.stack([dx, dy], -1).to(torch.float64)

    def _dark(self, hm, px, py) -> torch.Tensor:
        """mmpose ``post_dark_udp``: blur (kernel ``dark_kernel``), clip to [0.001, 50], log, edge-pad one
        pixel, central differences at the argmax, offset = -Hessian^-1 gradient (Hessian + eps I).
        Ours also bounds the offset to one heatmap pixel per axis (a non-concave spot of an untrained
        head's map can otherwise send a keypoint anywhere)."""
        n, k, h, w = hm.shape
        lg = torch.log(gaussian_blur(hm.to(torch.float64), self.dark_kernel).clamp(0.001, 50.0))
        pad = F.pad(lg.reshape(n * k, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(n, k, (h + 2) * (w + 2))
        x, y = px + 1, py + 1

        def at(dx, dy):
            return pad.gather(-1, ((y + dy) * (w + 2) + (x + dx))[..., None])[..., 0]

        c = at(0, 0)
        gx, gy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
        dxx = at(1, 0) - 2 * c + at(-1, 0)
        dyy = at(0, 1) - 2 * c + at(0, -1)
        dxy = 0.5 * (at(1, 1) - at(1, 0) - at(0, 1) + 2 * c - at(-1, 0) - at(0, -1) + at(-1, -1))
        eps = float(np.finfo(np.float32).eps)
        a, d = dxx + eps, dyy + eps
        det = a * d - dxy * dxy
        ok = det.abs() > 0
        det = torch.where(ok, det, torch.ones_like(det))
        ox = -(d * gx - dxy * gy) / det
        oy = -(-dxy * gx + a * gy) / det
        off = torch.stack([ox, oy], -1) * ok[..., None]
        return off.clamp(-1.0, 1.0)

    def to_image_from_heatmap(self, coords, center, size) -> np.ndarray:
        """Heatmap coordinates [N, K, 2] -> image pixels through the crop's inverse affine."""
        xy = np.asarray(coords, dtype=np.float64) * np.array(self.stride)
        return apply_affine(self.inverse(np.asarray(center, np.float64), np.asarray(size, np.float64)), xy)

    def decode(self, heatmaps, center, size) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints in image pixels [N, K, 2] float64, maxvals [N, K] float32) of heatmaps [N, K, h, w]
        predicted on the crops of centres / sizes [N, 2]."""
        coords, maxvals = self.peaks(heatmaps)
        return (self.to_image_from_heatmap(coords.cpu().numpy(), center, size),
                maxvals.cpu().numpy().astype(np.float32))

    def describe(self) -> dict:
        """The codec's settings, for results' details and cache identities."""
        return {"input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size),
                "padding": self.padding, "sigma": self.sigma, "udp": self.udp, "refine": self.refine,
                "shift_heatmap": self.shift_heatmap, "dark_kernel": self.dark_kernel,
                "stride": [round(s, 6) for s in self.stride]}
