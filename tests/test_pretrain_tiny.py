"""pretrain/tiny.py is deterministic and still trains what it trained: a shortened schedule run twice
(separate processes, different numbers of drawing processes) writes bit-identical weights, and those weights
match a stored reference (tests/data/tiny_short_schedule.json) within a tolerance derived from the arithmetic,
on any CPU.

Why not checksums: on another CPU instruction set (or with another kernel path forced on this one) some float32
sums round differently. After rounding to fp16 almost every element is unchanged; an element whose gradient is
rounding noise (the key part of each ``qkv.bias``: softmax ignores a key bias, so its true gradient is zero) or
tiny enough to change sign moves by up to one AdamW step (about lr) the other way per step. Measured between
this machine's default kernels and ATEN_CPU_CAPABILITY=avx2 / default: about 4e-4 of the elements differ by
more than one fp16 ulp, by at most 1.3e-4 (lr 2e-4, 2 steps). A real change (another seed, learning rate,
data or initialisation) moves 80-99 % of them. So the test compares, on a seeded sample of every tensor's
elements (stored with the tensors' names, shapes and L2 norms):
- per element, |run - ref| <= one fp16 ulp + two runs' largest possible AdamW moves (MOVE_BOUND);
- the fraction of the model's elements that differ by more than one fp16 ulp (estimated from the sample,
  each tensor weighted by its size) is at most 1 %;
- every tensor's L2 norm, within what the per-element bound allows (catches a change to unsampled elements
  only if it is large: a tensor zeroed, rescaled or reinitialised at another scale);
- names and shapes exactly.

Regenerate the reference (after a deliberate change to pretrain/tiny.py, its data or its defaults; it reruns
the short schedule, about 20 s):

    python tests/test_pretrain_tiny.py --write-reference
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "data" / "tiny_short_schedule.json"
ARGS = ["--steps", "2", "--num-images", "48", "--eval-images", "16", "--batch-size", "16"]
LR, BETAS, STEPS = 2e-4, (0.9, 0.95), 2  # pretrain/tiny.py's defaults and ARGS' steps: the tolerance below
METHODS = ("supervised", "contrastive", "mim")
SAMPLE_PER_MODEL = 2048  # sampled elements per model (each tensor gets its share, at least MIN_PER_TENSOR)
MIN_PER_TENSOR = 4
MAX_MOVED_FRACTION = 0.01  # of a model's elements, allowed to differ by more than one fp16 ulp
FP16_ULP_REL, FP16_MIN_ULP = 2.0 ** -10, 2.0 ** -24  # ulp(x) = 2^(floor(log2|x|) - 10), subnormals 2^-24


def adam_step_bound(t: int, betas: tuple[float, float] = BETAS) -> float:
    """The largest |m_hat / sqrt(v_hat)| at step t over all gradient sequences (Cauchy-Schwarz): one AdamW
    step moves a weight by at most lr times this (1.0 at step 1, 1.0003 at step 2 for betas 0.9/0.95)."""
    b1, b2 = betas
    a = [(1 - b1) * b1 ** (t - i) / (1 - b1 ** t) for i in range(1, t + 1)]
    b = [(1 - b2) * b2 ** (t - i) / (1 - b2 ** t) for i in range(1, t + 1)]
    return math.sqrt(sum(ai * ai / bi for ai, bi in zip(a, b)))


# Two runs whose gradients differ move one weight apart by at most two full steps per step (the weight decay
# term, lr * 0.05 * w, differs by a negligible lr * 0.05 * |difference|). The schedule's lr is LR at both steps
# (warmup of one step, then cosine from its start).
MOVE_BOUND = 2 * LR * sum(adam_step_bound(t) for t in range(1, STEPS + 1))


def fp16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of fp16 numbers at |x| (float64)."""
    x = x.double().abs()
    return torch.where(x >= 2.0 ** -14, torch.exp2(torch.floor(torch.log2(x.clamp(min=2.0 ** -14))) - 10),
                       torch.full_like(x, FP16_MIN_ULP))


