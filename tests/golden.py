"""Golden outputs of the built-in encoders and tasks: "change a plugin's output, bump its version".

Every built-in encoder and task plugin has a case here: how it is built and run on a tiny fixed input. Its
outputs, reduced to a small summary (shape, mean, std, min, max and a seeded sample of values per encoder
output; metrics and a few key numbers per task), are checked in as ``tests/golden/<kind>s/<name>.json``
together with the plugin's ``version`` and the core's ``CORE_VERSION`` they were made with.
``tests/test_golden.py`` compares the plugins of the working tree with those files.

    python tests/golden.py --check [NAME ...]      # compare with the golden files, print what differs
    python tests/golden.py --update NAME [NAME ...]  # regenerate these golden files
    python tests/golden.py --update-all

``--update`` refuses to overwrite a golden file whose outputs changed while the plugin's version (and the
core's) did not: bump the plugin's ``version`` first. Cases whose inputs changed are regenerated without a
bump: each file records a fingerprint of what makes its inputs (the cases' code here, the builder modules of
tests/ they import, the versions of numpy, timm, open_clip and pillow). NAME is a plugin name, or
``encoder:NAME`` / ``task:NAME`` where an encoder and a task share it.

Inputs are the same on every machine: every random value comes from numpy's PCG64 generator (torch's
``randn`` is not: its AVX2 and scalar kernels differ in the last bits), and the checkpoints are written from
those values in the official layouts (tests/_paper_files.py, tests/_beyond_files.py). Outputs then differ
between machines only by floating-point rounding (other kernels, other summation orders), which the
tolerances below cover with a wide margin while real changes of the computation exceed them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dis
import functools
import hashlib
import inspect
import json
import math
import platform
import re
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the builders next to this file (run as a script or imported by a test)
    sys.path.insert(0, str(HERE))

GOLDEN_DIR = HERE / "golden"
KINDS = ("encoder", "task")
SAMPLES = 32  # values kept per encoder output (plus shape and summary statistics)

# -- tolerances -----------------------------------------------------------------------------------------------
# Encoder outputs (fp32 forwards of width 32-192, depth 2-4, values O(1)) differ between machines only by
# rounding. Measured over the full output tensors of every case, forcing the other kernel paths of one
# machine (ATEN_CPU_CAPABILITY=avx2 with MKL_CBWR=COMPATIBLE and ONEDNN_MAX_CPU_ISA=AVX2, and
# ATEN_CPU_CAPABILITY=default, against AVX-512): |now - golden| / (1 + |golden|) <= 4.6e-6, median 1e-7.
# |now - golden| <= ATOL + RTOL * |golden| with 3e-5 keeps that rounding below 15 % of the tolerance, while the
# smallest real changes tried exceed it on a large share of the values: swapping exact and tanh GELU on 28-73 %
# of those of the checkpoint encoders (6 % for tiny_pretrained), a LayerNorm eps of 1e-5 instead of 1e-6 on
# 90-100 % of those of the "small_embeddings" cases. With SAMPLES values per output and several outputs and
# cases per plugin, such a change cannot go unseen (docs/plugins.md, "Versions").
ENCODER_ATOL = ENCODER_RTOL = 3e-5
# Task metrics are percentages of discrete decisions (a class, a rank, an OKS threshold) on fixtures built so
# that no decision is near a tie: they are identical on every machine unless the computation changed; 1e-3
# only absorbs the printing of rounded numbers.
METRIC_ATOL = 1e-3
# Continuous task details (losses, similarities): rounding of a few fp32 training steps, ~1e-6 relative.
DETAIL_ATOL, DETAIL_RTOL = 1e-6, 1e-4


# ==============================================================================================================
# deterministic inputs
# ==============================================================================================================
def normal(rng: np.random.Generator, *shape, std: float = 1.0) -> torch.Tensor:
    """float32 N(0, std^2) values from numpy's generator: the same bits on every machine."""
    return torch.from_numpy(np.asarray(rng.standard_normal(shape, dtype=np.float32) * np.float32(std)))


def image_batch(seed: int, n: int, h: int, w: int) -> torch.Tensor:
    """A normalised input batch [n, 3, h, w]."""
    return normal(np.random.default_rng(seed), n, 3, h, w)


def reseed_(state: dict, seed: int) -> dict:
    """Overwrite every floating tensor of a state dict, in place, with values drawn from ``seed`` alone (not
    from a library's initialisation, which may change between versions): LayerNorm-like weights 1 + N(0, 0.1),
    other vectors N(0, 0.1), matrices and convolutions N(0, 1/fan_in)."""
    rng = np.random.default_rng(seed)
    for name, t in state.items():
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
            continue
        if t.dim() <= 1:
            v = normal(rng, *t.shape, std=0.1)
            if name.endswith("weight") or name.endswith(".gamma"):
                v = v + 1.0
        else:
            fan_in = math.prod(t.shape[1:]) if t.dim() == 4 else t.shape[-1]
            v = normal(rng, *t.shape, std=fan_in ** -0.5)
        with torch.no_grad():
            t.copy_(v.to(t.dtype))
    return state


def fingerprint(*objs) -> str:
    """sha256 of JSON-able objects (sources, versions)."""
    return hashlib.sha256(json.dumps(objs, sort_keys=True).encode()).hexdigest()


