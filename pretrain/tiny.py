"""Pretrain the demo's three tiny ViTs on synthetic objects, on CPU, deterministically.

One architecture (ViT, 4 blocks, width 192, 3 heads, patch 16, 64 x 64 input: a 4 x 4 grid), one data set
(``synthetic_parts kind: objects`` images, generation seed 1: not the demo's evaluation images, which use
seed 0; each image cut to the square around its object, as the demo's object crops are, since ImageNet photos
are object-centred), one optimiser recipe (AdamW, lr 2e-4, betas 0.9/0.95, weight decay 0.05, linear warmup
over the first 10% of steps then cosine to 0, batch 64), three objectives:

- ``supervised``: cross-entropy (label smoothing 0.1) of a linear classifier on the CLS token against the
  object class (the configuration of the parts); no crop augmentation (see below).
- ``contrastive``: two random-resized crops (scale 0.2-1) with colour jitter and random grayscale, an MLP
  projection head on the CLS token (192 -> 512 -> LayerNorm -> GELU -> 128) and the symmetric InfoNCE loss
  of SimCLR/MoCo v3 over the batch (temperature 0.2; no momentum encoder, no predictor).
- ``mim``: MAE: 75% of the patches masked per image, the encoder sees the visible ones, a 2-block decoder
  of width 128 predicts the masked patches' per-patch-normalised pixels (MSE on masked patches only);
  random-resized crops (scale 0.35-1).

Steps: about 4 minutes of 2 CPU cores per method (supervised 2000, contrastive 1000 of two views, mim 2400
on a quarter of the tokens), on 16,384 images (drawn once, about 1.5 minutes, shared by the three). The
supervised model's own classifier is scored on 1,024 held-out images (the next indices of the same seed)
and the accuracy written to the manifest: it says how far that training got.

What was tuned, all of it to make the *supervised* objective learn at all (nothing was tuned per method or
toward any comparison between them):
- On version 1 of the generator (disc, square, triangle, cross at random rotations) the supervised model
  stayed at chance: lr 2e-4, 5e-4 or 1e-3, batch 32 or 64, patch 8 or 16, 800 steps with or without
  random-resized crops, a convolutional stem, solid-colour parts: held-out accuracy never above ~17%
  (chance 12.5%). The generator's part types became version 2's (disc, ring, bar, tee; see
  docs/datasets.md), the first set tried after that: at 4,096 images a model then left chance (40% at
  400 steps, 66% at 1,200 while overfitting), at 16,384 it reached ~80%.
- Random-resized crops (even scale 0.6-1) kept the supervised model at chance on version 2 too: a crop
  moves the slots relative to the image, and the class is which part sits in which slot. Supervised
  training therefore sees the whole object-centred image; contrastive and MAE keep their own methods'
  crops (their objectives are built on them). No horizontal flips anywhere: a mirrored object is another
  class of the generator.
These are small, briefly trained models: the final losses and the supervised held-out accuracy in the
manifest say how far each got.

Written to ``--out``: ``<method>.safetensors`` (fp16; timm ``VisionTransformer`` keys, plus ``head.*`` =
the contrastive projection head) and ``manifest.json`` (command, schedule, SHA-256 of every file, final
losses, seconds, torch version, CPU capability). Everything is a pure function of the arguments on one
torch version and CPU instruction set: the script fixes the seeds, the thread count and torch's
deterministic algorithms, so a rerun writes bit-identical ``.safetensors`` files.

The committed weights (``plugins/encoders/tiny_weights``) were made by::

    python pretrain/tiny.py --out plugins/encoders/tiny_weights
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from harness.api import IMAGENET_MEAN, IMAGENET_STD
from partbench_plugins.datasets import synthetic_objects
from partbench_plugins.encoders.tiny_pretrained import ARCH, IMAGE_SIZE, METHODS, build_projection_head
from partbench_plugins.encoders.vit_architecture import build_model

RENDER_SIZE = 192  # rendered as the demo's dataset (image_size 192), then resized to 64 as its tasks do
DEFAULT_STEPS = {"supervised": 2000, "contrastive": 1000, "mim": 2400}  # about 4 min each on 2 cores


# ---------------------------------------------------------------- data
def _render(args) -> tuple[np.ndarray, int]:
    seed, i = args
    rgb, _, info = synthetic_objects.render(np.random.default_rng([seed, i]), RENDER_SIZE)
    # object-centred, as ImageNet photos are: the square around the object's box that the demo's object
    # crops use (side max(w, h), same centre), resized to the model's input
    x, y, w, h = info["bbox"]
    side = max(w, h)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    small = Image.fromarray(rgb).crop((round(x0), round(y0), round(x0 + side), round(y0 + side))).resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    return np.asarray(small), info["label"]


def render_images(num_images: int, seed: int, workers: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N,3,64,64] images ``start .. start + N - 1`` and their object classes (each image a pure
    function of (seed, i))."""
    jobs = [(seed, i) for i in range(start, start + num_images)]
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            out = pool.map(_render, jobs, chunksize=64)
    else:
        out = [_render(j) for j in jobs]
    images = torch.from_numpy(np.stack([o[0] for o in out])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([o[1] for o in out])


MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float]) -> torch.Tensor:
    """Per image: a crop of area fraction U(scale) and aspect log-U(3/4, 4/3) anywhere in the image,
    resized back to the input size (bilinear). ``x``: float [B,3,H,W]."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=g)
    log_r = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors U(0.6, 1.4), then grayscale with p = 0.2 (x in 0..1)."""
    b = x.shape[0]
    f = lambda: torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=g)  # noqa: E731
    x = x * f()
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).clamp(0, 1)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * f() + grey.mean(dim=(2, 3), keepdim=True)
    grey = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
    x = (x - grey) * f() + grey
    to_grey = torch.rand(b, 1, 1, 1, generator=g) < 0.2
    return torch.where(to_grey, grey.expand_as(x), x).clamp(0, 1)


