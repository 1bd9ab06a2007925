"""Shared by the DINO and iBOT plugins: a full training checkpoint (teacher/student, backbone.* + head.*)
or a backbone-only teacher file, with the DINOHead-style projection head as 'projected'."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.api import HarnessError, Option

from .checkpoint_reading import count_by_prefix, is_state_dict, map_weight_norm_keys, strip_prefix
from .encoder_bases import CheckpointEncoder, Split


class WeightNormLinear(nn.Module):
    """``nn.utils.weight_norm(nn.Linear(in, out, bias=False))`` as stored: W = g * v / ||v|| per row."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.normal_(self.weight_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return F.linear(x, w.to(x.dtype))


class DINOHead(nn.Module):
    """DINO / iBOT (CLS branch) projection head: MLP (Linear-GELU ... Linear) -> L2-normalise ->
    weight-normalised Linear without bias. Keys: ``mlp.<i>.*``, ``last_layer.weight_g/v``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(dims[-1], out_dim)

    @classmethod
    def from_state_dict(cls, sd: dict, where: str) -> "DINOHead":
        """Build from ``mlp.0.weight``, ``mlp.2.weight``, ... and ``last_layer.weight_v`` shapes."""
        dims, i = [], 0
        while f"mlp.{i}.weight" in sd:
            w = sd[f"mlp.{i}.weight"]
            if not dims:
                dims.append(w.shape[1])
            dims.append(w.shape[0])
            i += 2  # Linear, GELU, Linear, ... (no BN: use_bn_in_head is False in the official runs)
        if not dims or "last_layer.weight_v" not in sd:
            raise HarnessError(f"{where}: projection head needs 'mlp.0.weight' and 'last_layer.weight_v' "
                               f"(DINOHead layout)")
        return cls(dims, sd["last_layer.weight_v"].shape[0])


class ExactLowRankHead(nn.Module):
    """A DINOHead's ``projected`` in its bottleneck width, with every dot product unchanged.

    The head outputs ``W z`` (W: out x b weight-normalised rows, z: the L2-normalised b-dim bottleneck;
    DINO 65,536 x 256, iBOT 8,192 x 256). With ``W^T W = L L^T`` (Cholesky, fp64), ``(L^T z_a)^T (L^T z_b) =
    z_a^T W^T W z_b = (W z_a)^T (W z_b)``: dot products, norms, cosine similarities and distances of the
    b-dim ``L^T z`` equal those of the full output (``W z = Q L^T z`` with Q = W L^-T orthonormal columns),
    so retrieval is identical and a linear probe sees the same function class, at 256 instead of 65,536
    numbers per item."""

    def __init__(self, head: "DINOHead", where: str):
        super().__init__()
        self.mlp = head.mlp
        ll = head.last_layer
        w = (ll.weight_g.double() * ll.weight_v.double() / ll.weight_v.double().norm(dim=1, keepdim=True))
        rank = int(torch.linalg.matrix_rank(w))  # a singular W^T W can still pass Cholesky by rounding
        try:
            if rank < w.shape[1]:
                raise RuntimeError("rank deficient")
            chol = torch.linalg.cholesky(w.T @ w)
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            raise HarnessError(f"{where}: the projection head's last layer W^T W is not positive definite (rank "
                               f"{rank} of {w.shape[1]}); set full_projection: true") from None
        self.register_buffer("chol", chol.float())  # z @ L = (L^T z)^T for row vectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1, p=2) @ self.chol.to(x.dtype)


class DINOLike(CheckpointEncoder):
    """Shared by DINO and iBOT: full checkpoint (teacher/student) or a backbone-only file."""

    has_head = True
    pos_resample = "dino"  # interpolate_pos_encoding: scale_factor=(g' + 0.1) / g, not size=
    representations = ("cls", "mean_patch", "tokens", "blocks", "projected")
    options = {
        "network": Option(str, "teacher", "which network of a full checkpoint: teacher (paper) or student",
                          choices=["teacher", "student"]),
        "full_projection": Option(bool, False, "'projected' as the head's full output (DINO 65,536-d, iBOT "
                                  "8,192-d) instead of its exact bottleneck-width equivalent (same dot products, "
                                  "norms and cosine similarities; docs/encoders.md)"),
    }
    #: wrapper key of the backbone-only file ("" = raw state dict)
    backbone_only_key = ""
    backbone_only_name = ""

    def check_full(self, obj: dict) -> None:
        """Method-specific sanity check of a full checkpoint (DINO vs iBOT heads)."""

    def head_keys_used(self, head: dict) -> tuple[dict, list[str]]:
        return head, []

    def split(self, obj) -> Split:
        net = self.opts.get("network", "teacher")
        if isinstance(obj, dict) and "teacher" in obj and "student" in obj:
            self.check_full(obj)
            sd = obj[net]
            if not isinstance(sd, dict):
                raise self.wrong_layout(obj, f"checkpoint['{net}'] is not a state dict")
            prefix = "module." if net == "student" and any(k.startswith("module.") for k in sd) else ""
            backbone = strip_prefix(sd, prefix + "backbone.")
            head = map_weight_norm_keys(strip_prefix(sd, prefix + "head."))
            if not backbone:
                raise self.wrong_layout(obj, f"no '{prefix}backbone.*' keys in checkpoint['{net}']")
            head, head_ignored = self.head_keys_used(head)
            rest = [k for k in sd if not k.startswith((prefix + "backbone.", prefix + "head."))]
            ignored = count_by_prefix(rest, depth=2)
            ignored.update({f"head.{k}": 1 for k in head_ignored})
            ignored.update({f"checkpoint['{k}']": 1 for k in obj if k != net})
            backbone, extra = self.backbone_extras(backbone)
            ignored.update(extra)
            return Split(backbone=backbone, head=head or None, ignored=ignored,
                         source=f"checkpoint['{net}'], prefix '{prefix}backbone.' / '{prefix}head.'")
        if self.backbone_only_key:
            if not (isinstance(obj, dict) and is_state_dict(obj.get(self.backbone_only_key))):
                raise self.wrong_layout(obj)
            sd, source = obj[self.backbone_only_key], f"checkpoint['{self.backbone_only_key}']"
            other = [k for k in obj if k != self.backbone_only_key]
        else:
            if not is_state_dict(obj):
                raise self.wrong_layout(obj)
            sd, source, other = obj, "state dict (raw)", []
        if net == "student":
            raise self.wrong_layout(obj, f"network: student needs the full checkpoint; the backbone-only "
                                         f"{self.backbone_only_name} holds the teacher")
        if "cls_token" not in sd or any(k.startswith(("module.", "backbone.", "head.")) for k in sd):
            raise self.wrong_layout(obj, "not a plain ViT backbone state dict")
        backbone, extra = self.backbone_extras(dict(sd))
        ignored = {f"checkpoint['{k}']": 1 for k in other}
        ignored.update(extra)
        return Split(backbone=backbone, head=None, ignored=ignored, source=source)

    def backbone_extras(self, backbone: dict) -> tuple[dict, dict]:
        return backbone, {}

    def build_head(self, sd: dict) -> nn.Module:
        return DINOHead.from_state_dict(sd, f"{self.path} (projection head)")

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        head = self.head
        if isinstance(head, DINOHead) and not self.opts.get("full_projection", False):
            out_dim, bottleneck = head.last_layer.weight_v.shape
            if out_dim > bottleneck:  # otherwise the full output is already the smaller one
                self.head = ExactLowRankHead(head, f"{self.path} (projection head)").eval().requires_grad_(False)
                self.head.to(device)
                self.load_report["projected"] = (f"exact {bottleneck}-d equivalent of the {out_dim}-d head output "
                                                 "(L^T z, L L^T = W^T W)")

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens[:, 0])