def case_code(obj, seen: set | None = None) -> list[str]:
    """The source of a case function and of everything of this file it uses (functions, classes, literal
    constants): part of the cases' input fingerprint (``case_inputs``)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    out = [inspect.getsource(obj)]
    members = [obj] if inspect.isfunction(obj) else [getattr(v, "__func__", v) for v in vars(obj).values()]
    stack = [m.__code__ for m in members if hasattr(m, "__code__")]
    names: set[str] = set()
    while stack:
        code = stack.pop()
        names |= {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
        stack += [c for c in code.co_consts if inspect.iscode(c)]
    here = sys.modules[case_code.__module__].__dict__
    for n in sorted(names):
        v = here.get(n)
        if (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == case_code.__module__:
            out += case_code(v, seen)
        elif isinstance(v, (int, float, str, tuple)) and not n.startswith("__"):
            out.append(f"{n} = {v!r}")
    return out


SHRINK = 1 / 16
_EMBEDDING = re.compile(r"(^|\.)(pos_embed|cls_token|register_tokens|class_embedding|positional_embedding|"
                        r"patch_embed\.proj\.weight|patch_embed\.proj\.bias|conv1\.weight)$")


def small_embeddings_(obj, factor: float | None = None):
    """Scale, in place, every embedding tensor of a checkpoint object (patch embedding, position table, CLS and
    register tokens, wherever they are nested) by ``factor``. The first LayerNorm then sees a variance of
    ~1e-3 instead of ~1, where its eps shows: eps 1e-5 instead of 1e-6 moves the outputs by 1e-4..1e-2, far
    above the tolerance (at variance ~1 it moves them by ~1e-5, under it)."""
    factor = SHRINK if factor is None else factor
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and _EMBEDDING.search(str(k)):
                with torch.no_grad():
                    v.mul_(factor)
            else:
                small_embeddings_(v, factor)
    return obj


# ==============================================================================================================
# summaries and comparison
# ==============================================================================================================
def _num(v: float, digits: int = 9) -> float:
    return float(f"{float(v):.{digits}g}")


def summarise_tensor(key: str, t) -> dict:
    """Shape, mean/std/min/max and SAMPLES values at seeded positions (the positions are stored too)."""
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
    flat = a.reshape(-1).astype(np.float64)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    index = np.sort(rng.choice(flat.size, min(SAMPLES, flat.size), replace=False)) if flat.size else []
    return {"shape": list(a.shape), "mean": _num(flat.mean()), "std": _num(flat.std()), "min": _num(flat.min()),
            "max": _num(flat.max()), "sample": {"index": [int(i) for i in index],
                                                "value": [_num(flat[i]) for i in index]}}


def _close(a: float, b: float, atol: float, rtol: float) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)


def compare_case(kind: str, golden: dict, now: dict, where: str) -> list[str]:
    """Differences beyond the tolerances between two summaries of one case's outputs, as lines."""
    out: list[str] = []
    if kind == "encoder":
        for rep in sorted(set(golden) | set(now)):
            g, n = golden.get(rep), now.get(rep)
            w = f"{where}/{rep}"
            if g is None or n is None:
                out.append(f"{w}: {'not in the golden file' if g is None else 'no longer produced'}")
                continue
            if g["shape"] != n["shape"]:
                out.append(f"{w}: shape {n['shape']}, golden {g['shape']}")
                continue
            for stat in ("mean", "std", "min", "max"):
                if not _close(n[stat], g[stat], ENCODER_ATOL, ENCODER_RTOL):
                    out.append(f"{w}.{stat}: {n[stat]:.7g}, golden {g[stat]:.7g} (diff {n[stat] - g[stat]:.2g})")
            now_at = dict(zip(n["sample"]["index"], n["sample"]["value"]))
            if any(i not in now_at for i in g["sample"]["index"]):
                out.append(f"{w}: sampled at other positions than the golden file (regenerate it)")
                continue
            bad = [(i, now_at[i], v) for i, v in zip(g["sample"]["index"], g["sample"]["value"])
                   if not _close(now_at[i], v, ENCODER_ATOL, ENCODER_RTOL)]
            if bad:
                i, a, b = max(bad, key=lambda t: abs(t[1] - t[2]))
                out.append(f"{w}: {len(bad)} of {len(now_at)} sampled values differ, e.g. [{i}] {a:.7g}, golden "
                           f"{b:.7g} (diff {a - b:.2g})")
        return out
    for section in ("metrics", "details"):
        g, n = golden.get(section, {}), now.get(section, {})
        for key in sorted(set(g) | set(n)):
            w = f"{where}/{section}.{key}"
            if key not in g or key not in n:
                out.append(f"{w}: {'not in the golden file' if key not in g else 'no longer produced'}")
                continue
            a, b = n[key], g[key]
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or isinstance(a, bool) \
                    or isinstance(b, bool) or (isinstance(a, int) and isinstance(b, int)):
                same = a == b  # strings, flags, None, counts
            elif section == "metrics":
                same = _close(a, b, METRIC_ATOL, 0.0)
            else:
                same = _close(a, b, DETAIL_ATOL, DETAIL_RTOL)
            if not same:
                out.append(f"{w}: {a!r}, golden {b!r}")
    return out


def deviations(kind: str, golden: dict, now: dict) -> dict[str, tuple[float, float, str]]:
    """The largest deviation of each class of numbers (encoders: "values", "statistics"; tasks: "metrics",
    "details") over the cases both documents have: (|diff| / tolerance, |diff|, where).
    How far below its tolerance a machine stays (printed by --check)."""
    worst: dict[str, tuple[float, float, str]] = {}

    def see(cls, a, b, atol, rtol, where):
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return
        d = abs(a - b)
        r = d / (atol + rtol * abs(b))
        if r >= worst.get(cls, (-1.0,))[0]:
            worst[cls] = (r, d, where)

    for c, g in golden["cases"].items():
        n = now["cases"].get(c)
        if n is None:
            continue
        if kind == "encoder":
            for rep in set(g) & set(n):
                if g[rep]["shape"] != n[rep]["shape"]:
                    continue
                for stat in ("mean", "std", "min", "max"):
                    see("statistics", n[rep][stat], g[rep][stat], ENCODER_ATOL, ENCODER_RTOL, f"{c}/{rep}.{stat}")
                now_at = dict(zip(n[rep]["sample"]["index"], n[rep]["sample"]["value"]))
                for i, v in zip(g[rep]["sample"]["index"], g[rep]["sample"]["value"]):
                    if i in now_at:
                        see("values", now_at[i], v, ENCODER_ATOL, ENCODER_RTOL, f"{c}/{rep}[{i}]")
        else:
            for k in set(g.get("metrics", {})) & set(n.get("metrics", {})):
                see("metrics", n["metrics"][k], g["metrics"][k], METRIC_ATOL, 0.0, f"{c}/metrics.{k}")
            for k in set(g.get("details", {})) & set(n.get("details", {})):
                see("details", n["details"][k], g["details"][k], DETAIL_ATOL, DETAIL_RTOL, f"{c}/details.{k}")
    return worst


# ==============================================================================================================
# building plugins the way the core does
# ==============================================================================================================
@functools.lru_cache(maxsize=1)
def _plugins():
    """Every installed plugin (HARNESS_LOAD_PLUGINS, which narrows what a run loads, does not apply here)."""
    import os

    from harness.api import Plugins

    narrowed = os.environ.pop("HARNESS_LOAD_PLUGINS", None)
    try:
        return Plugins()
    finally:
        if narrowed is not None:
            os.environ["HARNESS_LOAD_PLUGINS"] = narrowed


def registration(kind: str, name: str):
    return _plugins().get(kind, name)


def builtin(kind: str) -> dict:
    """name -> Registration of the plugins of ``kind`` that ship with partbench."""
    return {n: r for n, r in sorted(_plugins().registry[kind].items()) if r.origin.startswith("partbench:")}


def build(kind: str, plugin: str, **options):
    """An instance as a spec builds it: options validated (defaults filled in), ``validate()`` called."""
    from harness.api import validate_options

    reg = registration(kind, plugin)
    obj = reg.cls(plugin, **validate_options(reg.cls.option_schema(), options, f"golden {kind} {plugin}"))
    obj.validate()
    obj.plugin_name = reg.name
    return obj


def all_representations(enc) -> list[str]:
    reps = [r for r in enc.representations if r != "blocks"]
    if "blocks" in enc.representations:
        reps += [f"block.{i}" for i in range(enc.num_blocks)]
    return reps


