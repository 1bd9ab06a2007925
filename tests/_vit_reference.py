"""An independent reference forward for ViT/BEiT state dicts in the official key layout.

Plain tensor ops only (no timm, no nn.Module): written from the papers' definitions so that the encoder
plugins (which run timm modules through their own Backbone) are checked against a second implementation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """GELU's tanh approximation (Hendrycks & Gimpel): big_vision's ``nn.gelu`` default, transformers'
    ``gelu_pytorch_tanh``."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _cubic_matrix(n_in: int, n_out: int, scale: float) -> torch.Tensor:
    """[n_out, n_in] weights of 1-D bicubic resampling (Keys a=-0.75, align_corners=False, edges
    replicated): output i samples the input at (i + 0.5) / scale - 0.5, scale = output per input."""
    a = -0.75

    def k(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        if t < 2:
            return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
        return 0.0

    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        x0 = math.floor(src)
        for j in range(x0 - 1, x0 + 3):
            m[i, min(max(j, 0), n_in - 1)] += k(src - j)
    return m


def interp_pos(pos, gh, gw, antialias=False, rule="size"):
    """pos [1, 1+g*g, D] -> [1, 1+gh*gw, D], bicubic (align_corners=False), CLS slot unchanged.

    rule "size": resample to (gh, gw), i.e. scale gh/g (DeiT, MoCo v3, MAE, CAE, BEiT and the segmentation
    code); rule "dino": DINO's and iBOT's ``interpolate_pos_encoding``, ``scale_factor=((gh + 0.1) / g,
    (gw + 0.1) / g)`` - the output is still gh x gw, but every sample position uses the +0.1 scale.
    Computed here with explicit bicubic weight matrices, independently of ``F.interpolate``.
    antialias=True is timm's resampling (PyTorch's antialiased bicubic uses the PIL kernel, a=-0.5, even
    when upsampling)."""
    g = int(round((pos.shape[1] - 1) ** 0.5))
    if (gh, gw) == (g, g):
        return pos
    grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    if antialias:
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=True)
    else:
        sh, sw = ((gh + 0.1) / g, (gw + 0.1) / g) if rule == "dino" else (gh / g, gw / g)
        mh, mw = _cubic_matrix(g, gh, sh), _cubic_matrix(g, gw, sw)
        grid = torch.einsum("hi,bcij,wj->bchw", mh, grid.double(), mw).to(pos.dtype)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)


def vit_forward(sd, x, *, heads, eps=1e-6, rel_bias=None, blocks=(), antialias=False, pos_rule="size"):
    """Returns (tokens after final norm, {i: block output}).

    sd: backbone state dict, keys as in the official repos (``blocks.i.attn.qkv.weight`` etc.; BEiT/CAE
    style ``attn.q_bias``/``attn.v_bias`` and ``gamma_1``/``gamma_2`` are honoured when present).
    rel_bias: optional callable (gh, gw) -> [heads, 1+N, 1+N] added to every block's attention logits.
    """
    w = sd["patch_embed.proj.weight"]
    p = w.shape[-1]
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    # patchify: [B, N, C*p*p] in (c, ky, kx) order = the conv weight's flattening
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    t = patches @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"]
    t = torch.cat([sd["cls_token"].expand(B, 1, -1), t], dim=1)
    if "pos_embed" in sd:
        t = t + interp_pos(sd["pos_embed"], gh, gw, antialias, pos_rule)
    bias = rel_bias(gh, gw) if rel_bias is not None else None
    D = t.shape[-1]
    hd = D // heads
    out = {}
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        pre = f"blocks.{i}."
        h = layer_norm(t, sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps)
        if pre + "attn.q_bias" in sd:
            qkv_b = torch.cat([sd[pre + "attn.q_bias"], torch.zeros_like(sd[pre + "attn.q_bias"]),
                               sd[pre + "attn.v_bias"]])
        else:
            qkv_b = sd.get(pre + "attn.qkv.bias", torch.zeros(3 * D))
        qkv = h @ sd[pre + "attn.qkv.weight"].T + qkv_b
        q, k, v = qkv.reshape(B, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        if bias is not None:
            logits = logits + bias
        a = torch.softmax(logits, dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, -1, D) @ sd[pre + "attn.proj.weight"].T + sd[pre + "attn.proj.bias"]
        t = t + (sd[pre + "gamma_1"] * a if pre + "gamma_1" in sd else a)
        h = layer_norm(t, sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps)
        m = gelu(h @ sd[pre + "mlp.fc1.weight"].T + sd[pre + "mlp.fc1.bias"])
        m = m @ sd[pre + "mlp.fc2.weight"].T + sd[pre + "mlp.fc2.bias"]
        t = t + (sd[pre + "gamma_2"] * m if pre + "gamma_2" in sd else m)
        if i in blocks:
            out[i] = t
        i += 1
    return layer_norm(t, sd["norm.weight"], sd["norm.bias"], eps), out


def dino_head(sd, cls):
    """DINOHead: Linear-GELU-...-Linear, L2 normalise, weight-normed last layer (W = g v / ||v||)."""
    h = cls
    i = 0
    while f"mlp.{i}.weight" in sd:
        h = h @ sd[f"mlp.{i}.weight"].T + sd[f"mlp.{i}.bias"]
        if f"mlp.{i + 2}.weight" in sd:
            h = gelu(h)
        i += 2
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v, g = sd["last_layer.weight_v"], sd["last_layer.weight_g"]
    return h @ (g * v / v.norm(dim=1, keepdim=True)).T


def sincos_2d(grid, dim, cls=True):
    """MoCo v3 / MAE / CAE fixed 2-D sin-cos position embedding [1, 1+g*g, dim], zero CLS slot."""
    gw = torch.arange(grid, dtype=torch.float32)
    gh = torch.arange(grid, dtype=torch.float32)
    gw, gh = torch.meshgrid(gw, gh, indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    ow = gw.flatten()[:, None] * omega[None]
    oh = gh.flatten()[:, None] * omega[None]
    pe = torch.cat([torch.sin(ow), torch.cos(ow), torch.sin(oh), torch.cos(oh)], dim=1)[None]
    if cls:
        pe = torch.cat([torch.zeros(1, 1, dim), pe], dim=1)
    return pe
