"""Tiny random ``transformers`` vision models for the ``hf`` encoder's tests: one per supported family, every
weight perturbed away from its initial value (seeded), written with ``save_pretrained``; and a hub-cache
layout (``models--org--name/refs/main`` + ``snapshots/<commit>/``) holding such folders."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from harness.api import import_transformers

W, DEPTH, HEADS, MLP, P, S = 32, 3, 2, 64, 8, 32  # width, blocks, heads, MLP width, patch, image size
VIT = dict(hidden_size=W, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP, patch_size=P,
           image_size=S)
#: model_type -> (the config class, its arguments, the model class that runs it)
KINDS = {
    "vit": ("ViTConfig", VIT, "ViTModel"),
    "deit": ("DeiTConfig", VIT, "DeiTModel"),
    "beit": ("BeitConfig", dict(VIT, use_relative_position_bias=True, layer_scale_init_value=0.5), "BeitModel"),
    "data2vec-vision": ("Data2VecVisionConfig", dict(VIT, use_absolute_position_embeddings=True,
                                                     use_mean_pooling=False), "Data2VecVisionModel"),
    "vit_mae": ("ViTMAEConfig", VIT, "ViTMAEModel"),
    "dinov2": ("Dinov2Config", VIT, "Dinov2Model"),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", dict(VIT, num_register_tokens=4),
                              "Dinov2WithRegistersModel"),
    "dinov3_vit": ("DINOv3ViTConfig", dict(VIT, num_register_tokens=2, layerscale_value=0.5), "DINOv3ViTModel"),
    "clip_vision_model": ("CLIPVisionConfig", dict(VIT, projection_dim=24), "CLIPVisionModelWithProjection"),
    "siglip_vision_model": ("SiglipVisionConfig", VIT, "SiglipVisionModel"),
    "siglip2_vision_model": ("Siglip2VisionConfig", dict({k: v for k, v in VIT.items() if k != "image_size"},
                                                         num_patches=16), "Siglip2VisionModel"),
    "aimv2_vision_model": ("Aimv2VisionConfig", dict(VIT, use_head=True), "Aimv2VisionModel"),
    "ijepa": ("IJepaConfig", VIT, "IJepaModel"),
}


def build(kind: str, seed: int = 0, **overrides):
    """The tiny model of ``kind`` (a model_type of KINDS), every parameter moved off its init (seeded)."""
    tf = import_transformers()
    cfg_name, args, model_name = KINDS[kind]
    cfg = getattr(tf, cfg_name)(**{**args, **overrides})
    torch.manual_seed(seed)
    model = getattr(tf, model_name)(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def save(model, folder: Path, preprocessor: dict | None = None) -> Path:
    import_transformers().utils.logging.disable_progress_bar()  # no "Writing model shards" bars in test output
    model.save_pretrained(str(folder))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def write_folder(kind: str, folder: Path, seed: int = 0, **overrides) -> Path:
    return save(build(kind, seed, **overrides), Path(folder))


def to_hub_cache(folder: Path, cache: Path, hub_id: str) -> str:
    """Copy a save_pretrained ``folder`` into ``cache`` as the hub lays it out (blobs + snapshot symlinks);
    returns the commit hash (derived from the content)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    repo = Path(cache) / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for p in files:
        blob = repo / "blobs" / hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copyfile(p, blob)
        (snap / p.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs" / "main").write_text(commit)
    return commit
