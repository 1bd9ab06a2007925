"""linear_probe: a linear classifier on a frozen vector representation (paper Tables 1 and 4).

Official head (``patch_lincls.py``, ``cls_head_type='linear'``): ``Linear(D, C)`` on the CLS token
after the final norm, weight ~ N(0, 0.01), bias 0, no BatchNorm. ``batchnorm: true`` puts MAE's
``BatchNorm1d(D, affine=False, eps=1e-6)`` in front (not used by the paper). Optimisation, the lr sweep
and the three reported accuracies are shared with attentive_probe (see ``_probe.py``, docs/probes.md).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.api import hookimpl, Option

from ._probe import ProbeTask, probe_options


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, batchnorm: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else None
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @staticmethod
    def shared(x: torch.Tensor) -> torch.Tensor:
        """Parameter-free preprocessing computed once per batch for all heads of a sweep."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            x = self.bn(x)
        return self.fc(x)


class LinearProbe(ProbeTask):
    """Linear probe on a frozen representation (official protocol: CLS, SGD lr 0.1 x batch/256, 90 epochs)."""

    options = {
        **probe_options(base_lr=0.1),
        "representation": Option(str, "cls", "frozen vector the classifier reads",
                                 choices=["cls", "mean_patch", "projected", "pooled"]),
        "batchnorm": Option(bool, False, "MAE-style BatchNorm1d(affine=False, eps=1e-6) before the linear "
                            "layer (the paper's protocol has none)"),
    }

    def representation(self) -> str:
        return self.opts["representation"]

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return LinearHead(dim, num_classes, self.opts["batchnorm"])

    def head_details(self) -> dict:
        return {"type": "linear", "input": self.opts["representation"],
                "batchnorm": ("BatchNorm1d(affine=False, eps=1e-6), running statistics at evaluation"
                              if self.opts["batchnorm"] else None),
                "init": "weight N(0, 0.01), bias 0"}


@hookimpl
def register_tasks(register):
    register("linear_probe", LinearProbe)
