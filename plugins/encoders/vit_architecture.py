"""ViT architecture for the checkpoint encoders: what a state dict describes (``Arch``, ``infer_arch``), the
timm module that holds it (``build_model``) and ``Backbone``, our forward over those modules.

``Backbone.forward_intermediates`` runs the model at any input size that is a multiple of the patch size
and returns the tokens after the final norm plus the raw outputs of the requested blocks, CLS first
(``harness.api.Encoder.forward_intermediates``, timm's convention); ``capture_blocks`` is the block loop
that every family's forward shares. For inputs other than the checkpoint's grid the absolute position
embedding is resampled by the method's own rule (``Arch.pos_resample``), and BEiT's shared relative position
table by unilm's geometric-progression scheme with a bicubic spline.

The architecture is inferred from the checkpoint's tensor shapes (width, depth, patch size, MLP ratio,
grid, q/v bias, layer scale, position scheme); only the number of heads is not visible in the shapes and
defaults to ``embed_dim // 64`` (12 for ViT-B, the head width of every official ViT), overridable with the
``num_heads`` option. The LayerNorm eps is a property of each method (1e-6 for all seven official files).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.api import HarnessError
from harness.api import import_timm


@dataclass
class Arch:
    """What ``build_model`` builds. ``family``: "vit" (timm VisionTransformer) or "beit" (timm Beit)."""

    family: str = "vit"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    grid: int = 14  # patches per side at the checkpoint's resolution (224 / 16)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_scale: bool = False  # beit family only: gamma_1 / gamma_2
    abs_pos: bool = True
    shared_rel_pos: bool = False  # beit family only: one table shared by all blocks
    ln_eps: float = 1e-6
    #: how the position table is resampled to another grid, as the method's own code does it: "size"
    #: (bicubic to the target grid: DeiT, MoCo v3, MAE, CAE and the segmentation code) or "dino" (DINO's
    #: and iBOT's ``interpolate_pos_encoding``: bicubic with ``scale_factor=(g' + 0.1) / g``)
    pos_resample: str = "size"

    def describe(self) -> str:
        pos = "abs-pos" if self.abs_pos else ""
        if self.shared_rel_pos:
            pos = (pos + "+" if pos else "") + "shared-rel-pos"
        return (f"{self.family} d={self.embed_dim} depth={self.depth} heads={self.num_heads} "
                f"patch={self.patch_size} grid={self.grid} mlp={self.mlp_ratio:g} {pos or 'no-pos'}"
                f"{' layer-scale' if self.layer_scale else ''} ln_eps={self.ln_eps:g}")


def build_model(arch: Arch) -> nn.Module:
    """A timm model with this architecture, no classifier head, weights randomly initialised."""
    import_timm()
    from timm.models.beit import Beit
    from timm.models.vision_transformer import VisionTransformer

    norm = partial(nn.LayerNorm, eps=arch.ln_eps)
    common = dict(img_size=arch.grid * arch.patch_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
                  depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
                  num_classes=0, norm_layer=norm)
    if arch.family == "vit":
        if not arch.abs_pos or arch.shared_rel_pos or arch.layer_scale:
            raise ValueError("the vit family has absolute position embeddings and no layer scale")
        model = VisionTransformer(global_pool="token", class_token=True, **common)
    elif arch.family == "beit":
        model = Beit(global_pool="", use_fc_norm=False, init_values=0.1 if arch.layer_scale else None,
                     use_abs_pos_emb=arch.abs_pos, use_rel_pos_bias=False,
                     use_shared_rel_pos_bias=arch.shared_rel_pos, **common)
    else:
        raise ValueError(f"unknown ViT family {arch.family!r}")
    return model.eval()


def _isqrt_exact(n: int) -> int | None:
    r = math.isqrt(n)
    return r if r * r == n else None


class LayoutError(HarnessError):
    """The tensors do not form the expected ViT (the caller turns this into 'not a <method> checkpoint')."""


def infer_arch(sd: dict, family: str, *, num_heads: int | None, ln_eps: float, where: str) -> Arch:
    """Read the architecture off a (mapped) backbone state dict; ``where`` names the file for errors.

    Raises LayoutError (message: the reason only) when the keys are not those of a ``family`` ViT, and
    HarnessError for an option that does not fit the weights (``num_heads``)."""
    w = sd.get("patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise LayoutError("no ViT patch embedding 'patch_embed.proj.weight' after the key mapping")
    dim, _, ph, pw = w.shape
    if ph != pw:
        raise LayoutError(f"non-square patches {ph}x{pw} are not supported")
    depth = 0
    while f"blocks.{depth}.norm1.weight" in sd:
        depth += 1
    if depth == 0:
        raise LayoutError("no transformer blocks ('blocks.0.norm1.weight') after the key mapping")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / dim if isinstance(fc1, torch.Tensor) else 4.0
    heads = num_heads or max(dim // 64, 1)
    arch = Arch(family=family, embed_dim=int(dim), depth=depth, num_heads=int(heads), patch_size=int(ph),
                mlp_ratio=float(mlp_ratio), ln_eps=ln_eps)
    table = sd.get("rel_pos_bias.relative_position_bias_table")
    pos = sd.get("pos_embed")
    arch.abs_pos = isinstance(pos, torch.Tensor)
    arch.shared_rel_pos = isinstance(table, torch.Tensor)
    if family == "vit" and (arch.shared_rel_pos or "blocks.0.gamma_1" in sd or "blocks.0.attn.q_bias" in sd):
        raise LayoutError("BEiT-style keys (relative position table, gamma_1, q_bias)")
    if family == "vit" and not arch.abs_pos:
        raise LayoutError("no 'pos_embed'")
    if family == "beit":
        arch.qkv_bias = "blocks.0.attn.q_bias" in sd
        arch.layer_scale = "blocks.0.gamma_1" in sd
    else:
        arch.qkv_bias = "blocks.0.attn.qkv.bias" in sd
    if arch.abs_pos:
        g = _isqrt_exact(pos.shape[1] - 1)
        if g is None:
            raise LayoutError(f"'pos_embed' has {pos.shape[1]} tokens, not 1 + a square grid "
                               f"(distilled/register-token models are not supported here; use the timm plugin)")
        arch.grid = g
    elif arch.shared_rel_pos:
        side = _isqrt_exact(table.shape[0] - 3)
        if side is None or side % 2 == 0:
            raise LayoutError(f"relative position table with {table.shape[0]} rows is not "
                               f"(2*grid-1)^2+3 for a square grid")
        arch.grid = (side + 1) // 2
        if num_heads is None:
            arch.num_heads = int(table.shape[1])
        elif num_heads != table.shape[1]:
            raise HarnessError(f"{where}: num_heads={num_heads} but the relative position table has "
                               f"{table.shape[1]} heads")
    else:
        raise LayoutError("no position embedding ('pos_embed' or a shared relative position table)")
    if dim % arch.num_heads:
        raise HarnessError(f"{where}: width {dim} is not divisible by num_heads={arch.num_heads}")
    return arch


def resize_rel_pos_table(table: torch.Tensor, old: int, new: tuple[int, int]) -> torch.Tensor:
    """Resample a BEiT relative position table [(2g-1)^2+3, H] from grid g to grid ``new``.

    unilm BEiT's scheme (also used by the official segmentation code): source offsets placed on a
    geometric progression that spans the target range, bicubic spline per head, the 3 CLS entries kept.
    Without scipy, timm's linear variant of the same scheme is used.
    """
    nh, nw = new
    n_extra = 3
    src = 2 * old - 1
    dst = (2 * nh - 1, 2 * nw - 1)
    try:
        from scipy.interpolate import RectBivariateSpline
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        import_timm()
        from timm.layers.pos_embed_rel import resize_rel_pos_bias_table
        return resize_rel_pos_bias_table(table, new_window_size=new,
                                         new_bias_shape=(dst[0] * dst[1] + n_extra, table.shape[1]),
                                         old_window_size=(old, old))

    def offsets(src_len: int, dst_len: int) -> list[float]:
        lo, hi = 1.01, 1.5
        while hi - lo > 1e-6:  # ratio q such that sum_{i<src/2} q^i reaches dst/2
            q = (lo + hi) / 2.0
            if (1.0 - q ** (src_len // 2)) / (1.0 - q) > dst_len // 2:
                hi = q
            else:
                lo = q
        dis, cur = [], 1.0
        for i in range(src_len // 2):
            dis.append(cur)
            cur += q ** (i + 1)
        return [-d for d in reversed(dis)] + [0.0] + dis

    body, extra = table[:-n_extra].float().cpu(), table[-n_extra:]
    ys = offsets(src, dst[0]) if dst[0] > src else [float(v) for v in range(-(src // 2), src // 2 + 1)]
    xs = offsets(src, dst[1]) if dst[1] > src else [float(v) for v in range(-(src // 2), src // 2 + 1)]
    ty = torch.arange(-(dst[0] // 2), dst[0] // 2 + 1, dtype=torch.float64).numpy()
    tx = torch.arange(-(dst[1] // 2), dst[1] // 2 + 1, dtype=torch.float64).numpy()
    cols = []
    for h in range(body.shape[1]):
        z = body[:, h].reshape(src, src).double().numpy()
        spline = RectBivariateSpline(ys, xs, z, kx=3, ky=3, s=0)
        cols.append(torch.from_numpy(spline(ty, tx)).reshape(-1, 1))
    out = torch.cat(cols, dim=1).to(table.dtype).to(table.device)
    return torch.cat([out, extra], dim=0)


def rel_pos_index(gh: int, gw: int, device=None) -> torch.Tensor:
    """BEiT's [1+N, 1+N] index into the table (the 3 last rows: cls->patch, patch->cls, cls->cls)."""
    import_timm()
    from timm.models.beit import gen_relative_position_index
    return gen_relative_position_index((gh, gw), device=device)


