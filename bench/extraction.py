"""Feature-extraction throughput: bare model, data loader, end-to-end engine, K encoders in one pass.

The bench writes a realistic part dataset in the CUB-200-2011 format (JPEGs of CUB/COCO-like sizes,
500x375 and 640x480, with four part keypoints each; read back by the real ``cub_parts`` loader, official
crop rule) and measures, in one run:

  bare        the encoder alone on pre-made normalised tensors (same model, batch and precision)
  loader      decode -> crop -> resize -> uint8 batches only, with 0, 1 and 2 worker processes
  end-to-end  the feature engine: decode -> crop -> resize -> normalise -> encode -> cache (fresh cache)
  K encoders  K encoders fed by one pass over the data vs K separate passes (fresh caches)
  threads     end-to-end with the harness's default main-process threads vs 1 and all cores

Defaults match the CPU targets: a ViT-S/16-sized random encoder for the pipeline efficiency and the
decode-bound ``pixels`` encoder for the loader and K-encoder figures (the situation of a ViT-B on a GPU).
On a GPU: ``--device cuda --model vit_b --precision bf16 --workers 16 --decode-bound-model vit_b``.

Last line exactly: ``pipeline_efficiency=<end-to-end / bare> multi_encoder_speedup=<K separate / one pass>
loader_scaling=<2 workers / 0 workers> threads_default_vs_best=<best of 1 and all cores / default>``
(the line before it says whether the default is within 10 % of the best).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = {  # random ViTs of the standard sizes (timm init, seeded)
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12),
}
SIZES = [(500, 375), (640, 480), (375, 500), (480, 640)]


def write_dataset(root: Path, n_images: int, seed: int = 0) -> Path:
    """CUB_200_2011 text files + JPEGs: smooth shapes and texture (realistic JPEG decode cost)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "images" / "001.Bench").mkdir(parents=True, exist_ok=True)
    names = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]
    images, locs, split = [], [], []
    for i in range(1, n_images + 1):
        w, h = SIZES[i % len(SIZES)]
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 160), y0 + rng.integers(20, 160)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(1))
        noise = rng.normal(0, 6, (h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8))
        rel = f"001.Bench/b_{i:05d}.jpg"
        img.save(root / "images" / rel, quality=90)
        images.append(f"{i} {rel}")
        split.append(f"{i} {i % 2}")
        # four parts (right eye 11, right leg 12, left wing 9, tail 14) 90-200 px apart: all kept
        cx, cy = w / 2 + rng.uniform(-40, 40), h / 2 + rng.uniform(-30, 30)
        offsets = {11: (-100, -80), 12: (20, 110), 9: (90, -40), 14: (-130, 60)}
        for pid in range(1, 16):
            if pid in offsets:
                dx, dy = offsets[pid]
                locs.append(f"{i} {pid} {cx + dx + rng.uniform(-15, 15):.1f} {cy + dy + rng.uniform(-15, 15):.1f} 1")
            else:
                locs.append(f"{i} {pid} 0.0 0.0 0")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "parts" / "parts.txt").write_text("\n".join(f"{k + 1} {n}" for k, n in enumerate(names)) + "\n")
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(f"{i} 1" for i in range(1, n_images + 1)) + "\n")
    (root / "classes.txt").write_text("1 001.Bench\n")
    return root


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (seconds): the figure least disturbed by a noisy machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600,
                    help="source images (4 part crops each) of the loader and K-encoder figures")
    ap.add_argument("--model-images", type=int, default=48,
                    help="source images (4 part crops each) of the bare vs end-to-end model figure")
    ap.add_argument("--model", choices=sorted(MODELS), default="vit_s", help="encoder of the pipeline efficiency")
    ap.add_argument("--decode-bound-model", default="pixels",
                    help="encoder of the loader and K-encoder figures: 'pixels' or a --model name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="end-to-end workers (default: the engine's choice)")
    ap.add_argument("--k", type=int, default=4, help="encoders of the one-pass comparison")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of each figure (the best is kept)")
    ap.add_argument("--tmp", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    from harness.api import FeatureCache
    from harness.api import Executor
    from harness.api import FeatureEngine, available_cores, default_threads, default_workers, load_batches
    from partbench_plugins.datasets.cub import CubParts
    from partbench_plugins.encoders.baselines import Pixels, RandomViT

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-extraction-"))
    big = CubParts("cub", root=str(write_dataset(tmp / "big" / "CUB_200_2011", args.images)),
                   keypoints=[11, 12, 9, 14], check_images=False)
    small = CubParts("cub", root=str(write_dataset(tmp / "small" / "CUB_200_2011", args.model_images, seed=1)),
                     keypoints=[11, 12, 9, 14], check_images=False)
    samples, n_small = big.load("all"), len(small.load("all"))
    n = len(samples)
    workers = default_workers(args.device) if args.workers is None else args.workers
    print(f"datasets: {args.images} and {args.model_images} JPEGs (500x375 .. 640x480), {n} and {n_small} part "
          f"crops -> 224x224; device {args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
          f"end-to-end workers {workers}")

    def make(model: str, seed: int = 0):
        if model == "pixels":
            return Pixels(f"pixels{seed}", grid=4 + seed, batch_size=args.batch_size)
        return RandomViT(f"{model}_{seed}", **MODELS[model], seed=seed, batch_size=args.batch_size,
                         precision=args.precision)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def extract(ds, encoders, reps, cache_dir, w):
        shutil.rmtree(cache_dir, ignore_errors=True)
        eng = FeatureEngine(FeatureCache(cache_dir), args.device, workers=w, show_progress=False)
        eng.extract(ds, "all", "resize:224", [(e, reps) for e in encoders])
        sync()

    # -- pipeline efficiency: bare model vs end-to-end, same model/batch/precision ----------------------
    enc = make(args.model)
    ex = Executor(enc, args.device)
    ex.ensure_loaded()
    x = torch.randn(args.batch_size, 3, 224, 224).to(args.device)

    def bare():
        for s in range(0, n_small, args.batch_size):
            ex(x[: min(args.batch_size, n_small - s)], ["cls", "mean_patch"])
        sync()

    bare()  # warm-up
    t_bare = best_of(bare, args.repeats)
    extract(small, [enc], ["cls", "mean_patch"], tmp / "cache-e2e", workers)  # warm-up (page cache, workers)
    t_e2e = best_of(lambda: extract(small, [enc], ["cls", "mean_patch"], tmp / "cache-e2e", workers), args.repeats)
    print(f"{args.model} {args.precision}: bare model {n_small / t_bare:8.1f} img/s   "
          f"end-to-end {n_small / t_e2e:8.1f} img/s")

    # -- loader only ----------------------------------------------------------------------------------
    loader = {}
    for w in (0, 1, 2):
        def run_loader(w=w):
            for _ in load_batches(samples, "resize:224", range(n), args.batch_size, w):
                pass
        run_loader()
        loader[w] = n / best_of(run_loader, args.repeats)
    print("loader only: " + "   ".join(f"{w} workers {v:8.1f} img/s" for w, v in loader.items()))

    # -- K encoders: one pass vs K separate passes (decode-bound encoder) -----------------------------
    encs = [make(args.decode_bound_model, seed=k) for k in range(args.k)]
    reps = ["cls"] if args.decode_bound_model == "pixels" else ["cls", "mean_patch"]
    for e in encs:
        Executor(e, args.device).ensure_loaded()
    t_one = best_of(lambda: extract(big, encs, reps, tmp / "cache-one", workers), args.repeats)

    def separate():
        for k, e in enumerate(encs):
            extract(big, [e], reps, tmp / f"cache-sep{k}", workers)

    t_sep = best_of(separate, args.repeats)
    print(f"{args.k} x {args.decode_bound_model}: one pass {t_one:6.2f} s   {args.k} separate passes {t_sep:6.2f} s")

    # -- threads of the main process: the harness's default vs 1 and all cores (same end-to-end pass) ---
    cores, before = available_cores(), torch.get_num_threads()
    default = default_threads(args.device, workers)
    rate = {}
    for t in dict.fromkeys([default, 1, cores]):
        torch.set_num_threads(t)
        extract(small, [enc], ["cls", "mean_patch"], tmp / "cache-threads", workers)  # warm-up at t threads
        rate[t] = n_small / best_of(lambda: extract(small, [enc], ["cls", "mean_patch"], tmp / "cache-threads",
                                                    workers), args.repeats)
    torch.set_num_threads(before)
    best = max(rate[1], rate[cores])
    print("threads (end-to-end img/s): " + "   ".join(f"{t}{' (default)' if t == default else ''} {v:8.1f}"
                                                     for t, v in rate.items())
          + f"; default {'within' if rate[default] >= 0.9 * best else 'NOT within'} 10 % of the best of 1 and "
            f"{cores} ({100 * (1 - rate[default] / best):+.1f} % slower)")
    if not args.tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pipeline_efficiency={t_bare / t_e2e:.3f} multi_encoder_speedup={t_sep / t_one:.3f} "
          f"loader_scaling={loader[2] / loader[0]:.3f} threads_default_vs_best={best / rate[default]:.3f}")


if __name__ == "__main__":
    main()
