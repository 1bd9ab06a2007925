"""Tiny weight files in the released layouts of the families beyond the paper's seven, and independent
plain-torch references for the two whose authors' code is not installable (DINOv2, I-JEPA).

Layouts (key names, wrappers, prefixes, dtypes, file formats) are those of the published files; only the
sizes are tiny (width 32-128, depth 2). CLIP and SigLIP files are written from open_clip's own models.
"""
from __future__ import annotations

import copy
import json
import math
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from partbench_plugins.encoders.clip import import_open_clip  # open_clip after the torchvision compat fix

from _vit_reference import gelu, gelu_tanh, layer_norm

D, HEADS, DEPTH = 32, 2, 2  # DINOv2 / I-JEPA tiny width, heads, depth
CLIP_WIDTH, CLIP_EMBED = 128, 24  # CLIP tiny tower: 2 heads of 64 (open_clip's OpenAI builder assumes 64)
SIGLIP_WIDTH, SIGLIP_HEADS = 64, 2
TINY_SIGLIP = "partbench_test_tiny_siglip"  # registered in timm by ``register_tiny_siglip`` (tests only)


class Rand:
    """Deterministic random tensors."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def n(self, *shape, std=None):
        std = (shape[-1] if len(shape) > 1 else 1) ** -0.5 if std is None else std
        return torch.randn(*shape, generator=self.g) * std

    def ln(self, d):
        return 1 + self.n(d, std=0.1), self.n(d, std=0.1)


# ------------------------------------------------------------------------------------------------
# DINOv2: raw state dict (dinov2_vit*14[_reg4]_pretrain.pth)
# ------------------------------------------------------------------------------------------------
def vit_blocks(r: Rand, d: int, *, layer_scale: bool, swiglu_hidden: int = 0) -> dict:
    sd = {}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = r.ln(d)
        sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = r.n(3 * d, d), r.n(3 * d, std=0.1)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r.n(d, d), r.n(d, std=0.1)
        if layer_scale:
            sd[b + "ls1.gamma"] = 0.5 + r.n(d, std=0.3)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = r.ln(d)
        if swiglu_hidden:
            sd[b + "mlp.w12.weight"], sd[b + "mlp.w12.bias"] = r.n(2 * swiglu_hidden, d), r.n(2 * swiglu_hidden, std=0.1)
            sd[b + "mlp.w3.weight"], sd[b + "mlp.w3.bias"] = r.n(d, swiglu_hidden), r.n(d, std=0.1)
        else:
            sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r.n(4 * d, d), r.n(4 * d, std=0.1)
            sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r.n(d, 4 * d), r.n(d, std=0.1)
        if layer_scale:
            sd[b + "ls2.gamma"] = 0.5 + r.n(d, std=0.3)
    sd["norm.weight"], sd["norm.bias"] = r.ln(d)
    return sd


def dinov2_file(r: Rand, *, registers: int = 0, swiglu_hidden: int = 0, grid: int = 37) -> dict:
    """The released key order: cls_token, pos_embed, [register_tokens], mask_token, patch_embed, blocks, norm."""
    sd = {"cls_token": r.n(1, 1, D, std=0.5), "pos_embed": r.n(1, 1 + grid * grid, D, std=0.5)}
    if registers:
        sd["register_tokens"] = r.n(1, registers, D, std=0.5)
    sd["mask_token"] = r.n(1, D, std=0.1)
    sd["patch_embed.proj.weight"] = r.n(D, 3, 14, 14, std=(3 * 14 * 14) ** -0.5)
    sd["patch_embed.proj.bias"] = r.n(D, std=0.1)
    sd.update(vit_blocks(r, D, layer_scale=True, swiglu_hidden=swiglu_hidden))
    return sd


# ------------------------------------------------------------------------------------------------
# I-JEPA: full training checkpoint (IN1K-vit.h.14-300e.pth.tar)
# ------------------------------------------------------------------------------------------------
def ijepa_encoder(r: Rand, grid: int = 16) -> dict:
    sd = {"patch_embed.proj.weight": r.n(D, 3, 14, 14, std=(3 * 14 * 14) ** -0.5),
          "patch_embed.proj.bias": r.n(D, std=0.1), "pos_embed": r.n(1, grid * grid, D, std=0.5)}
    sd.update(vit_blocks(r, D, layer_scale=False))
    return {"module." + k: v for k, v in sd.items()}


def ijepa_file(r: Rand) -> dict:
    predictor = {"module.predictor_embed.weight": r.n(16, D), "module.predictor_embed.bias": r.n(16),
                 "module.mask_token": r.n(1, 1, 16), "module.predictor_pos_embed": r.n(1, 256, 16),
                 "module.predictor_blocks.0.norm1.weight": torch.ones(16),
                 "module.predictor_norm.weight": torch.ones(16), "module.predictor_proj.weight": r.n(D, 16)}
    return {"encoder": ijepa_encoder(r), "predictor": predictor, "target_encoder": ijepa_encoder(r),
            "opt": {"state": {0: {"exp_avg": r.n(4)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0}, "epoch": 300, "loss": 0.0123,
            "batch_size": 128, "world_size": 16, "lr": 0.001}


# ------------------------------------------------------------------------------------------------
# independent references (plain tensor ops, from the published architecture facts)
# ------------------------------------------------------------------------------------------------
def _attention(q, k, v, heads):
    """Multi-head scaled dot-product attention of q [B,M,d] over k, v [B,N,d] -> [B,M,d]."""
    B, M, d = q.shape
    hd = d // heads
    q, k, v = (y.reshape(B, y.shape[1], heads, hd).transpose(1, 2) for y in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
    return a.transpose(1, 2).reshape(B, M, d)


def _block(sd, pre, t, heads, eps=1e-6, act=gelu):
    h = layer_norm(t, sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps)
    q, k, v = (h @ sd[pre + "attn.qkv.weight"].T + sd[pre + "attn.qkv.bias"]).chunk(3, dim=-1)
    a = _attention(q, k, v, heads) @ sd[pre + "attn.proj.weight"].T + sd[pre + "attn.proj.bias"]
    t = t + (sd[pre + "ls1.gamma"] * a if pre + "ls1.gamma" in sd else a)
    h = layer_norm(t, sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps)
    if pre + "mlp.w12.weight" in sd:  # SwiGLU: silu(first half) * second half
        u = h @ sd[pre + "mlp.w12.weight"].T + sd[pre + "mlp.w12.bias"]
        a1, a2 = u.chunk(2, dim=-1)
        m = (a1 * torch.sigmoid(a1) * a2) @ sd[pre + "mlp.w3.weight"].T + sd[pre + "mlp.w3.bias"]
    else:
        m = _mlp(sd, pre + "mlp.", h, act)
    return t + (sd[pre + "ls2.gamma"] * m if pre + "ls2.gamma" in sd else m)


def _mlp(sd, pre, h, act):
    return act(h @ sd[pre + "fc1.weight"].T + sd[pre + "fc1.bias"]) @ sd[pre + "fc2.weight"].T + sd[pre + "fc2.bias"]


def _patchify(sd, x):
    w = sd["patch_embed.proj.weight"]
    p = w.shape[-1]
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    return patches @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"], gh, gw


def _resample(table, m, gh, gw, **interp):
    grid = table.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, mode="bicubic", **interp)
    assert grid.shape[-2:] == (gh, gw)
    return grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)


def dinov2_reference(sd, x, *, offset, antialias, heads=HEADS, blocks=()):
    """DINOv2's forward: CLS + patches, each with its position (the table resampled by the hub rule:
    offset>0: scale_factor=(g+offset)/M; else the target size), registers after CLS without position,
    pre-norm blocks with layer scale, final norm. Returns (CLS + patch tokens, {i: block i}), registers dropped."""
    t, gh, gw = _patchify(sd, x)
    pos = sd["pos_embed"]
    m = math.isqrt(pos.shape[1] - 1)
    patch_pos = pos[:, 1:]
    if (gh, gw) != (m, m):
        interp = (dict(scale_factor=((gh + offset) / m, (gw + offset) / m)) if offset else dict(size=(gh, gw)))
        patch_pos = _resample(patch_pos, m, gh, gw, antialias=antialias, **interp)
    B = x.shape[0]
    t = torch.cat([(sd["cls_token"] + pos[:, :1]).expand(B, 1, -1), t + patch_pos], dim=1)
    r = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    if r:
        t = torch.cat([t[:, :1], sd["register_tokens"].expand(B, r, -1), t[:, 1:]], dim=1)
    out, i = {}, 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = _block(sd, f"blocks.{i}.", t, heads)
        if i in blocks:
            out[i] = torch.cat([t[:, :1], t[:, 1 + r:]], dim=1)
        i += 1
    t = layer_norm(t, sd["norm.weight"], sd["norm.bias"], 1e-6)
    return torch.cat([t[:, :1], t[:, 1 + r:]], dim=1), out


def ijepa_reference(sd, x, *, heads=HEADS, blocks=()):
    """I-JEPA's encoder: patches + their (bicubically resampled) sin-cos table, no CLS, blocks, final norm."""
    t, gh, gw = _patchify(sd, x)
    pos = sd["pos_embed"]
    g = math.isqrt(pos.shape[1])
    if (gh, gw) != (g, g):
        pos = _resample(pos, g, gh, gw, size=(gh, gw), align_corners=False)
    t = t + pos
    out, i = {}, 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = _block(sd, f"blocks.{i}.", t, heads)
        if i in blocks:
            out[i] = t
        i += 1
    return layer_norm(t, sd["norm.weight"], sd["norm.bias"], 1e-6), out


