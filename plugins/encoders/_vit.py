"""Shared ViT machinery for the encoder plugins (private: one method per public file).

- ``Arch`` / ``build_model``: a timm ``VisionTransformer`` (DeiT, MoCo v3, DINO, iBOT, MAE layout) or a
  timm ``Beit`` (BEiT, CAE layout: q/v bias, layer scale, shared relative position bias).
- ``Backbone``: our own forward over the timm modules, so that every method gives the same outputs
  (``cls``/``mean_patch``/``tokens`` after the final norm, raw ``block.i``) and so that inputs other than
  the checkpoint's resolution interpolate the position embedding (bicubic, ``align_corners=False``, no
  antialias, as DINO's ``interpolate_pos_encoding`` and the segmentation code's checkpoint loader) and the
  BEiT relative position table (unilm's geometric-progression resampling with a bicubic spline).
- ``read_checkpoint`` / ``load_strict``: ``torch.load(weights_only=True)`` by default, one-line errors that
  name the file and what was expected, strict key checking after each method's key mapping.
- ``TokenEncoder`` / ``CheckpointEncoder``: the Encoder base classes the plugins subclass.

The architecture is inferred from the checkpoint's tensor shapes (width, depth, patch size, MLP ratio,
grid, q/v bias, layer scale, position scheme); only the number of heads is not visible in the shapes and
defaults to ``embed_dim // 64`` (12 for ViT-B, the head width of every official ViT), overridable with the
``num_heads`` option. The LayerNorm eps is a property of each method (1e-6 for all seven official files).
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import Encoder, HarnessError, Option, file_sha256
from harness.compat import import_timm

# Globals the official training checkpoints pickle besides tensors (DINO/iBOT store their argparse
# ``args``). Allowing this one plain-data class keeps ``weights_only=True`` usable on the full files.
_SAFE_GLOBALS = [argparse.Namespace]

MAX_LISTED_KEYS = 8


# --------------------------------------------------------------------------------------------------
# architecture
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------
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

    def forward(self, x: torch.Tensor, block_ids: Sequence[int] = (), final: bool = True):
        """-> (tokens after the final norm or None, {i: raw output of block i})."""
        p = self.arch.patch_size
        if x.ndim != 4 or x.shape[-1] % p or x.shape[-2] % p:
            raise HarnessError(f"input of shape {tuple(x.shape)}: height and width must be multiples of the "
                               f"patch size {p}")
        m = self.model
        t = m.patch_embed.proj(x)
        gh, gw = t.shape[-2:]
        t = m.patch_embed.norm(t.flatten(2).transpose(1, 2))
        t = torch.cat([m.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1)
        if m.pos_embed is not None:
            t = t + self.pos_embed(gh, gw)
        bias = None
        if self.arch.family == "beit" and getattr(m, "rel_pos_bias", None) is not None:
            bias = self.rel_pos_bias(gh, gw)
        if getattr(m, "norm_pre", None) is not None:
            t = m.norm_pre(t)
        wanted = set(block_ids)
        last = len(m.blocks) - 1 if final else max(wanted, default=-1)
        blocks = {}
        for i, blk in enumerate(m.blocks):
            if i > last:
                break
            t = blk(t, shared_rel_pos_bias=bias) if self.arch.family == "beit" else blk(t)
            if i in wanted:
                blocks[i] = t
        return (m.norm(t) if final else None), blocks


# --------------------------------------------------------------------------------------------------
# heads shared by DINO and iBOT
# --------------------------------------------------------------------------------------------------
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


def map_weight_norm_keys(sd: dict) -> dict:
    """Accept torch's newer parametrized weight-norm names (``parametrizations.weight.original0/1``)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message (torch's zip errors run on for lines)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")[:200]