def encoder_case(plugin: str, options: dict, x: torch.Tensor) -> dict:
    """Every representation the encoder offers, through the public forward (``Executor``)."""
    from harness.api import Executor

    enc = build("encoder", plugin, **options)
    run = Executor(enc, "cpu")
    run.ensure_loaded()
    reps = all_representations(enc)
    out = run(x, reps)
    return {r: out[r] for r in reps}


# ==============================================================================================================
# encoder cases: tiny checkpoints in the official layouts
# ==============================================================================================================
def _numpy_draws(base: type, seed: int):
    """An instance of a test weight builder (``W``, ``Rand``) whose normal draws come from numpy's generator,
    which is identical on every CPU (torch's ``randn`` is not)."""

    class Drawn(base):
        def __init__(self, s):
            super().__init__(s)
            self.rng = np.random.default_rng(s)

        def n(self, *shape, std=None):
            fan_in = shape[-1] if len(shape) > 1 else 1
            return normal(self.rng, *shape, std=fan_in ** -0.5 if std is None else std)

    return Drawn(seed)


class NumpyW:
    """``tests/_paper_files.W`` with its normal draws from numpy (the builders call ``n`` and ``ln``)."""

    def __new__(cls, seed: int):
        from _paper_files import W

        return _numpy_draws(W, seed)


class NumpyRand:
    """``tests/_beyond_files.Rand`` with numpy draws."""

    def __new__(cls, seed: int):
        import _beyond_files as bf

        return _numpy_draws(bf.Rand, seed)


PAPER_METHODS = ("deit", "mocov3", "dino", "ibot", "beit", "mae", "cae")
NATIVE, OTHER = (224, 224), (160, 192)  # the checkpoints' own grid, and a non-square resampled one


def _paper_encoder(method: str, tmp: Path, cases=None) -> dict[str, dict]:
    from _paper_files import HEADS, make

    seed = 100 + PAPER_METHODS.index(method)
    obj = make(method, NumpyW(seed))
    path = tmp / f"{method}.pth"
    torch.save(obj, path)
    out = {}
    for label, opts in (cases or {"": {}}).items():
        for size in ((NATIVE, OTHER) if not label else (NATIVE,)):  # option variants at the native size
            x = image_batch(1, 2, *size)
            name = "x".join(map(str, size)) + (f"_{label}" if label else "")
            out[name] = encoder_case(method, {"checkpoint": str(path), "num_heads": HEADS, **opts}, x)
    small = small_embeddings_(copy.deepcopy(obj))
    torch.save(small, tmp / f"{method}_small.pth")
    out["224x224_small_embeddings"] = encoder_case(
        method, {"checkpoint": str(tmp / f"{method}_small.pth"), "num_heads": HEADS}, image_batch(1, 2, *NATIVE))
    return out


def _dinov2(tmp: Path) -> dict[str, dict]:
    import _beyond_files as bf

    out = {}
    for label, kw, seed in (("vits14", {}, 1), ("vits14_reg4", {"registers": 4}, 2),
                            ("vitg14_swiglu", {"swiglu_hidden": 40}, 3)):
        obj = bf.dinov2_file(NumpyRand(seed), **kw)
        path = tmp / f"dinov2_{label}_pretrain.pth"
        torch.save(obj, path)
        for size in ((224, 224), (154, 182)):
            out[f"{label}_{size[0]}x{size[1]}"] = encoder_case(
                "dinov2", {"checkpoint": str(path), "num_heads": bf.HEADS}, image_batch(1, 2, *size))
    small = small_embeddings_(obj)  # the last file's
    torch.save(small, tmp / "dinov2_small.pth")
    out["vitg14_swiglu_224x224_small_embeddings"] = encoder_case(
        "dinov2", {"checkpoint": str(tmp / "dinov2_small.pth"), "num_heads": bf.HEADS}, image_batch(1, 2, 224, 224))
    return out


def _ijepa(tmp: Path) -> dict[str, dict]:
    import _beyond_files as bf

    obj = bf.ijepa_file(NumpyRand(4))
    path = tmp / "IN1K-vit.h.14-300e.pth.tar"
    torch.save(obj, path)
    out = {f"{h}x{w}": encoder_case("ijepa", {"checkpoint": str(path), "num_heads": bf.HEADS},
                                    image_batch(1, 2, h, w)) for h, w in ((224, 224), (154, 182))}
    small = small_embeddings_(obj)
    torch.save(small, tmp / "ijepa_small.pth.tar")
    out["224x224_small_embeddings"] = encoder_case(
        "ijepa", {"checkpoint": str(tmp / "ijepa_small.pth.tar"), "num_heads": bf.HEADS}, image_batch(1, 2, 224, 224))
    return out


