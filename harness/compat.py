"""The one place that works around this platform's torchvision/timm packaging.

pip's torchvision for torch 2.13 is a CUDA build; on a CPU torch its extension fails to register
``torchvision::nms``/``qnms`` and ``import torchvision`` (hence ``import timm``) dies. Declaring the two
operator schemas before the first import lets the Python side load; we never call those kernels.
"""
from __future__ import annotations

import os

_patched = False


def _ensure_torchvision() -> None:
    global _patched
    if _patched:
        return
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        import sys

        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_torchvision_lib"] = lib
        import torchvision  # noqa: F401,F811
    except ImportError:
        pass  # no torchvision at all: timm works without it for our use
    _patched = True


def prepare_torchvision() -> None:
    """Make ``import torchvision`` (and so ``import timm``) work from here on, for any code."""
    _ensure_torchvision()


def import_timm():
    """Import timm safely (offline, torchvision fixed) and return the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _ensure_torchvision()
    import timm

    return timm


def import_transformers():
    """Import Hugging Face ``transformers`` safely (offline: nothing is downloaded, torchvision fixed, as
    ``import_timm``) and return the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _ensure_torchvision()
    import transformers

    return transformers


_MMSEG_READY = False


def ensure_mmseg() -> None:
    """Make ``mmseg.models``/``mmseg.datasets`` importable with mmcv-lite (no compiled ``mmcv.ops``).

    mmseg imports a few ``mmcv.ops`` names at module level: a stand-in module gives a pure-torch
    ``point_sample`` and a ``sigmoid_focal_loss`` that refuses to run; every other name raises
    ModuleNotFoundError (which mmseg catches for optional ops) and dunder lookups AttributeError
    (mmengine's registry probes them). A real ``mmcv.ops`` (full mmcv) is used as it is.
    """
    global _MMSEG_READY
    if _MMSEG_READY:
        return
    import importlib
    import sys
    import types
    import warnings

    _ensure_torchvision()  # mmseg imports timm
    try:
        importlib.import_module("mmcv.ops")
    except (ImportError, OSError):
        import torch.nn.functional as F

        def point_sample(input, points, align_corners=False, **kwargs):
            """mmcv's ``point_sample``: grid_sample at points in [0, 1] coordinates."""
            add_dim = points.dim() == 3
            if add_dim:
                points = points.unsqueeze(2)
            out = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
            return out.squeeze(3) if add_dim else out

        def sigmoid_focal_loss(*args, **kwargs):
            raise NotImplementedError("sigmoid_focal_loss needs the compiled mmcv.ops (full mmcv)")

        def missing(name):
            if name.startswith("__"):
                raise AttributeError(name)
            raise ModuleNotFoundError(f"mmcv.ops.{name} needs the compiled mmcv.ops (full mmcv); mmcv-lite has none")

        ops = types.ModuleType("mmcv.ops")
        ops.point_sample, ops.sigmoid_focal_loss, ops.__getattr__ = point_sample, sigmoid_focal_loss, missing
        sys.modules["mmcv.ops"] = ops
        import mmcv

        mmcv.ops = ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mmcv-lite warns about every compiled op it lacks
        importlib.import_module("mmseg.models")
        importlib.import_module("mmseg.datasets")
    _MMSEG_READY = True