def read_checkpoint(path: str, *, weights_only: bool = True, expected: str = "a PyTorch checkpoint") -> Any:
    """``torch.load`` on CPU (memory-mapped for zip files) with one-line errors naming the file."""
    path = str(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise HarnessError(f"{path}: cannot open checkpoint ({exc.strerror})") from exc
    mmap = zipfile.is_zipfile(path)  # legacy (pre-1.6) pickles cannot be memory-mapped
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        if weights_only and glob:  # a real pickle that references a class the safe loader refuses
            raise HarnessError(f"{path}: refused by torch.load(weights_only=True): it pickles "
                               f"{glob.group(1)}; if you trust this file, set the encoder option "
                               f"'weights_only: false'") from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        msg = detail.group(1).strip().splitlines()[0] if detail else _first_line(exc)
        raise HarnessError(f"{path}: not a readable PyTorch checkpoint (UnpicklingError: {msg}; truncated or "
                           f"not a checkpoint?); expected {expected}") from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is one user-facing line
        raise HarnessError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_first_line(exc)}; truncated or not a checkpoint?); expected {expected}") from exc


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def guess_layout(obj: Any) -> str:
    """A short description of what a loaded checkpoint looks like, naming the method when recognisable."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"

    def keys_of(d):
        return list(d.keys()) if isinstance(d, dict) else []

    top = keys_of(obj)
    guess = None
    if "teacher" in obj and "student" in obj:
        t = keys_of(obj["teacher"])
        guess = ("an iBOT full checkpoint" if any(k.startswith("head.last_layer2") for k in t)
                 else "a DINO full checkpoint")
    elif isinstance(obj.get("state_dict"), dict):
        sd = keys_of(obj["state_dict"])
        if any(k.startswith("module.base_encoder.") for k in sd):
            guess = "a MoCo v3 checkpoint"
        elif "cls_token" in sd:
            guess = "an iBOT backbone-only checkpoint (checkpoint_teacher.pth)"
    elif isinstance(obj.get("model"), dict):
        sd = keys_of(obj["model"])
        if any(k.startswith("encoder.") for k in sd):
            guess = "a CAE checkpoint"
        elif "rel_pos_bias.relative_position_bias_table" in sd or "blocks.0.attn.q_bias" in sd:
            guess = "a BEiT checkpoint"
        elif "head.weight" in sd:
            guess = "a supervised ViT/DeiT checkpoint"
        elif "cls_token" in sd:
            guess = "an MAE checkpoint"
    elif is_state_dict(obj) and "cls_token" in obj:
        guess = ("a raw ViT state dict (e.g. DINO backbone-only)" if "pos_embed" in obj
                 else "a raw ViT state dict")
    shown = ", ".join(repr(k) for k in top[:MAX_LISTED_KEYS]) + (", ..." if len(top) > MAX_LISTED_KEYS else "")
    return (f"{guess}; " if guess else "") + f"top-level keys {shown or '(none)'}"


def list_keys(keys: Sequence[str], limit: int = MAX_LISTED_KEYS) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, sd: dict, *, strict: bool, where: str, what: str) -> dict:
    """Load ``sd`` into ``module``; missing/unexpected keys are an error unless ``strict`` is False.

    Returns {"missing": [...], "unexpected": [...]} (empty lists when everything was consumed).
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shape_bad = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
                       if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    if shape_bad:  # never loadable, strict or not
        raise HarnessError(f"{where}: {what}: shape mismatch for {list_keys(shape_bad, 4)}")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {list_keys(unexpected)}")
        raise HarnessError(f"{where}: {what}: " + "; ".join(parts)
                           + " (set the encoder option 'strict: false' to load anyway)")
    module.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def strip_prefix(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def count_by_prefix(keys: Sequence[str], depth: int = 1) -> dict[str, int]:
    """{'module.momentum_encoder.*': 152, ...}: a compact record of deliberately ignored keys."""
    out: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        name = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        out[name] = out.get(name, 0) + 1
    return out


# --------------------------------------------------------------------------------------------------
# encoder base classes
# --------------------------------------------------------------------------------------------------
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def with_defaults(cls: type, opts: dict) -> dict:
    """Options with the schema's defaults filled in (the core does this too; direct construction in
    tests and notebooks then behaves the same)."""
    full = {k: o.default for k, o in cls.option_schema().items() if not o.required}
    full.update(opts)
    return full


def select_representations(reps, tokens: torch.Tensor, block, project=None) -> dict:
    """The named representations from final-norm ``tokens`` [B,1+N,D] (CLS first); ``block(i)`` returns
    the raw output of block i, ``project(tokens)`` the projection head's output."""
    out = {}
    for r in reps:
        if r == "cls":
            out[r] = tokens[:, 0]
        elif r == "mean_patch":
            out[r] = tokens[:, 1:].mean(dim=1)  # CLS excluded, as the official extract()
        elif r == "tokens":
            out[r] = tokens
        elif r == "projected" and project is not None:
            out[r] = project(tokens)
        elif r.startswith("block."):
            out[r] = block(int(r.split(".", 1)[1]))
        else:
            raise HarnessError(f"unsupported representation '{r}'")
    return out


class TokenEncoder(Encoder):
    """An encoder whose model yields a token sequence with the CLS token first.

    Subclasses set ``self.backbone`` (a ``Backbone``) in ``load`` and, if they have a projection head,
    implement ``project(tokens)`` (tokens after the final norm -> [B, P]).
    """

    representations = ("cls", "mean_patch", "tokens", "blocks")

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **with_defaults(type(self), opts))
        self.backbone: Backbone | None = None
        self.device = "cpu"

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        raise HarnessError(f"encoder '{self.name}' has no projection head")

    def _check_reps(self, reps: Sequence[str]) -> None:
        bad = [r for r in reps if not self.supports(r)]
        if bad:
            n = f" ({self.num_blocks} blocks)" if self.num_blocks is not None else ""
            raise HarnessError(f"encoder '{self.name}': unsupported representation(s) {', '.join(bad)}; "
                               f"available: {', '.join(self.representations)}{n}")

    def forward(self, x: torch.Tensor, reps: Sequence[str]) -> dict:
        if self.backbone is None:
            self.load(self.device)
        self._check_reps(reps)
        block_ids = sorted(int(r.split(".", 1)[1]) for r in reps if r.startswith("block."))
        final = any(not r.startswith("block.") for r in reps)
        dtype = _DTYPES[self.opts.get("precision", "fp32")]
        dev = torch.device(self.device)
        x = x.to(dev, dtype=torch.float32)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            tokens, blocks = self.backbone(x, block_ids, final=final)
            out = select_representations(reps, tokens, lambda i: blocks[i], self.project)
        return {k: v.float() for k, v in out.items()}

    def _place(self, device: str) -> None:
        self.device = device
        self.backbone.to(device).eval()
        self.backbone.requires_grad_(False)