def _fresh_model(make: Callable, seed: int):
    """A library-built model (for its key layout), every tensor then drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        model = make()
    reseed_(model.state_dict(), seed)
    return model


def _clip(tmp: Path) -> dict[str, dict]:
    import _beyond_files as bf

    out = {}
    model = _fresh_model(lambda: bf.clip_model(5, quick_gelu=True), 5)
    path = bf.write_openai_archive(model, tmp / "ViT-B-16.pt")
    for size in ((224, 224), (160, 192)):
        out[f"openai_{size[0]}x{size[1]}"] = encoder_case("clip", {"checkpoint": str(path)}, image_batch(1, 2, *size))
    model = _fresh_model(lambda: bf.clip_model(6, quick_gelu=False), 6)
    path = bf.write_openclip_dir(model, tmp / "laion-b16", quick_gelu=False)
    out["openclip_224x224"] = encoder_case("clip", {"checkpoint": str(path)}, image_batch(1, 2, 224, 224))
    small_embeddings_(model.state_dict())  # in place: the state dict shares the model's tensors
    path = bf.write_openclip_dir(model, tmp / "laion-b16-small", quick_gelu=False)
    out["openclip_224x224_small_embeddings"] = encoder_case("clip", {"checkpoint": str(path)},
                                                            image_batch(1, 2, 224, 224))
    return out


def _siglip(tmp: Path) -> dict[str, dict]:
    import _beyond_files as bf

    model = _fresh_model(lambda: bf.siglip_model(7), 7)
    oc, tm = bf.write_siglip_files(model, tmp / "siglip")
    out = {}
    for label, path in (("open_clip", oc), ("timm", tm)):
        for size in ((224, 224), (160, 192)):
            if label == "open_clip" and size != (224, 224):
                continue
            out[f"{label}_{size[0]}x{size[1]}"] = encoder_case(
                "siglip", {"checkpoint": str(path), "num_heads": bf.SIGLIP_HEADS}, image_batch(1, 2, *size))
    small_embeddings_(model.state_dict())  # in place: the state dict shares the model's tensors
    _, tm = bf.write_siglip_files(model, tmp / "siglip_small")
    out["timm_224x224_small_embeddings"] = encoder_case(
        "siglip", {"checkpoint": str(tm), "num_heads": bf.SIGLIP_HEADS}, image_batch(1, 2, 224, 224))
    return out


def _timm(tmp: Path) -> dict[str, dict]:
    import re as _re

    import _beyond_files as bf
    from harness.api import import_timm

    timm = import_timm()
    kw = {"depth": 2, "num_classes": 0}
    model = _fresh_model(lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw), 11)
    obj = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 5}
    path = tmp / "vit_tiny_ddp.pth"
    torch.save(obj, path)
    opts = {"model": "vit_tiny_patch16_224", "checkpoint": str(path), "strip_prefixes": ["module."],
            "model_kwargs": kw}
    out = {f"vit_tiny_{h}x{w}": encoder_case("timm", opts, image_batch(1, 2, h, w))
           for h, w in ((224, 224), (160, 192))}
    small = small_embeddings_(copy.deepcopy(obj))
    torch.save(small, tmp / "vit_tiny_small.pth")
    out["vit_tiny_224x224_small_embeddings"] = encoder_case(
        "timm", {**opts, "checkpoint": str(tmp / "vit_tiny_small.pth")}, image_batch(1, 2, 224, 224))
    # DeiT III (facebookresearch/deit layout: gamma_1/gamma_2, a pos_embed without the CLS slot)
    model = _fresh_model(lambda: timm.create_model("deit3_base_patch16_224", pretrained=False, **bf.DEIT3_KW), 8)
    obj = {"model": {_re.sub(r"ls([12])\.gamma", r"gamma_\1", k): v for k, v in model.state_dict().items()}}
    path = tmp / "deit_3_base_224_21k.pth"
    torch.save(obj, path)
    opts = {"model": "deit3_base_patch16_224", "checkpoint": str(path), "model_kwargs": bf.DEIT3_KW,
            "filter_kwargs": {"adapt_layer_scale": True}, "pretraining": "supervised"}
    out["deit3_224x224"] = encoder_case("timm", opts, image_batch(1, 2, 224, 224))
    return out


def _tiny_pretrained(tmp: Path) -> dict[str, dict]:
    from partbench_plugins.encoders.tiny_pretrained import METHODS

    return {f"{m}_{s}x{s}": encoder_case("tiny_pretrained", {"method": m}, image_batch(1, 2, s, s))
            for m in METHODS for s in (64, 96)}


def _random_vit(tmp: Path) -> dict[str, dict]:
    opts = dict(embed_dim=64, depth=2, num_heads=2, patch_size=16, img_size=64, seed=3)
    return {f"{s}x{s}": encoder_case("random_vit", opts, image_batch(1, 2, s, s)) for s in (64, 96)}


def _pixels(tmp: Path) -> dict[str, dict]:
    return {"32x48": encoder_case("pixels", {"grid": 4, "patch_size": 16}, image_batch(1, 2, 32, 48))}


def _hf(tmp: Path) -> dict[str, dict]:
    """Every transformers family at its tiny size, every tensor drawn from numpy (not the library's init)."""
    import _hf_files as hff

    out = {}
    for i, kind in enumerate(hff.KINDS):
        model = hff.build(kind)
        reseed_(model.state_dict(), 300 + i)
        folder = hff.save(model, tmp / kind)
        for h, w in ((32, 32),) if kind == "aimv2_vision_model" else ((32, 32), (48, 40)):  # AIMv2: fixed table
            out[f"{kind}_{h}x{w}"] = encoder_case("hf", {"model": str(folder)}, image_batch(1, 2, h, w))
    return out


def _deit(tmp):
    return _paper_encoder("deit", tmp)


def _beit(tmp):
    return _paper_encoder("beit", tmp)


def _mae(tmp):
    return _paper_encoder("mae", tmp)


def _mocov3(tmp):
    return _paper_encoder("mocov3", tmp, cases={"": {}, "predictor": {"projection": "predictor"}})


def _dino(tmp):
    return _paper_encoder("dino", tmp, cases={"": {}, "full_projection": {"full_projection": True}})


def _ibot(tmp):
    return _paper_encoder("ibot", tmp, cases={"": {}, "full_projection": {"full_projection": True}})


def _cae(tmp):
    return _paper_encoder("cae", tmp, cases={"": {}, "ln_eps_1e-5": {"ln_eps": 1e-5}})


ENCODER_CASES: dict[str, Callable[[Path], dict[str, dict]]] = {
    "deit": _deit, "mocov3": _mocov3, "dino": _dino, "ibot": _ibot, "beit": _beit, "mae": _mae, "cae": _cae,
    "dinov2": _dinov2,
    "ijepa": _ijepa,
    "clip": _clip,
    "siglip": _siglip,
    "timm": _timm,
    "tiny_pretrained": _tiny_pretrained,
    "random_vit": _random_vit,
    "pixels": _pixels,
    "hf": _hf,
}


# ==============================================================================================================
# task cases: tiny fixed inputs through harness.testing.FakeContext
# ==============================================================================================================
class ExactPatches:
    """A test encoder (not a plugin) for the dense tasks, whose outputs are exact in float32: the uint8 pixels
    (recovered from the normalised batch by rounding) of each patch times a fixed integer matrix, scaled by
    2^-12; every partial sum is an integer below 2^24, so any summation order gives the same bits and the
    float16 cache rounds the same values on every machine. The task goldens then see only the task's own
    arithmetic. ``block.<i>``: another matrix per block; ``tokens``: the last one. No CLS token."""

    def __new__(cls, patch_size: int = 8, name: str = "exact"):
        from harness.api import Encoder

        class _Exact(Encoder):
            representations = ("tokens", "blocks")
            num_blocks, embed_dim, prefix_tokens = 2, 16, 0

            def load(self, device="cpu"):
                rng = np.random.default_rng(20)
                p = self.patch_size
                w = rng.integers(-2, 3, (self.num_blocks + 1, 3 * p * p, self.embed_dim))  # |sums| < 2^24 for p <= 16
                self.w = torch.from_numpy(w.astype(np.float32)).to(device)

            def forward(self, x, reps):
                mean = torch.tensor(self.opts["mean"], device=x.device).view(1, 3, 1, 1)
                std = torch.tensor(self.opts["std"], device=x.device).view(1, 3, 1, 1)
                q = torch.round((x * std + mean) * 255.0)  # the pixels 0..255 (padding: 0)
                p = self.patch_size
                patches = torch.nn.functional.unfold(q, p, stride=p).transpose(1, 2)  # [B, N, 3 p^2]
                out = {}
                for r in reps:
                    i = self.num_blocks if r == "tokens" else int(r.split(".")[1])
                    out[r] = (patches @ self.w[i]) * 2.0 ** -12
                return out

        enc = _Exact(name, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], batch_size=16, precision="fp32")
        enc.patch_size = patch_size
        enc.plugin_name = "exact_patches"
        return enc


def task_case(plugin: str, options: dict, ctx) -> dict:
    """The task's result on a FakeContext, built as a spec builds it."""
    task = build("task", plugin, **options)
    ctx.task = task
    return task.run(ctx)


