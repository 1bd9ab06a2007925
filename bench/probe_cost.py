"""Encoder forwards of a probe: our cached pipeline versus re-encoding every epoch (official code).

Runs the real runner twice on the synthetic part dataset with a small random ViT, same protocol
(default 90 epochs, test after every epoch, held-out selection off so both compute the same thing):

  cached    feature_source: cached   — every crop is encoded once, into the feature cache
  reencode  feature_source: reencode — every training and test crop is encoded again in every epoch,
                                        as ``patch_lincls.py`` does

It checks that both report the same accuracies, counts the forwards the runner recorded, and times
both. A third run (cached, the default protocol with the held-out selection run) shows that the
selection run adds no forwards. ``--train-size/--test-size`` extrapolate the counts to a dataset of
that size (the counts are exact functions of the sizes; the seconds are measured here only).

Last line: ``forward_ratio=<float> cached_s=<float> reencode_s=<float>``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def curves(tmp: Path, name: str, res: dict) -> list[dict]:
    import csv

    with open(tmp / name / res["artifacts"][0]) as f:
        return list(csv.DictReader(f))


def run(spec_text: str, tmp: Path, name: str, cache: Path) -> tuple[dict, float]:
    from harness.api import run_spec

    spec = tmp / f"{name}.yaml"
    spec.write_text(textwrap.dedent(spec_text))
    t0 = time.perf_counter()
    res = run_spec(spec, tmp / name, cache_dir=cache)
    seconds = time.perf_counter() - t0
    bad = [r for r in res if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"{name}: {bad[0]['unit']} failed: {bad[0]['error']}")
    return res[0], seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["linear_probe", "attentive_probe"], default="linear_probe")
    ap.add_argument("--epochs", type=int, default=90, help="probe epochs (protocol: 90)")
    ap.add_argument("--num-images", type=int, default=32, help="synthetic images (4 part crops each at most)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=None, help="extrapolate the forward counts to this many "
                    "training crops (e.g. CUB part classification)")
    ap.add_argument("--test-size", type=int, default=None, help="... and this many test crops")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # plugins of other tasks that are not installed

    with tempfile.TemporaryDirectory(prefix="probe_cost-") as d:
        tmp = Path(d)
        heads = 4 if args.embed_dim % 4 == 0 else 1
        common = f"""
            encoders:
              vit: {{plugin: random_vit, options: {{embed_dim: {args.embed_dim}, depth: {args.depth},
                                                   num_heads: {3 if args.embed_dim % 3 == 0 else 1}, batch_size: 32}}}}
            datasets:
              parts: {{plugin: synthetic_parts, options: {{root: {tmp / 'data'}, num_images: {args.num_images},
                                                          image_size: {args.image_size}}}}}
            """
        task_opts = f"epochs: {args.epochs}, batch_size: 1024" + (f", num_heads: {heads}"
                                                                    if args.task == "attentive_probe" else "")

        def spec(extra: str) -> str:
            return common + f"""
            tasks:
              probe: {{plugin: {args.task}, options: {{{task_opts}, {extra}}}}}
            """

        # warm-up: generate the synthetic data and import everything outside the timed runs
        run(spec("epochs: 1, heldout_fraction: 0"), tmp, "warmup", tmp / "cache-warmup")
        cached, cached_s = run(spec("heldout_fraction: 0"), tmp, "cached", tmp / "cache-a")
        reenc, reencode_s = run(spec("heldout_fraction: 0, feature_source: reencode"), tmp, "reencode",
                                tmp / "cache-b")
        default, default_s = run(spec("heldout_fraction: 0.1"), tmp, "default", tmp / "cache-c")
        ca, rb = curves(tmp, "cached", cached), curves(tmp, "reencode", reenc)

    same = cached["metrics"] == reenc["metrics"] and cached["details"]["per_lr"] == reenc["details"]["per_lr"]
    n_tr, n_te = cached["details"]["n"]["train"], cached["details"]["n"]["test"]
    f_cached, f_reenc, f_default = cached["forwards"], reenc["forwards"], default["forwards"]
    print(f"task {args.task}, {args.epochs} epochs, random_vit d={args.embed_dim} depth={args.depth}, "
          f"synthetic_parts: {n_tr} train + {n_te} test crops")
    print(f"cached:   {f_cached:6d} forwards  {cached_s:8.2f} s  metrics {json.dumps(cached['metrics'])}")
    print(f"reencode: {f_reenc:6d} forwards  {reencode_s:8.2f} s  metrics {json.dumps(reenc['metrics'])}")
    print(f"default protocol (cached + held-out selection run): {f_default} forwards, {default_s:.2f} s")
    loss_diff = max(abs(float(a["train_loss"]) - float(b["train_loss"])) for a, b in zip(ca, rb))
    acc_diff = max(abs(float(a["test_top1"]) - float(b["test_top1"])) for a, b in zip(ca, rb))
    print(f"cached vs reencode: same reported accuracies {same}; over all {len(ca)} epochs max |train loss "
          f"difference| {loss_diff:.2e}, max |test top-1 difference| {acc_diff:.2f}")
    if not same or len(ca) != len(rb) or acc_diff > 0:
        raise SystemExit("cached and re-encoded training disagree")
    # exact accounting (the reencode run also spends 2 forwards learning the feature width)
    assert f_cached == n_tr + n_te and f_reenc == args.epochs * (n_tr + n_te) + 2, (f_cached, f_reenc)
    if args.train_size or args.test_size:
        tr, te = args.train_size or n_tr, args.test_size or n_te
        per_fwd = (reencode_s - cached_s) / max(1, f_reenc - f_cached)
        print(f"extrapolated to {tr} train + {te} test crops: cached {tr + te} forwards, official "
              f"{args.epochs * (tr + te)} forwards (ratio {args.epochs * (tr + te) / (tr + te):.1f}); "
              f"~{per_fwd * args.epochs * (tr + te) / 3600:.2f} h of re-encoding with this encoder here")
    print(f"forward_ratio={f_reenc / f_cached:.3f} cached_s={cached_s:.3f} reencode_s={reencode_s:.3f}")


if __name__ == "__main__":
    main()