@dataclass
class Split:
    """A checkpoint after a method's key mapping."""

    backbone: dict
    head: dict | None = None  # projection-head state dict (prefix stripped), None if the file has none
    ignored: dict[str, int] = field(default_factory=dict)  # deliberately unused entries, by prefix
    source: str = ""  # which part of the file was read, e.g. "checkpoint['teacher']"


class CheckpointEncoder(TokenEncoder):
    """An official ViT checkpoint read with a method-specific key mapping, loaded strictly.

    Subclasses set ``method`` (display name), ``expected`` (what its files look like, for errors),
    ``family``/``ln_eps``, implement ``split(obj)`` and, if they have a head, ``build_head`` + ``project``.
    """

    method = "?"
    expected = "?"
    family = "vit"
    ln_eps = 1e-6
    has_head = False  # the method defines a projection head (the file may still lack it)

    options = {
        "checkpoint": Option(str, help="path of the official checkpoint file", path="file"),
        "strict": Option(bool, True, "error on any missing/unexpected key after the key mapping; with false "
                                     "the keys are reported in the result instead"),
        "weights_only": Option(bool, True, "torch.load(weights_only=True); set false only for trusted files "
                                           "that pickle other Python objects"),
        "num_heads": Option(int, None, "attention heads (not visible in the weights); default width // 64",
                            nullable=True, check=lambda v: None if v is None or v > 0 else "must be > 0"),
    }

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self._peeked: tuple[Split, Arch] | None = None
        self.head: nn.Module | None = None
        self.arch: Arch | None = None
        self.load_report: dict = {}
        self._sha: str | None = None

    # -- subclass API ---------------------------------------------------------------------------
    def split(self, obj: Any) -> Split:
        raise NotImplementedError

    def build_head(self, sd: dict) -> nn.Module:
        raise NotImplementedError

    def wants_head(self) -> bool:
        return self.has_head

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return str(self.opts["checkpoint"])

    def wrong_layout(self, obj: Any, why: str = "") -> HarnessError:
        extra = f" ({why})" if why else ""
        article = "an" if self.method[:1].lower() in "aeiou" or self.method.startswith(("MAE", "iBOT")) else "a"
        found = guess_layout(obj)
        if self.method in found:  # this method's layout, but entries are missing: truncated or edited
            return HarnessError(f"{self.path}: incomplete {self.method} checkpoint{extra}: expected {self.expected}")
        return HarnessError(f"{self.path}: not {article} {self.method} checkpoint{extra}: expected {self.expected}; "
                            f"found {found}")

    def require_dict(self, obj: Any, key: str) -> dict:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            raise self.wrong_layout(obj, f"no '{key}' entry")
        return obj[key]

    def _peek(self) -> tuple[Split, Arch]:
        """Read and map the file once (memory-mapped where possible); validation errors surface here."""
        if self._peeked is None:
            obj = read_checkpoint(self.path, weights_only=self.opts.get("weights_only", True),
                                  expected=self.expected)
            sp = self.split(obj)
            try:
                arch = infer_arch(sp.backbone, self.family, num_heads=self.opts.get("num_heads"),
                                  ln_eps=self.ln_eps, where=self.path)
            except LayoutError as exc:
                raise self.wrong_layout(obj, str(exc)) from None
            self._peeked = (sp, arch)
            self.num_blocks = arch.depth
        return self._peeked

    def validate(self) -> None:
        self._peek()  # a wrong, truncated or unreadable file fails at spec validation, naming the option

    def supports(self, rep: str) -> bool:
        self._peek()
        if rep == "projected":
            return self.has_head and self._peeked[0].head is not None and self.wants_head()
        return super().supports(rep)

    def identity(self) -> dict:
        ident = super().identity()
        if self._sha is None:
            self._sha = file_sha256(self.path)
        ident["checkpoint_sha256"] = self._sha
        return ident

    def load(self, device: str = "cpu") -> None:
        if self.backbone is not None:
            self._place(device)
            return
        sp, arch = self._peek()
        strict = self.opts.get("strict", True)
        with _seeded(0):  # non-strict loads leave missing weights at a reproducible random init
            model = build_model(arch)
        report = {"source": sp.source, "architecture": arch.describe(),
                  "ignored": dict(sp.ignored)}
        bb = load_strict(model, sp.backbone, strict=strict, where=self.path,
                         what=f"{self.method} backbone ({arch.describe()})")
        report.update(missing=bb["missing"], unexpected=bb["unexpected"])
        if sp.head is not None and self.wants_head():
            with _seeded(0):
                head = self.build_head(sp.head)
            hd = load_strict(head, sp.head, strict=strict, where=self.path, what=f"{self.method} projection head")
            report["missing"] += [f"head: {k}" for k in hd["missing"]]
            report["unexpected"] += [f"head: {k}" for k in hd["unexpected"]]
            self.head = head.eval().requires_grad_(False)
        self.arch = arch
        self.backbone = Backbone(model, arch)
        self.load_report = report
        self._peeked = (Split(backbone={}, head=None if sp.head is None else {}, ignored=sp.ignored,
                              source=sp.source), arch)  # drop the tensors (memory map) but keep the facts
        self._place(device)

    def _place(self, device: str) -> None:
        super()._place(device)
        if self.head is not None:
            self.head.to(device)


class _seeded:
    """``with _seeded(s):`` seeds torch's global RNG and restores it on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._ctx = torch.random.fork_rng(devices=[])
        self._ctx.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