def _flat(obj, prefix: str = "") -> dict:
    """Nested dicts/lists -> {"a.b.0": leaf}; leaves are numbers, strings, booleans or None."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}{i}.").items()}
    if isinstance(obj, float) and math.isnan(obj):
        obj = "nan"
    return {prefix[:-1]: obj}


def _pick(details: dict, *paths: str) -> dict:
    """The flattened subtrees of ``details`` at the given dotted paths."""
    out = {}
    for p in paths:
        node = details
        for part in p.split("."):
            node = node[part]
        out.update(_flat(node, p + "."))
    return out


def _task_result(res: dict, *detail_paths: str, extra: dict | None = None) -> dict:
    """Metrics, the details at ``detail_paths`` (flattened) and ``extra`` numbers."""
    metrics = {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in res["metrics"].items()}
    details = _pick(res["details"], *detail_paths)
    details.update(extra or {})
    return {"metrics": metrics, "details": details}


def _curves(path: Path, columns=("train_loss",)) -> dict:
    """The per-epoch numbers of a probe's curves.csv, as run/lr/epoch/column keys."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for col in columns:
                if row.get(col):
                    out[f"curves.{row['run']}.{row['base_lr']}.{row['epoch']}.{col}"] = float(row[col])
    return out


def _retrieval_features(seed: int = 0):
    """48 items of 4 classes: ``cls`` informative, ``mean_patch`` noise, ``projected`` weakly informative; rows
    40..47 repeat rows 0..7 under the next class's label, so positives and negatives tie exactly."""
    from harness.api import Samples

    rng = np.random.default_rng(seed)
    n, classes = 48, ["eye", "leg", "tail", "wing"]
    y = np.arange(n) % 4
    centres = rng.standard_normal((4, 8))
    cls = (rng.standard_normal((n, 8)) + 1.2 * centres[y]).astype(np.float32)
    mean_patch = rng.standard_normal((n, 8)).astype(np.float32)
    projected = (rng.standard_normal((n, 4)) + 0.6 * centres[y][:, :4]).astype(np.float32)
    for a in (cls, mean_patch, projected):
        a[40:] = a[:8]
    y[40:] = (y[:8] + 1) % 4
    feats = {"cls": cls, "mean_patch": mean_patch, "projected": projected}
    return Samples([f"item{i}" for i in range(n)], y, classes, {"kept": n}), feats


def _retrieval(tmp: Path) -> dict[str, dict]:
    from harness.testing import FakeContext, StubEncoder

    samples, feats = _retrieval_features()
    out = {}
    for label, opts in (("best", {"representation": "best", "extra": ["projected"]}),
                        ("cls_exclude_self", {"representation": "cls", "exclude_self": True})):
        ctx = FakeContext(StubEncoder("enc", tuple(feats)), samples={"all": samples, "train": samples},
                          arrays={"all": feats, "train": feats}, out_dir=tmp / label)
        (tmp / label).mkdir()
        res = task_case("retrieval", opts, ctx)
        reps = list(res["details"]["per_representation"])
        out[label] = _task_result(res, "representation.reported", "queries_without_positives",
                                  *[f"per_representation.{r}.per_class" for r in reps])
    return out


def _gallery(tmp: Path) -> dict[str, dict]:
    from PIL import Image

    from harness.api import Samples
    from harness.testing import FakeContext, StubEncoder

    rng = np.random.default_rng(1)
    src = []
    for k in range(3):
        p = tmp / f"src{k}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
        src.append(p)

    class Boxes(Samples):
        def image(self, i):
            with Image.open(src[i % 3]) as im:
                return im.convert("RGB").crop((2 + i, 4, 22 + i, 24))

        def source(self, i):
            return str(src[i % 3]), (2 + i, 4, 22 + i, 24)

    n = 24
    samples = Boxes([f"k{i}" for i in range(n)], np.arange(n) % 3, ["a", "b", "c"])
    centres = rng.standard_normal((3, 6))
    feats = (rng.standard_normal((n, 6)) + 1.0 * centres[np.arange(n) % 3]).astype(np.float32)
    out_dir = tmp / "gallery"
    out_dir.mkdir()
    ctx = FakeContext(StubEncoder("enc", ("cls", "mean_patch")), samples={"all": samples},
                      arrays={"all": {"cls": feats, "mean_patch": feats}}, out_dir=out_dir)
    res = task_case("gallery", {"top_k": 5, "tile": 16, "per_class": 2}, ctx)
    d = res["details"]
    extra = {f"queries.{r}.{k}": v for r, q in enumerate(d["queries"])
             for k, v in (("index", q["index"]), ("retrieved", ",".join(str(x["index"]) for x in q["retrieved"])),
                          *((f"similarity.{j}", x["similarity"]) for j, x in enumerate(q["retrieved"])))}
    return {"per_class_2": _task_result(res, "top_k", extra=extra)}


