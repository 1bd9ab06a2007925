"""One engine for every head partbench trains on frozen features: the probes' learning-rate sweep and the
dense tasks' (segmentation, pose).

A ``HeadBank`` holds one head per learning rate, all with the same initialisation (the RNG is forked and
seeded for each), trained in lockstep on the same batches: one feature read per step for the whole sweep,
the best head chosen afterwards on held-out data (dinov2's linear evaluation does the same). The losses of
the heads are summed before one backward pass; the heads share no parameters, so every head gets exactly
the gradient it would get alone.

What differs between tasks is a parameter, not a class:
- the optimiser: a factory ``(heads, lrs) -> torch.optim.Optimizer`` (``sgd`` for the probes' protocol,
  ``adamw`` for the dense ones); every param group carries its head's ``base_lr``;
- the schedule: a function ``(base_lr, t) -> lr`` applied by ``set_step(t)``, per epoch (probes) or per
  iteration (dense tasks).

A head may define ``shared(x)``: a parameter-free function of the input computed once per batch for all
heads (the attentive probe's LayerNorm without affine); the bank calls the first head's and gives its output
to every head.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

Factory = Callable[[Sequence[torch.nn.Module], Sequence[float]], torch.optim.Optimizer]


def learning_rates(lr: float, lrs) -> list[float]:
    """``lr`` first, then the further rates of ``lrs`` not already listed (the heads trained in lockstep)."""
    out = [float(lr)]
    for v in lrs or []:
        if float(v) not in out:
            out.append(float(v))
    return out


def check_lrs(v) -> str | None:
    """Option check of an ``lrs`` list (null allowed: no further rates)."""
    if v is None:
        return None
    if not v:
        return "must be a non-empty list of base learning rates (or null)"
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return f"every entry must be a number, got {x!r}"
        if not x > 0:
            return f"every base learning rate must be > 0, got {x!r}"
    return None


def sgd(momentum: float, weight_decay: float) -> Factory:
    """SGD with one param group per head (the probes' protocol)."""
    def build(heads, lrs):
        groups = [{"params": list(h.parameters()), "lr": lr, "base_lr": lr} for h, lr in zip(heads, lrs)]
        return torch.optim.SGD(groups, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    return build


def adamw(weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8, bias_decay: bool = True) -> Factory:
    """AdamW with one param group per head; ``bias_decay: false`` gives each head's biases a second group
    without weight decay (the layer-decay constructors of the MAE/BEiT/CAE configs exempt them)."""
    def build(heads, lrs):
        groups = []
        for head, lr in zip(heads, lrs):
            named = list(head.named_parameters())
            decay = [p for n, p in named if bias_decay or not n.endswith("bias")]
            plain = [p for n, p in named if not bias_decay and n.endswith("bias")]
            groups.append({"params": decay, "lr": lr, "base_lr": lr, "weight_decay": weight_decay})
            if plain:
                groups.append({"params": plain, "lr": lr, "base_lr": lr, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay)
    return build


class HeadBank:
    """Heads (one per learning rate in ``lrs``) with identical initialisation, trained in lockstep."""

    def __init__(self, make_head: Callable[[], torch.nn.Module], lrs: Sequence[float], optimizer: Factory,
                 schedule: Callable[[float, int], float] | None = None, seed: int = 0, device="cpu"):
        self.lrs = [float(v) for v in lrs]
        self.heads = []
        for _ in self.lrs:
            # identical initialisation for every lr: differences come from the lr alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.heads.append(make_head().to(device))
        self.shared = getattr(self.heads[0], "shared", None)
        self.optim = optimizer(self.heads, self.lrs)
        self.schedule = schedule

    def set_step(self, t: int) -> list[float]:
        """Set every head's learning rate to ``schedule(base_lr, t)``; returns them (one per head)."""
        for g in self.optim.param_groups:
            g["lr"] = self.schedule(g["base_lr"], t)
        return [self.schedule(lr, t) for lr in self.lrs]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x) if self.shared is not None else x

    def step(self, x: torch.Tensor, loss_of: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One optimiser step of every head on the batch ``x``; returns the heads' losses [K] (detached)."""
        for h in self.heads:
            if not h.training:  # (a recursive train() per step costs more than a small head's step)
                h.train()
        inp = self._input(x)
        losses = torch.stack([loss_of(h, inp) for h in self.heads])
        self.optim.zero_grad(set_to_none=True)
        losses.sum().backward()  # heads share no parameters: each gets its own gradient
        self.optim.step()
        return losses.detach()

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every head's output on ``x``, in evaluation mode."""
        for h in self.heads:
            if h.training:
                h.eval()
        inp = self._input(x)
        return [h(inp) for h in self.heads]

    def state(self) -> list[dict]:
        return [{k: v.detach().cpu() for k, v in h.state_dict().items()} for h in self.heads]
