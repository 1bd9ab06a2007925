"""Test inputs for the training-free tasks: an SPair-71k tree whose answer is known by construction, and a
colour-histogram encoder that matches on colour.

Every keypoint is drawn as a disc of a colour unique to its id, centred on a patch centre; a pair file may
annotate some target keypoints away from their disc (``lies``), which a colour matcher then gets wrong by
construction while it finds every other one exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BACKGROUND = (128, 128, 128)
# saturated colours far apart, one per keypoint id
COLOURS = [(230, 25, 25), (25, 200, 25), (25, 25, 230), (230, 230, 25), (230, 25, 230), (25, 230, 230),
           (250, 140, 0), (120, 0, 200)]
W, H, PATCH = 128, 96, 8
BOX = [0, 0, 100, 80]  # every target box: max side 100, so PCK@0.1 = 10 pixels
SHIFT = 30  # a lying annotation sits this far (right) of its disc

# category -> pairs: (name stem, viewpoint, keypoint ids, ids whose target annotation lies)
PAIRS = {
    "cat": [("000001", 0, [0, 1, 2, 3], [2]), ("000002", 1, [4, 5], [])],
    "dog": [("000003", 2, [0, 1, 2, 3, 4], [0, 3, 4])],
}
# per convention, by construction: cat 3/4 and 2/2 correct, dog 2/5
EXPECTED = {"point": 100 * 7 / 11, "image": 100 * (0.75 + 1 + 0.4) / 3, "category": 100 * (5 / 6 + 0.4) / 2}
EXPECTED_VP = {0: 75.0, 1: 100.0, 2: 40.0}


def disc_positions(seed: int) -> dict[int, tuple[int, int]]:
    """Keypoint id -> (x, y) patch centre, distinct cells well apart, inside the box and the image."""
    rng = np.random.default_rng(seed)
    cells = [(cx, cy) for cx in range(1, 11, 2) for cy in range(1, 9, 2)]
    order = rng.permutation(len(cells))
    return {k: (cells[order[k]][0] * PATCH + PATCH // 2, cells[order[k]][1] * PATCH + PATCH // 2)
            for k in range(len(COLOURS))}


def draw(path: Path, positions: dict[int, tuple[int, int]]) -> None:
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[:H, :W]
    for k, (x, y) in positions.items():
        img[(xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 7 ** 2] = COLOURS[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)


def write_spair(root: Path, split: str = "test") -> Path:
    """The SPair-71k layout with the PAIRS above (JPEGImages, ImageAnnotation, PairAnnotation, Layout)."""
    names, image_no = [], 0
    for cat, pairs in PAIRS.items():
        for stem, vp, ids, lies in pairs:
            src_name, trg_name = f"2008_{image_no:06d}", f"2008_{image_no + 1:06d}"
            src_pos, trg_pos = disc_positions(image_no), disc_positions(image_no + 1)
            image_no += 2
            for name, pos in ((src_name, src_pos), (trg_name, trg_pos)):
                draw(root / "JPEGImages" / cat / f"{name}.jpg", pos)
                ann = root / "ImageAnnotation" / cat / f"{name}.json"
                ann.parent.mkdir(parents=True, exist_ok=True)
                ann.write_text(json.dumps({"filename": f"{name}.jpg", "category": cat, "image_width": W,
                                           "image_height": H, "bndbox": BOX,
                                           "kps": {str(k): list(pos[k]) for k in range(len(COLOURS))}}))
            pair = f"{stem}-{src_name}-{trg_name}:{cat}"
            doc = {"pair_id": int(stem), "filename": pair, "src_imname": f"{src_name}.jpg",
                   "trg_imname": f"{trg_name}.jpg", "src_imsize": [W, H, 3], "trg_imsize": [W, H, 3],
                   "src_bndbox": BOX, "trg_bndbox": BOX, "category": cat,
                   "src_kps": [list(src_pos[k]) for k in ids],
                   "trg_kps": [[trg_pos[k][0] + (SHIFT if k in lies else 0), trg_pos[k][1]] for k in ids],
                   "kps_ids": [str(k) for k in ids], "mirror": 0, "viewpoint_variation": vp, "scale_variation": 0,
                   "truncation": 0, "occlusion": 0}
            for k in ids:  # a lying annotation stays inside the image
                assert doc["trg_kps"][ids.index(k)][0] < W
            path = root / "PairAnnotation" / split / f"{pair}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))
            names.append(pair)
    layout = root / "Layout" / "large" / f"{split}.txt"
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text("".join(n + "\n" for n in names))
    return root


def colour_encoder(patch: int = PATCH, name: str = "colours"):
    """A test encoder (not a plugin): each patch's histogram over the palette (background + COLOURS), every
    pixel counted for its nearest palette colour; exact in float16 (multiples of 1 / patch^2)."""
    from harness.api import Encoder

    palette = torch.tensor([BACKGROUND, *COLOURS], dtype=torch.float32)

    class _Colours(Encoder):
        representations = ("tokens", "blocks")
        num_blocks, embed_dim, prefix_tokens = 1, len(palette), 0

        def load(self, device="cpu"):
            pass

        def forward(self, x, reps):
            q = torch.round(x * 255.0)  # mean 0, std 1: the pixels 0..255
            b, _, h, w = q.shape
            d = ((q.permute(0, 2, 3, 1)[..., None, :] - palette.to(q.device)) ** 2).sum(-1)  # [B,H,W,K]
            onehot = torch.nn.functional.one_hot(d.argmin(-1), len(palette)).float()
            onehot[(q == 0).all(1)] = 0  # the padding counts for nothing
            hist = torch.nn.functional.avg_pool2d(onehot.permute(0, 3, 1, 2), patch)  # [B,K,h,w]
            tokens = hist.flatten(2).transpose(1, 2)
            return {r: tokens for r in reps}

    enc = _Colours(name, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], batch_size=8, precision="fp32")
    enc.patch_size = patch
    enc.plugin_name = "colour_histogram"
    return enc