def _probe_data(seed: int, n_train: int, n_test: int, classes: int, d: int, sep: float, tokens: int = 0):
    """Gaussian classes (vectors, or token sets whose first ``tokens`` // 2 tokens carry the class)."""
    from harness.api import Samples

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * sep / math.sqrt(d) * 2

    def split(n):
        y = np.arange(n) % classes
        if tokens:
            x = rng.standard_normal((n, tokens, d))
            x[:, : tokens // 2] += centres[y][:, None]
        else:
            x = centres[y] + rng.standard_normal((n, d))
        return x.astype(np.float32), y

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    names = [f"c{i}" for i in range(classes)]
    samples = {"train": Samples([f"a{i}" for i in range(n_train)], ytr, names),
               "test": Samples([f"b{i}" for i in range(n_test)], yte, names)}
    return samples, xtr, xte


def _probe(plugin: str, tmp: Path, rep: str, opts: dict, data: tuple) -> dict:
    from harness.testing import FakeContext

    samples, xtr, xte = data
    out_dir = tmp / plugin
    out_dir.mkdir()
    ctx = FakeContext(None, samples=samples, arrays={"train": {rep: xtr}, "test": {rep: xte}}, out_dir=out_dir)
    res = task_case(plugin, opts, ctx)
    return _task_result(res, "best_epoch.epoch", "heldout_choice.epoch", "heldout_choice.base_lr",
                        "heldout_choice.heldout_top1", "per_lr", extra=_curves(out_dir / "curves.csv"))


def _linear_probe(tmp: Path) -> dict[str, dict]:
    data = _probe_data(0, 240, 120, 4, 16, sep=1.0)
    opts = {"epochs": 5, "batch_size": 32, "eval_batch_size": 64, "lr": 0.1, "lrs": [1.0], "heldout_fraction": 0.2}
    return {"gaussian_4_classes": _probe("linear_probe", tmp, "cls", opts, data)}


def _attentive_probe(tmp: Path) -> dict[str, dict]:
    data = _probe_data(1, 96, 48, 3, 8, sep=1.0, tokens=5)
    opts = {"epochs": 4, "batch_size": 16, "eval_batch_size": 32, "lr": 0.05, "lrs": [0.2], "num_heads": 2,
            "heldout_fraction": 0.25}
    return {"gaussian_tokens_3_classes": _probe("attentive_probe", tmp, "tokens", opts, data)}


def _seg_split(root: Path, n: int, seed: int):
    """PNG images with three coloured rectangles (classes 1..3) on dark noise, and their index label maps
    (0: background, ignored with reduce_zero_label), in mmseg's img/ann layout."""
    from PIL import Image

    from harness.api import SegSamples

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir(parents=True)
    keys = []
    for i in range(n):
        w, h = ((64, 48), (48, 64), (56, 56))[i % 3]
        img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
        lab = np.zeros((h, w), np.uint8)
        for c in range(3):
            x0, y0 = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
            x1, y1 = x0 + int(rng.integers(10, 24)), y0 + int(rng.integers(10, 24))
            img[y0:y1, x0:x1] = 0
            img[y0:y1, x0:x1, c] = 180 + int(rng.integers(0, 60))
            lab[y0:y1, x0:x1] = c + 1
        key = f"{i:03d}"
        Image.fromarray(img).save(root / "img" / f"{key}.png")
        Image.fromarray(lab, mode="L").save(root / "ann" / f"{key}.png")
        keys.append(key)
    samples = SegSamples(keys, ["red", "green", "blue"], {}, [str(root / "img" / f"{k}.png") for k in keys],
                         [str(root / "ann" / f"{k}.png") for k in keys],
                         defaults={"scale": [64, 32], "crop": [32, 32], "stride": [24, 24]})
    return samples


def _seg_context(tmp: Path, n_train: int, out: str):
    """A FakeContext on two _seg_split splits (train: ``n_train`` images, val: 3) with ExactPatches(8)."""
    from harness.testing import FakeContext, StubDataset

    train = _seg_split(tmp / "train", n_train, 0)
    val = _seg_split(tmp / "val", 3, 1)
    out_dir = tmp / out
    out_dir.mkdir()
    return FakeContext(ExactPatches(8), StubDataset("seg", {"train": train, "val": val}), out_dir=out_dir), out_dir


def _linear_seg(tmp: Path) -> dict[str, dict]:
    ctx, out_dir = _seg_context(tmp, 6, "seg")
    opts = {"blocks": [0, 1], "iterations": 20, "batch_size": 4, "warmup": 2, "lr": 0.01, "lrs": [0.1]}
    res = task_case("linear_seg", opts, ctx)
    losses = {}
    with open(out_dir / "loss.csv", newline="") as f:
        for row in csv.DictReader(f):
            if int(row["iteration"]) % 5 == 0:
                losses.update({f"loss.{row['iteration']}.{k.split('@')[1]}": float(v) for k, v in row.items()
                               if k.startswith("loss@")})
    return {"fast_20_iterations": _task_result(res, "per_lr", "per_class", "geometry", extra=losses)}


COCO_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle"]


def _pose_split(root: Path, n: int, seed: int, first_id: int):
    """One person per 96x96 image: 17 keypoints at a fixed body template inside the box (jittered, a few
    unlabelled), each drawn as a small square of its own colour; a COCO person_keypoints file of the split."""
    from PIL import Image

    from harness.api import KeypointSamples

    rng = np.random.default_rng(seed)
    template = np.random.default_rng(99).uniform(0.15, 0.85, (17, 2))
    root.mkdir(parents=True)
    images, anns, boxes, kps = [], [], [], []
    for i in range(n):
        iid = first_id + i
        x, y = float(rng.integers(4, 20)), float(rng.integers(4, 16))
        w, h = float(rng.integers(44, 60)), float(rng.integers(60, 76))
        k = np.zeros((17, 3))
        k[:, 0] = x + template[:, 0] * w + rng.normal(0, 1.5, 17)
        k[:, 1] = y + template[:, 1] * h + rng.normal(0, 1.5, 17)
        k[:, 2] = np.where(rng.random(17) < 0.15, 0, 2)
        k[k[:, 2] == 0, :2] = 0
        img = rng.integers(0, 60, (96, 96, 3)).astype(np.uint8)
        for j in np.flatnonzero(k[:, 2]):
            cx, cy = int(round(k[j, 0])), int(round(k[j, 1]))
            img[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3] = ((53 * j + 90) % 256, (97 * j + 30) % 256,
                                                                (151 * j + 200) % 256)
        path = root / f"{iid:06d}.png"
        Image.fromarray(img).save(path)
        images.append({"id": iid, "file_name": path.name, "width": 96, "height": 96})
        anns.append({"id": 1000 + iid, "image_id": iid, "category_id": 1, "iscrowd": 0, "area": w * h,
                     "bbox": [x, y, w, h], "num_keypoints": int((k[:, 2] > 0).sum()),
                     "keypoints": [round(float(v), 3) for v in k.reshape(-1)]})
        boxes.append((x, y, w, h))
        kps.append(np.asarray(anns[-1]["keypoints"], np.float64).reshape(17, 3))
    ann_file = root / "person_keypoints.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": COCO_NAMES, "skeleton": []}]}))

    class Persons(KeypointSamples):
        keypoint_names = COCO_NAMES
        flip_pairs = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
        annotation_file = str(ann_file)

        def image(self, i):
            with Image.open(root / images[i]["file_name"]) as im:
                return im.convert("RGB")

        def box(self, i):
            return boxes[i]

        def keypoints(self, i):
            return kps[i]

        def image_id(self, i):
            return images[i]["id"]

    samples = Persons([f"{a['id']}" for a in anns], np.zeros(n, np.int64), ["person"], {"persons": n},
                      files=[ann_file])
    return samples


def _linear_pose(tmp: Path) -> dict[str, dict]:
    from harness.testing import FakeContext, StubDataset

    train = _pose_split(tmp / "train", 16, 0, 1)
    test = _pose_split(tmp / "test", 8, 1, 101)
    out_dir = tmp / "pose"
    out_dir.mkdir()
    ctx = FakeContext(ExactPatches(16), StubDataset("persons", {"train": train, "test": test}), out_dir=out_dir)
    opts = {"blocks": [0, 1], "input_size": [64, 48], "epochs": 12, "steps": [10], "batch_size": 4, "warmup": 3,
            "lr": 0.02, "lrs": [0.1], "weight_decay": 0.0}
    res = task_case("linear_pose", opts, ctx)
    preds = json.loads((out_dir / "predictions.json").read_text())
    extra = {f"predictions.{p['image_id']}.{k}": v for p in preds
             for k, v in (("score", p["score"]), *((f"keypoints.{j}", p["keypoints"][j]) for j in (0, 1, 15, 16)))}
    return {"crops_64x48_12_epochs": _task_result(res, "per_lr", "final_loss", "iterations", extra=extra)}


