"""Tiny weight files in the *official* layouts of the paper's seven methods (DeiT, MoCo v3, DINO, iBOT,
BEiT, MAE, CAE): deterministic random tensors (a seeded CPU generator, so every machine writes the same
values) under the key names, wrappers and extra entries of the released checkpoints; only the sizes are tiny
(width 64, depth 2, the real 224/16 grid). Used by the encoder tests and the golden-output cases."""
from __future__ import annotations

import argparse

import torch

from _vit_reference import sincos_2d

D, DEPTH, HEADS, P, GRID = 64, 2, 2, 16, 14  # tiny width/depth, but the real 224/16 grid


# ------------------------------------------------------------------------------------------------
# tiny weights in the official key layouts
# ------------------------------------------------------------------------------------------------
class W:
    """Deterministic random tensors."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def n(self, *shape, std=None):
        fan_in = shape[-1] if len(shape) > 1 else 1
        std = fan_in ** -0.5 if std is None else std
        return torch.randn(*shape, generator=self.g) * std

    def ln(self, d=D):
        return 1 + self.n(d, std=0.1), self.n(d, std=0.1)


def vit_backbone(w: W, *, beit=False, pos="learned"):
    """timm/official ViT keys; beit=True: q_bias/v_bias, gamma_1/2 (BEiT, CAE)."""
    sd = {"cls_token": w.n(1, 1, D, std=0.5),
          "patch_embed.proj.weight": w.n(D, 3, P, P, std=(3 * P * P) ** -0.5),
          "patch_embed.proj.bias": w.n(D, std=0.1)}
    if pos == "learned":
        sd["pos_embed"] = w.n(1, 1 + GRID * GRID, D, std=0.5)
    elif pos == "sincos":
        sd["pos_embed"] = sincos_2d(GRID, D)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = w.ln()
        sd[b + "attn.qkv.weight"] = w.n(3 * D, D)
        if beit:
            sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = w.n(D, std=0.1), w.n(D, std=0.1)
        else:
            sd[b + "attn.qkv.bias"] = w.n(3 * D, std=0.1)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = w.n(D, D), w.n(D, std=0.1)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = w.ln()
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = w.n(4 * D, D), w.n(4 * D, std=0.1)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = w.n(D, 4 * D), w.n(D, std=0.1)
        if beit:
            sd[b + "gamma_1"], sd[b + "gamma_2"] = 0.1 + w.n(D, std=0.3), 0.1 + w.n(D, std=0.3)
    sd["norm.weight"], sd["norm.bias"] = w.ln()
    return sd


def moco_mlp(w: W, dims, last_bn=True):
    """moco-v3 _build_mlp keys: Linear(no bias) at 3i, BN at 3i+1 (affine=False at the end)."""
    sd = {}
    for li in range(len(dims) - 1):
        sd[f"{3 * li}.weight"] = w.n(dims[li + 1], dims[li])
        bn = f"{3 * li + 1}."
        last = li == len(dims) - 2
        if not last:
            sd[bn + "weight"], sd[bn + "bias"] = w.ln(dims[li + 1])
        if not last or last_bn:
            sd[bn + "running_mean"] = w.n(dims[li + 1], std=0.3)
            sd[bn + "running_var"] = 0.5 + torch.rand(dims[li + 1], generator=w.g)
            sd[bn + "num_batches_tracked"] = torch.tensor(1000)
    return sd


def dino_head_sd(w: W, out=96, ibot=False):
    sd = {"mlp.0.weight": w.n(48, D), "mlp.0.bias": w.n(48, std=0.1),
          "mlp.2.weight": w.n(48, 48), "mlp.2.bias": w.n(48, std=0.1),
          "mlp.4.weight": w.n(16, 48), "mlp.4.bias": w.n(16, std=0.1),
          "last_layer.weight_g": torch.ones(out, 1) + w.n(out, 1, std=0.1),  # g != 1 exercises the formula
          "last_layer.weight_v": w.n(out, 16)}
    if ibot:
        sd["last_layer2.weight_g"] = torch.ones(out, 1)
        sd["last_layer2.weight_v"] = w.n(out, 16)
    return sd


def prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def optimizer_state(w: W):
    return {"state": {0: {"exp_avg": w.n(4), "exp_avg_sq": w.n(4).abs()}},
            "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "params": [0]}]}


def rel_index(g):
    """BEiT relative position index, written independently: row/col 0 is the CLS token."""
    coords = [(y, x) for y in range(g) for x in range(g)]
    n_rel = (2 * g - 1) ** 2 + 3
    idx = torch.empty(g * g + 1, g * g + 1, dtype=torch.long)
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            idx[i + 1, j + 1] = (yi - yj + g - 1) * (2 * g - 1) + (xi - xj + g - 1)
    idx[0, :] = n_rel - 3
    idx[:, 0] = n_rel - 2
    idx[0, 0] = n_rel - 1
    return idx


def make(method: str, w: W, variant: str = "") -> dict:
    """A checkpoint object in `method`'s official layout (variant: backbone-only files etc.)."""
    args = argparse.Namespace(arch="vit_base", patch_size=16, out_dim=96, lr=5e-4)
    if method == "deit":
        sd = vit_backbone(w)
        sd["head.weight"], sd["head.bias"] = w.n(10, D), w.n(10, std=0.1)
        return sd if variant == "google_vit" else {"model": sd}
    if method == "mocov3":
        base = vit_backbone(w, pos="sincos")
        base.update(prefixed(moco_mlp(w, [D, 96, 96, 32]), "head."))
        mom = {k: v + 0.01 for k, v in base.items()}
        sd = prefixed(base, "module.base_encoder.")
        sd.update(prefixed(mom, "module.momentum_encoder."))
        sd.update(prefixed(moco_mlp(w, [32, 96, 32]), "module.predictor."))
        return {"epoch": 300, "arch": "vit_base", "state_dict": sd, "optimizer": optimizer_state(w),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                           "growth_interval": 2000, "_growth_tracker": 7}}
    if method in ("dino", "ibot"):
        ibot = method == "ibot"
        teacher_bb = vit_backbone(w)
        if variant == "backbone":
            return {"state_dict": teacher_bb} if ibot else teacher_bb
        teacher = prefixed(teacher_bb, "backbone.")
        teacher.update(prefixed(dino_head_sd(w, ibot=ibot), "head."))
        student_bb = vit_backbone(w)
        if ibot:
            student_bb["masked_embed"] = w.n(1, D)
        student = prefixed(student_bb, "module.backbone.")
        student.update(prefixed(dino_head_sd(w, ibot=ibot), "module.head."))
        out = {"student": student, "teacher": teacher, "optimizer": optimizer_state(w), "epoch": 100,
               "args": args, "fp16_scaler": None}
        out["ibot_loss" if ibot else "dino_loss"] = {"center": w.n(1, 96)}
        return out
    if method == "beit":
        sd = vit_backbone(w, beit=True, pos="none")
        n_rel = (2 * GRID - 1) ** 2 + 3
        sd["rel_pos_bias.relative_position_bias_table"] = w.n(n_rel, HEADS, std=0.5)
        sd["rel_pos_bias.relative_position_index"] = rel_index(GRID)
        sd["mask_token"] = w.n(1, 1, D)
        sd["lm_head.weight"], sd["lm_head.bias"] = w.n(50, D), w.n(50, std=0.1)
        return {"model": sd, "optimizer": optimizer_state(w), "epoch": 799, "args": args,
                "scaler": {"scale": 1024.0}}
    if method == "mae":
        sd = vit_backbone(w, pos="sincos")
        if variant == "full":  # a training checkpoint: decoder and mask token too
            sd["mask_token"] = w.n(1, 1, 32)
            sd["decoder_embed.weight"], sd["decoder_embed.bias"] = w.n(32, D), w.n(32)
            sd["decoder_pos_embed"] = sincos_2d(GRID, 32)
            sd["decoder_blocks.0.norm1.weight"] = torch.ones(32)
            sd["decoder_norm.weight"], sd["decoder_pred.weight"] = torch.ones(32), w.n(768, 32)
            return {"model": sd, "optimizer": optimizer_state(w), "epoch": 799, "args": args}
        return {"model": sd}
    if method == "cae":
        enc = vit_backbone(w, beit=True, pos="sincos")
        sd = prefixed(enc, "encoder.")
        sd.update(prefixed({k: v.clone() for k, v in enc.items()}, "alignment_encoder."))
        sd["rd_pos_embed"] = sincos_2d(GRID, D)
        sd["regresser.regressor_blocks.0.norm1_q.weight"] = torch.ones(D)
        sd["regresser.norm.weight"] = torch.ones(D)
        sd["mask_token"] = w.n(1, 1, D)
        sd["decoder.decoder_blocks.0.norm1.weight"] = torch.ones(D)
        sd["decoder.head.weight"], sd["decoder.head.bias"] = w.n(50, D), w.n(50)
        return {"model": sd, "optimizer": optimizer_state(w), "epoch": 1599, "args": args,
                "scaler": {"scale": 1024.0}}
    raise ValueError(method)