def siglip_reference(sd, x, *, heads, act=gelu_tanh, blocks=()):
    """SigLIP's image tower as published (big_vision's ViT with a MAP head; transformers' SiglipVisionModel,
    ``hidden_act: gelu_pytorch_tanh``, ``layer_norm_eps: 1e-6``), on timm key names: patches plus their learned
    position (no CLS; other grids resample the table bicubically with antialias, timm's dynamic-size rule),
    pre-norm blocks whose MLPs use ``act`` (published: the tanh approximation of GELU), final norm. The MAP
    head: a learned probe attends to the final-norm tokens (q from the probe, k/v from the tokens, output
    projection), then y + MLP(LN(y)), the probe's row is the embedding. Returns (tokens, pooled, {i: block i})."""
    t, gh, gw = _patchify(sd, x)
    pos = sd["pos_embed"]
    g = math.isqrt(pos.shape[1])
    if (gh, gw) != (g, g):
        pos = _resample(pos, g, gh, gw, size=(gh, gw), align_corners=False, antialias=True)
    t = t + pos
    out, i = {}, 0
    while f"blocks.{i}.norm1.weight" in sd:
        t = _block(sd, f"blocks.{i}.", t, heads, act=act)
        if i in blocks:
            out[i] = t
        i += 1
    t = layer_norm(t, sd["norm.weight"], sd["norm.bias"], 1e-6)
    mp = "attn_pool."
    q = sd[mp + "latent"].expand(x.shape[0], -1, -1) @ sd[mp + "q.weight"].T + sd[mp + "q.bias"]
    k, v = (t @ sd[mp + "kv.weight"].T + sd[mp + "kv.bias"]).chunk(2, dim=-1)
    y = _attention(q, k, v, heads) @ sd[mp + "proj.weight"].T + sd[mp + "proj.bias"]
    y = y + _mlp(sd, mp + "mlp.", layer_norm(y, sd[mp + "norm.weight"], sd[mp + "norm.bias"], 1e-6), act)
    return t, y[:, 0], out


