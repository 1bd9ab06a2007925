"""attentive_probe: CAE-style attentive probing on all frozen tokens (paper Tables 1 and 4).

The head of the official ``patch_lincls.py`` (``cls_head_type='attentive'``, ``DecoderBlockSimple``):
a learned query token (trunc-normal, std 0.02); LayerNorm(eps 1e-6) on the query, key and value
inputs; one multi-head cross-attention from the query to **all** tokens, the CLS token included,
with q/k/v ``Linear(D, D, bias=False)`` plus ``q_bias`` and ``v_bias`` (no key bias) and an output
``proj``; no residual, no MLP; then ``BatchNorm(D, affine=False, eps=1e-5)``; then ``Linear(D, C)``
(weight N(0, 0.01), bias 0). q/k/v/proj weights are trunc-normal(0.02), biases 0.

The official BatchNorm is called with ``is_train=True`` always, so test batches are normalised with
their own statistics (batches of 256). ``bn_batch_stats_at_eval: true`` reproduces that;
the default uses the running statistics at evaluation, as a normal BatchNorm would. The choice is
recorded in the result details.

Because the query is one shared learned token, the block is computed in an algebraically equivalent
form that never projects every token to keys and values: with x^ = LayerNorm(x) (no affine),
``q_h . (W_k,h LN_k(x_t)) = x^_t . (g_k * W_k,h^T q_h) + const`` and
``sum_t a_t W_v,h LN_v(x_t) = W_v,h ((sum_t a_t x^_t) * g_v + b_v)`` (the weights a_t sum to 1).
That is D/heads times fewer multiply-adds than the textbook block; the parameters, outputs and
gradients are the same (tests compare it with a plain implementation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import HarnessError, hookimpl, Option

from ._probe import ProbeTask, probe_options


class AttentiveHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_heads: int = 12, bn_batch_stats_at_eval: bool = False):
        super().__init__()
        if dim % num_heads:
            raise HarnessError(f"attentive head: num_heads {num_heads} does not divide the feature width {dim}")
        self.dim, self.num_heads = dim, num_heads
        self.bn_batch_stats_at_eval = bn_batch_stats_at_eval
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-5, momentum=0.1)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.query, std=0.02)
        for lin in (self.q, self.k, self.v, self.proj):
            nn.init.trunc_normal_(lin.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @staticmethod
    def shared(x: torch.Tensor) -> torch.Tensor:
        """LayerNorm without affine of all tokens [B,T,D]: the part of norm_k/norm_v that has no
        parameters, computed once per batch for all heads of an lr sweep."""
        return F.layer_norm(x, (x.shape[-1],), eps=1e-6)

    def attend(self, xhat: torch.Tensor) -> torch.Tensor:
        """Cross-attention output (after proj) [B,D] from normalised tokens x^ [B,T,D]."""
        H, D = self.num_heads, self.dim
        dh = D // H
        q = F.linear(self.norm_q(self.query.reshape(1, D)), self.q.weight, self.q_bias)
        q = q.reshape(H, dh) * dh ** -0.5
        u = torch.einsum("he,hed->hd", q, self.k.weight.reshape(H, dh, D))  # the query in token space
        logits = torch.einsum("btd,hd->bht", xhat, u * self.norm_k.weight)
        logits = logits + (u @ self.norm_k.bias)[None, :, None]  # constant over tokens (kept for fidelity)
        attn = logits.softmax(dim=-1)
        pooled = torch.einsum("bht,btd->bhd", attn, xhat) * self.norm_v.weight + self.norm_v.bias
        out = torch.einsum("bhd,hed->bhe", pooled, self.v.weight.reshape(H, dh, D)) + self.v_bias.reshape(H, dh)
        return self.proj(out.reshape(len(xhat), D))

    def forward(self, xhat: torch.Tensor) -> torch.Tensor:
        z = self.attend(xhat)
        bn = self.bn
        if self.training:
            z = F.batch_norm(z, bn.running_mean, bn.running_var, None, None, True, bn.momentum, bn.eps)
        elif self.bn_batch_stats_at_eval:  # official: this test batch's own statistics
            z = F.batch_norm(z, None, None, None, None, True, 0.0, bn.eps)
        else:
            z = F.batch_norm(z, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
        return self.fc(z)


class AttentiveProbe(ProbeTask):
    """Attentive probe (CAE-style cross-attention + BatchNorm + linear) on all frozen tokens."""

    options = {
        **probe_options(base_lr=0.01),
        "num_heads": Option(int, 12, "attention heads of the cross-attention (must divide the token width)",
                            check=lambda v: None if v >= 1 else "must be >= 1"),
        "bn_batch_stats_at_eval": Option(bool, False, "normalise test batches with their own statistics, as the "
                                         "official code does (default: running statistics)"),
    }

    def representation(self) -> str:
        return "tokens"

    def validate_dim(self, dim: int) -> None:
        if dim % self.opts["num_heads"]:
            raise HarnessError(f"{self.name}: num_heads {self.opts['num_heads']} does not divide the encoder's "
                               f"token width {dim}; choose a divisor of {dim}")

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return AttentiveHead(dim, num_classes, self.opts["num_heads"], self.opts["bn_batch_stats_at_eval"])

    def head_details(self) -> dict:
        stats = self.opts["bn_batch_stats_at_eval"]
        return {"type": "attentive", "input": "tokens (CLS + all patches, after the final norm)",
                "num_heads": self.opts["num_heads"],
                "bn_at_eval": "batch statistics (official)" if stats else "running statistics",
                "bn_batch_stats_at_eval": stats,
                "init": "query trunc-normal 0.02; q/k/v/proj trunc-normal 0.02, biases 0; fc N(0, 0.01), bias 0"}


@hookimpl
def register_tasks(register):
    register("attentive_probe", AttentiveProbe)