class Backbone(nn.Module):
    """Runs a timm ViT/Beit built by ``build_model`` at any input size that is a multiple of the patch."""

    def __init__(self, model: nn.Module, arch: Arch):
        super().__init__()
        self.model = model
        self.arch = arch
        self._cache: dict[tuple, torch.Tensor] = {}

    def clear_cache(self) -> None:
        self._cache.clear()

    def pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pe = self.model.pos_embed
        g = self.arch.grid
        if (gh, gw) == (g, g):
            return pe
        key = ("pos", gh, gw, pe.device, pe.dtype)
        if key not in self._cache:
            cls, patch = pe[:, :1], pe[:, 1:]
            patch = patch.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
            if self.arch.pos_resample == "dino":
                # the output is still gh x gw, but the sample positions follow the +0.1 scale factor
                patch = F.interpolate(patch, scale_factor=((gh + 0.1) / g, (gw + 0.1) / g), mode="bicubic",
                                      align_corners=False)
            else:
                patch = F.interpolate(patch, size=(gh, gw), mode="bicubic", align_corners=False)
            patch = patch.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(pe.dtype)
            self._cache[key] = torch.cat([cls, patch], dim=1)
        return self._cache[key]

    def rel_pos_bias(self, gh: int, gw: int) -> torch.Tensor:
        """[heads, 1+N, 1+N] shared attention bias for a gh x gw grid."""
        table = self.model.rel_pos_bias.relative_position_bias_table
        key = ("rel", gh, gw, table.device, table.dtype)
        if key not in self._cache:
            g = self.arch.grid
            if (gh, gw) != (g, g):
                table = resize_rel_pos_table(table, g, (gh, gw))
            idx = rel_pos_index(gh, gw, device=table.device)
            n = gh * gw + 1
            self._cache[key] = table[idx.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).contiguous()
        return self._cache[key]

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] = (), final: bool = True):
        """-> (tokens after the final norm or None, {i: raw output of block i}), CLS first (the contract of
        ``harness.api.Encoder.forward_intermediates``; the executor has checked the input size)."""
        m = self.model
        t = m.patch_embed.proj(x)
        gh, gw = t.shape[-2:]
        t = m.patch_embed.norm(t.flatten(2).transpose(1, 2))
        t = torch.cat([m.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1)
        if m.pos_embed is not None:
            t = t + self.pos_embed(gh, gw)
        if getattr(m, "norm_pre", None) is not None:
            t = m.norm_pre(t)
        if self.arch.family == "beit":
            bias = self.rel_pos_bias(gh, gw) if getattr(m, "rel_pos_bias", None) is not None else None
            t, blocks = capture_blocks(m.blocks, t, indices, final, lambda blk, y: blk(y, shared_rel_pos_bias=bias))
        else:
            t, blocks = capture_blocks(m.blocks, t, indices, final)
        return (m.norm(t) if final else None), blocks

    forward = forward_intermediates


def capture_blocks(blocks: Sequence[nn.Module], t: torch.Tensor, indices: Sequence[int], final: bool,
                   call=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run ``t`` through ``blocks`` (``call(block, t)``, default ``block(t)``), keeping the raw output of
    each block in ``indices``; without ``final`` the blocks after the last one needed are skipped.
    -> (the last output computed, {i: output of block i})."""
    wanted = set(indices)
    last = len(blocks) - 1 if final else max(wanted, default=-1)
    out = {}
    for i, blk in enumerate(blocks):
        if i > last:
            break
        t = blk(t) if call is None else call(blk, t)
        if i in wanted:
            out[i] = t
    return t, out


def drop_tokens(t: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """``t`` [B, T, D] without tokens start .. start+count-1 (register tokens after the CLS token)."""
    return torch.cat([t[:, :start], t[:, start + count:]], dim=1) if count else t


def timm_intermediates(model: nn.Module, x: torch.Tensor, indices: Sequence[int], final: bool):
    """A timm ViT's own ``forward_intermediates`` in our contract: (the final-norm sequence or None,
    {i: raw output of block i}), every token kept (timm's prefix tokens first: CLS, registers)."""
    ids = list(indices)
    if not ids:
        return model.forward_features(x), {}
    out = model.forward_intermediates(x, indices=ids, norm=False, output_fmt="NLC", return_prefix_tokens=True,
                                      intermediates_only=not final, stop_early=not final)
    tokens, inter = (None, out) if not final else out
    # with prefix tokens timm returns (patch tokens, prefix tokens) pairs; without, the tensors themselves
    blocks = {i: torch.cat([y[1], y[0]], dim=1) if isinstance(y, tuple) else y for i, y in zip(ids, inter)}
    return tokens, blocks