# ------------------------------------------------------------------------------------------------
# CLIP (open_clip's own model, written as OpenAI's TorchScript archive or an OpenCLIP file + config)
# ------------------------------------------------------------------------------------------------
def clip_cfg(quick_gelu: bool) -> dict:
    return {"embed_dim": CLIP_EMBED, "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": 224, "layers": DEPTH, "width": CLIP_WIDTH, "patch_size": 16},
            "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 64, "heads": 1, "layers": 1}}


def clip_model(seed: int, quick_gelu: bool):
    import_open_clip()
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**clip_cfg(quick_gelu)).eval()
    with torch.no_grad():  # move every tensor off its init (LN weights 1, biases 0, ...)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def write_openai_archive(model, path: Path) -> Path:
    """OpenAI's ViT-B-16.pt layout: a TorchScript archive whose state dict has the CLIP keys, the three
    scalar buffers ``input_resolution``/``context_length``/``vocab_size``, and float16 conv/linear/attention
    weights and projections (what ``convert_weights_to_fp16`` converts)."""
    import_open_clip()
    from open_clip.model import convert_weights_to_fp16

    half = copy.deepcopy(model)
    convert_weights_to_fp16(half)
    fp16 = {n for n, t in half.state_dict().items() if t.dtype == torch.float16}

    class Archive(torch.nn.Module):
        def forward(self, x):
            return self.visual(x)

    archive = Archive()
    for name, child in copy.deepcopy(model).named_children():
        setattr(archive, name, child)
    for name, p in model.named_parameters(recurse=False):
        archive.register_parameter(name, torch.nn.Parameter(p.detach().clone()))
    for name, value in (("input_resolution", 224), ("context_length", 8), ("vocab_size", 50)):
        archive.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():  # tracer and TorchScript deprecation warnings: the release is TorchScript
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(archive, torch.zeros(1, 3, 224, 224), check_trace=False)
        with torch.no_grad():
            for name, p in traced.named_parameters():
                if name in fp16:
                    p.data = p.data.half()
        torch.jit.save(traced, str(path))
    return path