def _correspondence(tmp: Path) -> dict[str, dict]:
    """The SPair-layout fixture of tests/_pair_files.py (answer known by construction) with its colour
    encoder, on the patch cells and on cells upsampled x2."""
    from _pair_files import colour_encoder, write_spair
    from harness.testing import FakeContext, StubDataset
    from partbench_plugins.datasets.spair import read_spair

    samples = read_spair(write_spair(tmp / "SPair-71k"), "test")
    out = {}
    for upsample in (1, 2):
        out_dir = tmp / f"corr{upsample}"
        out_dir.mkdir()
        ctx = FakeContext(colour_encoder(), StubDataset("spair", {"test": samples}), out_dir=out_dir)
        res = task_case("correspondence", {"input_size": 128, "upsample": upsample, "alpha": [0.05, 0.1],
                                           "figure_pairs": 0}, ctx)
        out[f"spair_fixture_upsample_{upsample}"] = _task_result(res, "per_alpha")
    return out


def _in_context_seg(tmp: Path) -> dict[str, dict]:
    ctx, _ = _seg_context(tmp, 5, "icl")
    opts = {"input_size": 32, "memory_size": 100, "augmentation_epochs": 2, "k": 5, "batch_size": 4}
    res = task_case("in_context_seg", opts, ctx)
    return {"bank_100_k5": _task_result(res, "per_class", "memory_bank")}


TASK_CASES: dict[str, Callable[[Path], dict[str, dict]]] = {
    "retrieval": _retrieval,
    "gallery": _gallery,
    "linear_probe": _linear_probe,
    "attentive_probe": _attentive_probe,
    "linear_seg": _linear_seg,
    "linear_pose": _linear_pose,
    "correspondence": _correspondence,
    "in_context_seg": _in_context_seg,
}
CASES = {"encoder": ENCODER_CASES, "task": TASK_CASES}


# ==============================================================================================================
# golden documents: make, compare, update
# ==============================================================================================================
class Refused(Exception):
    """--update would overwrite outputs that changed while the plugin's version did not."""


def golden_path(kind: str, name: str, root: Path = GOLDEN_DIR) -> Path:
    return Path(root) / f"{kind}s" / f"{name}.json"


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def command(name: str) -> str:
    kinds = [k for k in KINDS if name in builtin(k)]
    return f"python tests/golden.py --update {name if len(kinds) < 2 else kinds[0] + ':' + name}"


def _where_is_version(kind: str, name: str) -> str:
    cls = registration(kind, name).cls
    return f"{cls.__name__}.version (in {cls.__module__.replace('partbench_plugins', 'plugins').replace('.', '/')}.py)"


