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


def import_timm():
    """Import timm safely (offline, torchvision fixed) and return the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _ensure_torchvision()
    import timm

    return timm