def _pretrain(out: Path, render_workers: int) -> None:
    cmd = [sys.executable, str(ROOT / "pretrain" / "tiny.py"), "--out", str(out), *ARGS,
           "--render-workers", str(render_workers), "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def _weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {m: load_file(str(folder / f"{m}.safetensors")) for m in METHODS}


def make_reference(folder: Path, seed: int = 0) -> dict:
    """Names, shapes, L2 norms and a seeded sample (flat index, fp16 value) of every tensor of the three models."""
    rng = np.random.default_rng(seed)
    models = {}
    for method, sd in _weights(folder).items():
        total = sum(t.numel() for t in sd.values())
        tensors = {}
        for name in sorted(sd):
            flat = sd[name].reshape(-1)
            assert flat.dtype == torch.float16, f"{method} {name}: {flat.dtype}, expected float16"
            k = min(flat.numel(), max(MIN_PER_TENSOR, round(SAMPLE_PER_MODEL * flat.numel() / total)))
            index = np.sort(rng.choice(flat.numel(), size=k, replace=False))
            values = [float(str(v)) for v in flat[torch.from_numpy(index)].numpy()]
            # numpy's shortest fp16 repr round-trips through the JSON float back to the same fp16 number
            assert torch.equal(torch.tensor(values).to(torch.float16), flat[torch.from_numpy(index)])
            tensors[name] = {"shape": list(sd[name].shape), "norm": float(flat.double().norm()),
                             "index": index.tolist(), "value": values}
        models[method] = tensors
    return {"args": ARGS, "made_on": {"torch": torch.__version__,
                                      "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "regenerate": "python tests/test_pretrain_tiny.py --write-reference", "sample_seed": seed,
            "models": models}


def differences(folder: Path, reference: dict) -> list[str]:
    """Every way the weights in ``folder`` fall outside the reference's tolerance (empty: they agree)."""
    problems = []
    for method, sd in _weights(folder).items():
        ref = reference["models"][method]
        if sorted(sd) != sorted(ref):
            problems.append(f"{method}: tensors {sorted(set(sd) ^ set(ref))} are in one file only")
            continue
        moved = 0.0  # estimated number of the model's elements that differ by more than one fp16 ulp
        for name, r in ref.items():
            t = sd[name]
            if list(t.shape) != r["shape"]:
                problems.append(f"{method} {name}: shape {list(t.shape)}, reference {r['shape']}")
                continue
            flat = t.reshape(-1).double()
            run = flat[torch.tensor(r["index"], dtype=torch.long)]
            want = torch.tensor(r["value"], dtype=torch.float64)
            ulp = torch.maximum(fp16_ulp(run), fp16_ulp(want))
            diff = (run - want).abs()
            over = diff > ulp + MOVE_BOUND
            if over.any():
                i = int(over.nonzero()[0])
                problems.append(f"{method} {name}: {int(over.sum())} sampled elements beyond one ulp + "
                                f"{MOVE_BOUND:.3g}, e.g. [{r['index'][i]}] {float(run[i])!r} vs {float(want[i])!r}")
            # weighted by the tensor's size: small tensors are over-sampled (MIN_PER_TENSOR)
            moved += float((diff > ulp).double().mean()) * flat.numel()
            # ||run - ref|| <= ||rounding|| + ||moves|| <= 2^-10 max norm + sqrt(n) * (2^-24 + bound)
            n = flat.numel()
            norm = float(flat.norm())
            tol = FP16_ULP_REL * max(norm, r["norm"]) + math.sqrt(n) * (FP16_MIN_ULP + MOVE_BOUND)
            if abs(norm - r["norm"]) > tol:
                problems.append(f"{method} {name}: L2 norm {norm:.6g}, reference {r['norm']:.6g} (tolerance {tol:.3g})")
        total = sum(math.prod(r["shape"]) for r in ref.values())
        if moved > MAX_MOVED_FRACTION * total:
            problems.append(f"{method}: an estimated {moved / total:.1%} of the elements differ by more than one "
                            f"fp16 ulp (from the sample; at most {MAX_MOVED_FRACTION:.0%} allowed)")
    return problems


@pytest.mark.slow
def test_short_schedule_is_bit_identical_and_matches_the_reference(tmp_path):
    _pretrain(tmp_path / "a", render_workers=1)
    _pretrain(tmp_path / "b", render_workers=2)
    for m in METHODS:
        assert (tmp_path / "a" / f"{m}.safetensors").read_bytes() == (tmp_path / "b" / f"{m}.safetensors").read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["threads"] == 2 and all(manifest["methods"][m]["lr"] == LR for m in METHODS)
    reference = json.loads(REFERENCE.read_text())
    assert reference["args"] == ARGS, f"{REFERENCE.name} was made with other arguments: {reference['regenerate']}"
    problems = differences(tmp_path / "a", reference)
    assert not problems, "\n".join(problems[:20])


def test_move_bound_is_what_torch_adamw_can_move_a_weight():
    """The bound is attained by torch's AdamW (the gradients that maximise step 2's |m_hat / sqrt(v_hat)|)
    and never exceeded by random gradient sequences."""
    b1, b2 = BETAS
    # step STEPS's maximiser: g_i proportional to a_i / b_i; with two steps, step 1 moves lr whatever g_1 is
    assert STEPS == 2
    worst = [(b1 / b2) ** (STEPS - i) for i in range(1, STEPS + 1)]

    def moved(grads):
        p = torch.zeros(len(grads[0]), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.AdamW([p], lr=LR, betas=BETAS, eps=1e-30, weight_decay=0.0)
        for g in grads:
            p.grad = torch.as_tensor(g, dtype=torch.float64)
            opt.step()
        return p.detach().abs()

    assert float(moved([[g] for g in worst])[0]) == pytest.approx(MOVE_BOUND / 2, rel=1e-12)
    g = torch.Generator().manual_seed(0)
    assert float(moved(torch.randn(STEPS, 10000, generator=g, dtype=torch.float64)).max()) <= MOVE_BOUND / 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Rewrite tests/data/tiny_short_schedule.json from a fresh short run.")
    ap.add_argument("--write-reference", action="store_true", required=True)
    ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _pretrain(Path(tmp), render_workers=2)
        reference = make_reference(Path(tmp))
        assert differences(Path(tmp), reference) == []
    models = reference.pop("models")
    # one line per tensor: a readable diff when the reference is regenerated
    body = json.dumps(reference, indent=1)[:-2] + ',\n "models": {\n' + ",\n".join(
        f' "{m}": {{\n' + ",\n".join(f"  {json.dumps(n)}: {json.dumps(t)}" for n, t in tensors.items()) + "\n }"
        for m, tensors in models.items()) + "\n }\n}\n"
    assert json.loads(body)["models"] == models
    REFERENCE.write_text(body)
    print(f"wrote {REFERENCE.relative_to(ROOT)}: {sum(len(t['index']) for ts in models.values() for t in ts.values())} "
          f"sampled elements of {len(models)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