@contextlib.contextmanager
def _one_thread():
    """Tiny tensors gain nothing from threads (and a loaded machine makes OpenMP spin-waits slow)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _local_modules(names, seen: set | None = None) -> list[str]:
    """Sources of the helper modules of this folder that ``names`` import (and that they import in turn)."""
    import ast

    seen = set() if seen is None else seen
    out = []
    for name in sorted(set(names)):
        path = HERE / f"{name.split('.')[0]}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        text = path.read_text()
        out.append(f"# {path.name}\n{text}")
        tree = ast.parse(text)
        out += _local_modules([a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
                              + [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module], seen)
    return out


def case_inputs(kind: str, name: str) -> str:
    """Fingerprint of what a plugin's cases feed it, from what makes those inputs: the cases' code in this
    file, the helper modules of tests/ they import (checkpoint builders), and the versions of the libraries
    that build or draw them. Not from the data itself, whose last bits may differ between machines (torch's
    sin/cos in a builder); the outputs are compared within tolerances anyway."""
    import importlib.metadata as md

    fn = CASES[kind][name]
    code = case_code(fn) + (case_code(summarise_tensor) if kind == "encoder" else [])
    imports = set()
    for text in code:  # every import statement of the code (cases import their builders inside)
        imports |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_][\w.]*)", text, re.M))
    versions = {}
    # transformers builds the hf case's models (only there, so the other fingerprints stay as they were)
    for dist in ("numpy", "timm", "open_clip_torch", "pillow") + (("transformers",) if "_hf_files" in imports else ()):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return fingerprint(code, _local_modules(imports), versions)


def make_document(kind: str, name: str) -> dict:
    """Run every case of a plugin and summarise its outputs: the golden document it would have now."""
    from harness.api import CORE_VERSION

    reg = registration(kind, name)
    if name not in CASES[kind]:
        raise KeyError(f"no golden case for the built-in {kind} '{name}': add one to CASES['{kind}'] in "
                       f"tests/golden.py (how it is built on a tiny fixed input), then run `{command(name)}`")
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp, _one_thread():
        cases = CASES[kind][name](Path(tmp))
    doc = {"plugin": name, "kind": kind, "class": f"{reg.cls.__module__}.{reg.cls.__qualname__}",
           "version": str(reg.cls.version), "core_version": str(CORE_VERSION), "inputs": case_inputs(kind, name),
           "made_with": {"torch": torch.__version__, "numpy": np.__version__, "machine": platform.machine(),
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()},
           "cases": {}}
    for cname, outputs in cases.items():
        doc["cases"][cname] = ({rep: summarise_tensor(f"{cname}/{rep}", t) for rep, t in outputs.items()}
                               if kind == "encoder" else json.loads(json.dumps(outputs)))
    return doc


def load_document(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not a JSON golden file ({exc}); regenerate it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), dict) or "version" not in doc:
        raise ValueError(f"{path}: not a golden file (expected 'version' and 'cases'); regenerate it")
    return doc


def write_document(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    # lists of numbers on one line: the files stay short and a diff shows which case and output changed
    text = re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n")


@dataclass
class Comparison:
    """A golden document against the outputs of now. Whether the cases' inputs are the same (``case_inputs``)
    tells a change of the plugin (same inputs, other outputs) from a change of its cases."""

    same_inputs: bool
    changed: dict[str, list[str]]  # case -> what differs beyond the tolerances
    added: list[str]
    removed: list[str]

    @property
    def plugin_changed(self) -> bool:
        """Outputs of the same inputs moved, or a case vanished (a new case alone, e.g. for a new option
        value of the plugin, changes nothing that was recorded)."""
        return self.same_inputs and bool(self.changed or self.removed)

    @property
    def lines(self) -> list[str]:
        """What fails the test (changed inputs alone do not: the outputs still agree)."""
        out = [line for lines in self.changed.values() for line in lines]
        out += [f"{c}: a case without golden outputs" for c in self.added]
        out += [f"{c}: in the golden file but no longer a case" for c in self.removed]
        return out


def compare(kind: str, golden: dict, now: dict) -> Comparison:
    g, n = golden["cases"], now["cases"]
    changed = {c: lines for c in sorted(set(g) & set(n)) if (lines := compare_case(kind, g[c], n[c], c))}
    return Comparison(golden.get("inputs") == now["inputs"], changed, sorted(set(n) - set(g)),
                      sorted(set(g) - set(n)))


def check(kind: str, name: str, root: Path = GOLDEN_DIR) -> tuple[bool, str]:
    """(ok, what is wrong and what to do, or how far below the tolerances the outputs stay): the golden file
    exists, was made with the plugin's current version, and its outputs equal the plugin's outputs now."""
    path = golden_path(kind, name, root)
    version = str(registration(kind, name).cls.version)
    golden = load_document(path)
    if golden is None:
        return False, f"{kind} '{name}' has no golden file {_show(path)}: create it with `{command(name)}`"
    if str(golden["version"]) != version:
        return False, (f"{kind} '{name}' is version {version} but {path.name} was made with version "
                       f"{golden['version']}: regenerate it with `{command(name)}`")
    try:
        now = make_document(kind, name)
    except KeyError as exc:
        return False, exc.args[0]
    cmp = compare(kind, golden, now)
    if not cmp.lines:
        worst = deviations(kind, golden, now)
        note = "" if cmp.same_inputs else " (its cases changed since the file was made: `--update` records that)"
        return True, "; ".join(f"{cls} identical" if d == 0 else
                               f"{cls} {d:.1e} ({100 * r:.2g}% of the tolerance, {where})"
                               for cls, (r, d, where) in sorted(worst.items())) + note
    if cmp.plugin_changed:
        head = (f"{kind} '{name}': outputs differ from {_show(path)} beyond floating-point noise while its version "
                f"is still '{version}'. If the change is intended, bump {_where_is_version(kind, name)} and run "
                f"`{command(name)}`")
        if str(golden.get("core_version")) != str(now["core_version"]):
            head += (f" (CORE_VERSION changed too, {golden.get('core_version')} -> {now['core_version']}: if the "
                     "change is the core's, `--update` accepts it without a plugin bump)")
    else:
        head = (f"{kind} '{name}': its cases in tests/golden.py changed (their code, a builder they import, or a "
                f"library that makes their inputs): regenerate with `{command(name)}` (no version bump needed)")
    shown = cmp.lines[:12] + ([f"... and {len(cmp.lines) - 12} more"] if len(cmp.lines) > 12 else [])
    return False, head + ":\n  " + "\n  ".join(shown)


def update(kind: str, name: str, root: Path = GOLDEN_DIR) -> str:
    """Regenerate a golden file; what was done, as a line. Raises Refused when outputs of the same inputs
    changed while the plugin's version (and the core's) stayed the same."""
    path = golden_path(kind, name, root)
    now = make_document(kind, name)
    golden = load_document(path)
    rel = f"{kind}s/{path.name}"
    if golden is None:
        write_document(now, path)
        return f"{rel}: created (version {now['version']}, {len(now['cases'])} cases)"
    core_before = str(golden.get("core_version"))
    if (str(golden["version"]), core_before) != (now["version"], now["core_version"]):
        write_document(now, path)
        core = f", core {core_before} -> {now['core_version']}" if core_before != now["core_version"] else ""
        return f"{rel}: regenerated for version {now['version']} (was {golden['version']}{core})"
    cmp = compare(kind, golden, now)
    if cmp.plugin_changed:
        raise Refused(f"{rel}: not overwritten: the outputs of {kind} '{name}' changed while its version is still "
                      f"'{now['version']}': bump {_where_is_version(kind, name)} first, then rerun "
                      f"`{command(name)}`:\n  " + "\n  ".join(cmp.lines[:12]))
    if cmp.same_inputs and not cmp.lines:
        return f"{rel}: up to date (version {now['version']})"
    # cases whose outputs agree keep their numbers (no churn from another machine's rounding)
    now["cases"] = {c: (golden["cases"][c] if c in golden["cases"] and c not in cmp.changed else v)
                    for c, v in now["cases"].items()}
    write_document(now, path)
    what = [f"{len(cmp.changed)} changed" if cmp.changed else "", f"{len(cmp.added)} new" if cmp.added else "",
            f"{len(cmp.removed)} removed" if cmp.removed else ""]
    what = ", ".join(w for w in what if w) or "outputs unchanged"
    return f"{rel}: updated for changed cases ({what}; version {now['version']} unchanged)"


def stale_files(root: Path = GOLDEN_DIR) -> list[Path]:
    """Golden files of plugins that are no longer built in."""
    return [p for kind in KINDS for p in sorted((Path(root) / f"{kind}s").glob("*.json"))
            if p.stem not in builtin(kind)]


# ==============================================================================================================
# command line
# ==============================================================================================================
def resolve(names: list[str]) -> list[tuple[str, str]]:
    out = []
    for arg in names:
        kind, _, name = arg.rpartition(":")
        kinds = [kind] if kind else [k for k in KINDS if name in builtin(k)]
        if kind and kind not in KINDS:
            raise SystemExit(f"golden: '{arg}': the kind is 'encoder' or 'task'")
        if not kinds or name not in builtin(kinds[0]):
            known = ", ".join(n for k in KINDS for n in builtin(k))
            raise SystemExit(f"golden: no built-in encoder or task named '{name}' (built-ins: {known})")
        if len(kinds) > 1:
            raise SystemExit(f"golden: '{name}' is both an encoder and a task: write encoder:{name} or task:{name}")
        out.append((kinds[0], name))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/golden.py", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", nargs="*", metavar="NAME", help="compare with the golden files (default: all)")
    mode.add_argument("--update", nargs="+", metavar="NAME", help="regenerate these plugins' golden files")
    mode.add_argument("--update-all", action="store_true", help="regenerate every built-in plugin's golden file")
    mode.add_argument("--list", action="store_true", help="built-in plugins, their versions and golden versions")
    ap.add_argument("--golden-dir", type=Path, default=GOLDEN_DIR, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every case is local; timm must not try the hub
    everything = [(k, n) for k in KINDS for n in builtin(k)]
    if a.list:
        for k, n in everything:
            doc = load_document(golden_path(k, n, a.golden_dir))
            print(f"{k:8} {n:16} version {registration(k, n).cls.version:4} golden "
                  f"{doc['version'] if doc else '-'}")
        return 0
    if a.check is not None:
        chosen = resolve(a.check) if a.check else everything
        bad = 0
        for k, n in chosen:
            ok, msg = check(k, n, a.golden_dir)
            print(f"{k} {n}: ok, largest deviations: {msg}" if ok else msg, flush=True)
            bad += not ok
        stale = [] if a.check else stale_files(a.golden_dir)
        for p in stale:
            print(f"{_show(p)}: no built-in plugin of that name any more; delete it")
        print(f"golden: {len(chosen) - bad} of {len(chosen)} plugins agree with their golden files"
              + (f"; {len(stale)} stale files" if stale else ""))
        return 1 if bad or stale else 0
    refused = 0
    for k, n in (everything if a.update_all else resolve(a.update)):
        try:
            print(update(k, n, a.golden_dir), flush=True)
        except Refused as exc:
            print(exc, file=sys.stderr, flush=True)
            refused += 1
    return 1 if refused else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        sys.exit(0)
