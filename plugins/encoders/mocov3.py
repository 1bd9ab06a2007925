"""MoCo v3 ViT-B/16 (facebookresearch/moco-v3).

File: ``vit-b-300ep.pth.tar`` = ``{'epoch', 'arch', 'state_dict', 'optimizer', 'scaler'}``; ``state_dict``
keys are ``module.base_encoder.*`` (backbone + ``head.*`` = projector), ``module.momentum_encoder.*`` and
``module.predictor.*``.
Backbone: ``module.base_encoder.*`` without ``head.*`` (as main_lincls.py / convert_to_deit.py); timm ViT
with a fixed 2-D sin-cos ``pos_embed`` stored in the file, LayerNorm eps 1e-6.
``projected``: the projector ``base_encoder.head`` applied to the CLS token after the final norm (what
the paper code returns): Linear(no bias)-BN-ReLU, Linear-BN-ReLU, Linear-BN(affine=False), 768->4096->256,
BatchNorm with its running statistics (eval mode). With ``projection: predictor`` the predictor
(Linear-BN-ReLU-Linear-BN(affine=False), 256->4096->256) is applied on top, as the online branch in
training. The momentum encoder is ignored (reported); the predictor is ignored unless selected.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from harness.api import HarnessError, Option, hookimpl

from .checkpoint_reading import count_by_prefix, strip_prefix
from .encoder_bases import CheckpointEncoder, Split

BASE = "module.base_encoder."


class MoCoMLP(nn.Sequential):
    """moco-v3 ``_build_mlp``: [Linear(bias=False), BN, ReLU] * (L-1), Linear(bias=False), BN(affine=False).

    Built from the shapes of a state dict with keys ``<3i>.weight`` (Linear) / ``<3i+1>.*`` (BN)."""

    @classmethod
    def from_state_dict(cls, sd: dict, where: str) -> "MoCoMLP":
        layers: list[nn.Module] = []
        i = 0
        while f"{i}.weight" in sd and sd[f"{i}.weight"].ndim == 2:
            out_dim, in_dim = sd[f"{i}.weight"].shape
            layers.append(nn.Linear(in_dim, out_dim, bias=False))
            last = f"{i + 3}.weight" not in sd
            if f"{i + 1}.running_mean" in sd:
                layers.append(nn.BatchNorm1d(out_dim, affine=not last))
            elif not last:
                raise HarnessError(f"{where}: MoCo v3 MLP: no BatchNorm '{i + 1}.running_mean' after Linear {i}")
            if not last:
                layers.append(nn.ReLU(inplace=False))
            i += 3
        if not layers:
            raise HarnessError(f"{where}: MoCo v3 MLP: no '0.weight' Linear layer")
        return cls(*layers)


class Projection(nn.Module):
    def __init__(self, projector: nn.Module, predictor: nn.Module | None):
        super().__init__()
        self.projector = projector
        self.predictor = predictor

    def forward(self, x):
        x = self.projector(x)
        return self.predictor(x) if self.predictor is not None else x


class MoCoV3(CheckpointEncoder):
    """MoCo v3 base encoder, with its projector (and optionally predictor) as 'projected'."""

    method = "MoCo v3"
    pretraining = "contrastive"
    has_head = True
    representations = ("cls", "mean_patch", "tokens", "blocks", "projected")
    expected = ("the MoCo v3 file vit-b-300ep.pth.tar (a dict with 'state_dict' holding "
                "'module.base_encoder.*' keys)")
    options = {
        "projection": Option(str, "projector", "what 'projected' is: the 3-layer projector (paper code) or "
                                               "projector followed by the predictor",
                             choices=["projector", "predictor"]),
    }

    def split(self, obj) -> Split:
        sd = self.require_dict(obj, "state_dict")
        base = strip_prefix(sd, BASE)
        if not base:
            raise self.wrong_layout(obj, "no 'module.base_encoder.*' keys in checkpoint['state_dict']")
        head = strip_prefix(base, "head.")
        backbone = {k: v for k, v in base.items() if not k.startswith("head.")}
        use_pred = self.opts.get("projection") == "predictor"
        pred = strip_prefix(sd, "module.predictor.")
        if use_pred and not pred:
            raise self.wrong_layout(obj, "projection: predictor needs 'module.predictor.*' keys")
        ignored_keys = [k for k in sd if not k.startswith(BASE)
                        and not (use_pred and k.startswith("module.predictor."))]
        ignored = count_by_prefix(ignored_keys, depth=2)
        ignored.update({f"checkpoint['{k}']": 1 for k in obj if k != "state_dict"})
        heads = {f"projector.{k}": v for k, v in head.items()}
        if use_pred:
            heads.update({f"predictor.{k}": v for k, v in pred.items()})
        return Split(backbone=backbone, head=heads or None, ignored=ignored,
                     source="checkpoint['state_dict'], prefix 'module.base_encoder.'")

    def build_head(self, sd: dict) -> nn.Module:
        proj = MoCoMLP.from_state_dict(strip_prefix(sd, "projector."), f"{self.path} (projector)")
        pred = None
        if self.opts.get("projection") == "predictor":
            pred = MoCoMLP.from_state_dict(strip_prefix(sd, "predictor."), f"{self.path} (predictor)")
        return Projection(proj, pred)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens[:, 0])


@hookimpl
def register_encoders(register):
    register("mocov3", MoCoV3)
