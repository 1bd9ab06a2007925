"""Cost of the two linear_seg protocols: encoder forwards and cache size, measured and extrapolated.

Runs both protocols for real (the linear_seg task's own code) on a small synthetic part-segmentation set
(the synthetic_parts generator's mmseg tree) with a tiny random ViT at a reduced schedule, counts the
encoder forwards each needs, and extrapolates the counts to ADE20K at the paper schedule:

  paper  every training sample is an augmented crop encoded again: iterations x batch forwards, plus one
         forward per validation window
  fast   every training window (two per 4:3 ADE image at 2048x512 / crop 512 / stride 341; x2 with flip)
         and every validation window is encoded once, whatever the schedule

ADE20K: 20,210 training and 2,000 validation images, 160k iterations of 16; a 4:3 image resized to
683x512 has two 512 windows (stride 341); a ViT-B/16 window caches 1 + 32*32 tokens x 4 blocks x 768 x 2
bytes. The two mIoUs are the synthetic set's at the reduced schedule (the same for both protocols).

Last line exactly: ``forward_ratio=<paper / fast forwards at the paper schedule> cache_gb_ade=<float>
miou_paper=<float> miou_fast=<float>``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ADE = {"train": 20210, "val": 2000, "windows_per_image": 2, "iterations": 160000, "batch": 16,
       "tokens": 1 + 32 * 32, "channels": 4 * 768}


def synthetic_seg(root: Path, split: str, crop: int, scale: tuple[int, int]):
    """The synthetic generator's seg/parts tree (mmseg layout) as SegSamples."""
    from harness.api import SegSamples

    seg = root / "seg" / "parts"
    classes = [c.strip() for c in (seg / "classes.txt").read_text().splitlines() if c.strip()][1:]
    imgs = sorted((seg / "img_dir" / split).glob("*.jpg"))
    return SegSamples([p.stem for p in imgs], classes, {"split": split}, [str(p) for p in imgs],
                      [str(seg / "ann_dir" / split / f"{p.stem}.png") for p in imgs],
                      defaults={"scale": list(scale), "crop": [crop, crop], "stride": [crop * 2 // 3] * 2},
                      layout={"data_root": str(seg), "img_path": f"img_dir/{split}", "seg_map_path": f"ann_dir/{split}",
                              "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": True})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48, help="synthetic images (about half train, half val)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=300, help="reduced schedule of both protocols")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--flip", action="store_true", help="fast protocol: also cache flipped training windows")
    args = ap.parse_args(argv)

    from harness.api import validate_options
    from harness.testing import FakeContext, StubDataset
    from partbench_plugins.datasets.synthetic import ensure
    from partbench_plugins.encoders.baselines import RandomViT
    from partbench_plugins.tasks.linear_seg import LinearSeg

    tmp = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    root = ensure(tmp / "synthetic", args.images, args.image_size, 0)
    crop, scale = 64, (2 * args.image_size, args.image_size)
    ds = StubDataset("synthetic_seg", {s: synthetic_seg(root, s, crop, scale) for s in ("train", "val")})
    blocks = [0, 1, 2, 3]
    common = dict(iterations=args.iterations, batch_size=args.batch, warmup=args.iterations // 10, blocks=blocks,
                  lr=1e-3)

    def run(protocol: str, **extra):
        enc = RandomViT("tiny", embed_dim=96, depth=4, num_heads=3, img_size=64, batch_size=32)
        enc.plugin_name = "random_vit"
        ctx = FakeContext(enc, ds, out_dir=tmp / protocol)
        (tmp / protocol).mkdir(exist_ok=True)
        task = LinearSeg("seg", **validate_options(LinearSeg.option_schema(), {"protocol": protocol, **common, **extra},
                                                   "bench"))
        t0 = time.perf_counter()
        res = task.run(ctx)
        return res, ctx.forwards, time.perf_counter() - t0

    fast, fast_forwards, fast_s = run("fast", flip=args.flip)
    g = fast["details"]["geometry"]
    paper, paper_forwards, paper_s = run("paper", workers=0)
    counted = paper["details"]["worker_forwards"]
    assert counted["train"] == args.iterations * args.batch, counted  # one encode per training sample
    n_train, n_val = len(ds.given["train"]), len(ds.given["val"])
    print(f"synthetic set: {n_train} train / {n_val} val images of {args.image_size} px; scale {scale}, crop {crop}; "
          f"{g['train_windows']} training windows{' (with flips)' if args.flip else ''}, {g['test_windows']} "
          f"validation windows; {args.iterations} iterations x {args.batch}")
    print(f"  fast : {fast_forwards:8d} encoder forwards ({fast_forwards / (args.iterations * args.batch):.3f} per "
          f"training sample), {fast_s:6.1f} s, mIoU {fast['metrics']['mIoU']:.2f}")
    print(f"  paper: {paper_forwards:8d} encoder forwards ({counted['train']} training crops, {counted['val']} "
          f"validation windows), "
          f"{paper_s:6.1f} s, mIoU {paper['metrics']['mIoU']:.2f}")
    flips = 2 if args.flip else 1
    fast_ade = ADE["train"] * ADE["windows_per_image"] * flips + ADE["val"] * ADE["windows_per_image"]
    paper_ade = ADE["iterations"] * ADE["batch"] + ADE["val"] * ADE["windows_per_image"]
    cache_gb = fast_ade * ADE["tokens"] * ADE["channels"] * 2 / 1e9
    print(f"ADE20K at the paper schedule (ViT-B/16, 4 blocks): paper {paper_ade:,} forwards; fast {fast_ade:,} "
          f"forwards and a {cache_gb:.0f} GB fp16 window cache per encoder (stream mode: no cache, "
          f"{ADE['train']:,} forwards per epoch)")
    print(f"forward_ratio={paper_ade / fast_ade:.3f} cache_gb_ade={cache_gb:.3f} "
          f"miou_paper={paper['metrics']['mIoU']:.3f} miou_fast={fast['metrics']['mIoU']:.3f}")


if __name__ == "__main__":
    main()