def normalise(x01: torch.Tensor) -> torch.Tensor:
    return (x01 - MEAN) / STD


# ---------------------------------------------------------------- models
def encode(model: nn.Module, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Final-norm tokens [B,1+n,D] of the timm ViT; ``keep`` [B,n] selects the visible patches (MAE)."""
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2) + model.pos_embed[:, 1:]
    if keep is not None:
        t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
    cls = (model.cls_token + model.pos_embed[:, :1]).expand(t.shape[0], -1, -1)
    t = torch.cat([cls, t], dim=1)
    for blk in model.blocks:
        t = blk(t)
    return model.norm(t)


class MAEDecoder(nn.Module):
    def __init__(self, num_patches: int, patch_dim: int, width: int = 128, depth: int = 2, heads: int = 4):
        from timm.models.vision_transformer import Block

        super().__init__()
        self.embed = nn.Linear(ARCH.embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, 1 + num_patches, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pred = nn.Linear(width, patch_dim)

    def forward(self, tokens: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """tokens [B,1+v,D] (CLS + visible, in ``keep`` order); restore [B,N] = inverse permutation."""
        t = self.embed(tokens)
        b, n = restore.shape
        mask = self.mask_token.expand(b, n - (t.shape[1] - 1), -1)
        patches = torch.cat([t[:, 1:], mask], dim=1)
        patches = torch.gather(patches, 1, restore.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        t = torch.cat([t[:, :1], patches], dim=1) + self.pos
        for blk in self.blocks:
            t = blk(t)
        return self.pred(self.norm(t))[:, 1:]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B,3,H,W] -> [B,N,p*p*3] in row-major patch order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class Objective(nn.Module):
    """The trainable modules of one method and its loss on a uint8 batch."""

    def __init__(self, method: str, num_classes: int):
        super().__init__()
        self.method = method
        self.encoder = build_model(ARCH).train()
        if method == "supervised":
            self.classifier = nn.Linear(ARCH.embed_dim, num_classes)
        elif method == "contrastive":
            self.head = build_projection_head()
        else:
            n = ARCH.grid ** 2
            self.decoder = MAEDecoder(n, ARCH.patch_size ** 2 * 3)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The supervised classifier on a uint8 batch, as it is seen in training (no crop augmentation:
        see the module docstring)."""
        return self.classifier(encode(self.encoder, normalise(images.float() / 255.0))[:, 0])

    def loss(self, images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.method == "supervised":
            return F.cross_entropy(self.logits(images), labels, label_smoothing=0.1)
        x = images.float() / 255.0
        if self.method == "contrastive":
            views = [normalise(colour_jitter(random_resized_crop(x, g, (0.2, 1.0)), g)) for _ in range(2)]
            z = [F.normalize(self.head(encode(self.encoder, v)[:, 0]), dim=-1) for v in views]
            logits = z[0] @ z[1].t() / 0.2
            target = torch.arange(len(logits))
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        x = random_resized_crop(x, g, (0.35, 1.0))
        b, n = x.shape[0], ARCH.grid ** 2
        order = torch.argsort(torch.rand(b, n, generator=g), dim=1)
        keep = order[:, : n // 4]
        restore = torch.argsort(order, dim=1)
        pred = self.decoder(encode(self.encoder, normalise(x), keep), restore)
        target = patchify(x, ARCH.patch_size)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        masked = torch.ones(b, n)
        masked.scatter_(1, keep, 0.0)
        return (((pred - target) ** 2).mean(-1) * masked).sum() / masked.sum()

    def weights(self) -> dict[str, torch.Tensor]:
        """What the encoder plugin loads: the backbone, plus ``head.*`` for the contrastive model."""
        sd = {k: v for k, v in self.encoder.state_dict().items()}
        if self.method == "contrastive":
            sd.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


# ---------------------------------------------------------------- training
def train(method: str, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int, lr: float,
          seed: int, progress: bool = True) -> tuple[dict, float]:
    torch.manual_seed(seed)  # the initialisation (timm's init under this seed)
    model = Objective(method, num_classes=len(synthetic_objects.CLASSES))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos" not in n and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    g = torch.Generator().manual_seed(seed + 1)  # batches, crops, masks
    order, pos, last = torch.randperm(len(images), generator=g), 0, float("nan")
    from tqdm import tqdm

    bar = tqdm(range(steps), desc=f"pretrain {method}", disable=not progress, leave=False)
    for _ in bar:
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=g), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = model.loss(images[idx], labels[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = float(loss.detach())
        bar.set_postfix(loss=f"{last:.3f}")
    return model, last


@torch.no_grad()
def heldout_accuracy(model: Objective, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The supervised model's own classifier on images it never saw (how far its training got)."""
    model.eval()
    correct = sum(int((model.logits(images[i:i + 256]).argmax(1) == labels[i:i + 256]).sum())
                  for i in range(0, len(images), 256))
    return correct / len(images)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for <method>.safetensors and manifest.json")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=None,
                    help="steps for every method (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    ap.add_argument("--num-images", type=int, default=16384)
    ap.add_argument("--eval-images", type=int, default=1024,
                    help="held-out images (the next indices of the same data seed) for the supervised accuracy")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0, help="initialisation and augmentation seed")
    ap.add_argument("--data-seed", type=int, default=1, help="synthetic_parts generation seed of the images")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes results identical)")
    ap.add_argument("--render-workers", type=int, default=2, help="processes drawing the images")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    from safetensors.torch import save_file

    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    images, labels = render_images(a.num_images, a.data_seed, a.render_workers)
    render_s = time.time() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    manifest_path = a.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update({
        "command": "python pretrain/tiny.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "architecture": ARCH.describe(), "image_size": IMAGE_SIZE,
        "data": {"generator": "synthetic_parts kind objects", "seed": a.data_seed, "num_images": a.num_images,
                 "render_size": RENDER_SIZE, "render_seconds": round(render_s, 1)},
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": a.threads,
    })
    methods = manifest.setdefault("methods", {})
    for method in a.methods:
        steps = a.steps or DEFAULT_STEPS[method]
        t1 = time.time()
        model, loss = train(method, images, labels, steps, a.batch_size, a.lr, a.seed, not a.quiet)
        weights = model.weights()
        path = a.out / f"{method}.safetensors"
        # one metadata entry (a JSON string): safetensors writes several entries in a random order
        record = {"method": method, "steps": steps, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed,
                  "data_seed": a.data_seed, "num_images": a.num_images}
        save_file(weights, str(path), metadata={"partbench": json.dumps(record, sort_keys=True)})
        methods[method] = {"file": path.name, "sha256": sha256(path), "steps": steps, "batch_size": a.batch_size,
                           "lr": a.lr, "final_loss": round(loss, 4), "seconds": round(time.time() - t1, 1)}
        held = ""
        if method == "supervised" and a.eval_images:
            heldout = render_images(a.eval_images, a.data_seed, a.render_workers, start=a.num_images)
            acc = heldout_accuracy(model, *heldout)
            methods[method]["heldout_accuracy"] = {"images": a.eval_images, "top1": round(acc, 4)}
            held = f", held-out accuracy {100 * acc:.1f}% ({a.eval_images} images, chance 12.5%)"
        print(f"{method}: {steps} steps, final loss {loss:.4f}{held}, {time.time() - t1:.0f} s -> {path}", flush=True)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
