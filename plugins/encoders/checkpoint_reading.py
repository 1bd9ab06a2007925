"""Reading official checkpoint files: ``torch.load`` with one-line errors, a guess of what a file is (for
"not a DINO checkpoint ... found a MoCo v3 checkpoint"), strict loading that lists missing/unexpected keys,
and the small key-mapping helpers every method's ``split`` uses.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness.api import HarnessError

# Globals the official training checkpoints pickle besides tensors (DINO/iBOT store their argparse
# ``args``). Allowing this one plain-data class keeps ``weights_only=True`` usable on the full files.
_SAFE_GLOBALS = [argparse.Namespace]

MAX_LISTED_KEYS = 8


def _load_unsafe(path: str, mmap: bool, expected: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001
        raise HarnessError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_first_line(exc)}); expected {expected}") from exc


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message (torch's zip errors run on for lines)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")[:200]


def is_torchscript(path: str) -> bool:
    """A TorchScript archive (``torch.jit.save``; e.g. OpenAI's CLIP release): a zip with a ``constants.pkl``
    and compiled ``code/`` next to its data."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


class NeedsUnpickling(HarnessError):
    """The file pickles Python objects: only ``torch.load(weights_only=False)`` reads it, and that runs code
    stored in the file. Raised instead of unpickling when the caller did not allow it (validation)."""


def read_checkpoint(path: str, *, weights_only: bool = True, expected: str = "a PyTorch checkpoint",
                    unpickle: bool = True) -> Any:
    """``torch.load`` on CPU (memory-mapped for zip files) with one-line errors naming the file.

    The safe loader is always tried first, so ``weights_only=False`` only unpickles files that need it,
    and only when ``unpickle`` is true (otherwise NeedsUnpickling)."""
    path = str(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise HarnessError(f"{path}: cannot open checkpoint ({exc.strerror})") from exc
    mmap = zipfile.is_zipfile(path)  # legacy (pre-1.6) pickles cannot be memory-mapped
    if mmap and is_torchscript(path):
        raise HarnessError(f"{path}: a TorchScript archive (e.g. OpenAI's CLIP release, read by the clip encoder), "
                           f"not a checkpoint of this kind; expected {expected}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        if glob:  # a real pickle that references a class the safe loader refuses
            if weights_only:
                raise HarnessError(f"{path}: refused by torch.load(weights_only=True): it pickles "
                                   f"{glob.group(1)}; if you trust this file, set the encoder option "
                                   f"'weights_only: false'") from exc
            if not unpickle:
                raise NeedsUnpickling(f"{path}: pickles {glob.group(1)}, so reading it executes code stored "
                                      "in the file") from exc
            return _load_unsafe(path, mmap, expected)
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        msg = detail.group(1).strip().splitlines()[0] if detail else _first_line(exc)
        raise HarnessError(f"{path}: not a readable PyTorch checkpoint (UnpicklingError: {msg}; truncated or "
                           f"not a checkpoint?); expected {expected}") from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is one user-facing line
        raise HarnessError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_first_line(exc)}; truncated or not a checkpoint?); expected {expected}") from exc


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def guess_layout(obj: Any) -> str:
    """A short description of what a loaded checkpoint looks like, naming the method when recognisable."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"

    def keys_of(d):
        return list(d.keys()) if isinstance(d, dict) else []

    top = keys_of(obj)
    guess = _guess_beyond_paper(obj)
    if guess is not None:
        pass  # one of the families beyond the paper's seven
    elif "teacher" in obj and "student" in obj:
        t = keys_of(obj["teacher"])
        guess = ("an iBOT full checkpoint" if any(k.startswith("head.last_layer2") for k in t)
                 else "a DINO full checkpoint")
    elif isinstance(obj.get("state_dict"), dict):
        sd = keys_of(obj["state_dict"])
        if any(k.startswith("module.base_encoder.") for k in sd):
            guess = "a MoCo v3 checkpoint"
        elif "cls_token" in sd:
            guess = "an iBOT backbone-only checkpoint (checkpoint_teacher.pth)"
    elif isinstance(obj.get("model"), dict):
        sd = keys_of(obj["model"])
        if any(k.startswith("encoder.") for k in sd):
            guess = "a CAE checkpoint"
        elif "rel_pos_bias.relative_position_bias_table" in sd or "blocks.0.attn.q_bias" in sd:
            guess = "a BEiT checkpoint"
        elif "head.weight" in sd:
            guess = "a supervised ViT/DeiT checkpoint"
        elif "cls_token" in sd:
            guess = "an MAE checkpoint"
    elif is_state_dict(obj) and "cls_token" in obj:
        guess = ("a raw ViT state dict (e.g. DINO backbone-only)" if "pos_embed" in obj
                 else "a raw ViT state dict")
    shown = ", ".join(repr(k) for k in top[:MAX_LISTED_KEYS]) + (", ..." if len(top) > MAX_LISTED_KEYS else "")
    return (f"{guess}; " if guess else "") + f"top-level keys {shown or '(none)'}"


def _guess_beyond_paper(obj: dict) -> str | None:
    """The released files of the families beyond the paper's seven (DINOv2, I-JEPA, CLIP, SigLIP)."""
    if all(k in obj for k in ("encoder", "predictor", "target_encoder")):
        return "an I-JEPA checkpoint"
    sd = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else obj
    keys = [str(k) for k in sd]
    if "mask_token" in sd and any(".ls1.gamma" in k for k in keys):
        return ("a DINOv2 backbone with registers" if "register_tokens" in sd else "a DINOv2 backbone")
    if any(k.endswith("visual.class_embedding") for k in keys):
        return "a CLIP checkpoint (OpenAI/OpenCLIP layout)"
    if any(k.endswith("attn_pool.latent") for k in keys):
        return "a SigLIP checkpoint (open_clip or timm layout)"
    return None


def list_keys(keys: Sequence[str], limit: int = MAX_LISTED_KEYS) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(module: nn.Module, sd: dict, *, strict: bool, where: str, what: str) -> dict:
    """Compare ``sd`` with ``module``'s keys and shapes without loading anything: a shape mismatch is
    always an error, missing/unexpected keys are one unless ``strict`` is False.

    Returns {"missing": [...], "unexpected": [...]} (empty lists when everything matches)."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shape_bad = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
                       if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    if shape_bad:  # never loadable, strict or not
        raise HarnessError(f"{where}: {what}: shape mismatch for {list_keys(shape_bad, 4)}")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {list_keys(unexpected)}")
        raise HarnessError(f"{where}: {what}: " + "; ".join(parts)
                           + " (set the encoder option 'strict: false' to load anyway)")
    return {"missing": missing, "unexpected": unexpected}


def load_strict(module: nn.Module, sd: dict, *, strict: bool, where: str, what: str) -> dict:
    """``check_state_dict``, then load the matching keys into ``module``."""
    report = check_state_dict(module, sd, strict=strict, where=where, what=what)
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return report


def strip_prefix(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def count_by_prefix(keys: Sequence[str], depth: int = 1) -> dict[str, int]:
    """{'module.momentum_encoder.*': 152, ...}: a compact record of deliberately ignored keys."""
    out: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        name = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        out[name] = out.get(name, 0) + 1
    return out


def map_weight_norm_keys(sd: dict) -> dict:
    """Accept torch's newer parametrized weight-norm names (``parametrizations.weight.original0/1``)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out