def write_openclip_dir(model, folder: Path, quick_gelu: bool, safetensors: bool = False) -> Path:
    """A Hugging Face open_clip repo: open_clip_config.json + open_clip_pytorch_model.bin (or .safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": clip_cfg(quick_gelu),
         "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file
        path = folder / "open_clip_model.safetensors"
        save_file(sd, str(path))
    else:
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(sd, path)
    return path


# ------------------------------------------------------------------------------------------------
# SigLIP (open_clip's ViT-B-16-SigLIP construction with a tiny timm tower)
# ------------------------------------------------------------------------------------------------
def register_tiny_siglip() -> str:
    """timm's vit_base_patch16_siglip_224 definition at width 64 / depth 2 under a test-only name, so that
    open_clip can build its SigLIP model (open_clip towers are named timm models)."""
    from harness.compat import import_timm

    timm = import_timm()
    if not timm.is_model(TINY_SIGLIP):
        from timm.models import register_model
        from timm.models.vision_transformer import _create_vision_transformer

        def partbench_test_tiny_siglip(pretrained=False, **kwargs):
            args = dict(patch_size=16, embed_dim=SIGLIP_WIDTH, depth=DEPTH, num_heads=SIGLIP_HEADS,
                        class_token=False, global_pool="map")
            return _create_vision_transformer("vit_base_patch16_siglip_224", pretrained=pretrained,
                                              **dict(args, **kwargs))
        register_model(partbench_test_tiny_siglip)
    return TINY_SIGLIP


def siglip_cfg() -> dict:
    return {"embed_dim": SIGLIP_WIDTH, "init_logit_bias": -10, "custom_text": True,
            "vision_cfg": {"image_size": 224, "timm_model_name": register_tiny_siglip(),
                           "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
            "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 64, "heads": 1, "layers": 1,
                         "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}


def siglip_model(seed: int):
    import_open_clip()
    from open_clip.model import CustomTextCLIP

    cfg = dict(siglip_cfg())
    cfg.pop("custom_text")
    torch.manual_seed(seed)
    model = CustomTextCLIP(**cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def write_siglip_files(model, folder: Path) -> tuple[Path, Path]:
    """(open_clip repo file open_clip_pytorch_model.bin with its config, timm's model.safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip").mkdir(exist_ok=True)
    (folder / "open_clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": siglip_cfg()}))
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    oc = folder / "open_clip" / "open_clip_pytorch_model.bin"
    torch.save(sd, oc)
    (folder / "timm").mkdir(exist_ok=True)
    tm = folder / "timm" / "model.safetensors"
    save_file({k[len("visual.trunk."):]: v for k, v in sd.items() if k.startswith("visual.trunk.")}, str(tm))
    return oc, tm


# ------------------------------------------------------------------------------------------------
# DeiT III (read by the timm plugin)
# ------------------------------------------------------------------------------------------------
DEIT3_KW = {"embed_dim": 64, "depth": 2, "num_heads": 2}  # timm deit3_base_patch16_224 at a tiny size


def deit3_file(path: Path):
    """facebookresearch/deit's deit_3_base_224_21k.pth layout: {'model': ...} with gamma_1/gamma_2 layer scale,
    a 196-entry pos_embed (no CLS slot) and the 1000-class head. Returns timm's model holding the same weights."""
    from harness.compat import import_timm

    timm = import_timm()
    torch.manual_seed(8)
    model = timm.create_model("deit3_base_patch16_224", pretrained=False, **DEIT3_KW).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = {re.sub(r"ls([12])\.gamma", r"gamma_\1", k): v for k, v in model.state_dict().items()}
    torch.save({"model": sd}, path)
    return model
