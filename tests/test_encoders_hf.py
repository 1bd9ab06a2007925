"""The ``hf`` encoder against ``transformers``' own forward, family by family (tiny random models, every weight
perturbed, saved with save_pretrained and read back by the plugin), at the native size and a non-square other
size; the prefix tokens each family strips; ViT-MAE's image order; SigLIP 2's packing; the one-line errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from harness.api import HarnessError, encode

import _hf_files as hff
from partbench_plugins.encoders.hf import HuggingFace

TOL = dict(atol=1e-4, rtol=1e-4)
#: tokens between the CLS token and the patches that the plugin must drop, counted here from the tiny configs
EXTRA = {"deit": 1, "dinov2_with_registers": 4, "dinov3_vit": 2}
NO_CLS = {"siglip_vision_model", "siglip2_vision_model", "aimv2_vision_model", "ijepa"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """model_type -> (the in-memory transformers model, the folder it was saved to)."""
    root = tmp_path_factory.mktemp("hf_models")
    out = {}
    for i, kind in enumerate(hff.KINDS):
        m = hff.build(kind, seed=i)
        out[kind] = (m, hff.save(m, root / kind))
    m = hff.build("aimv2_vision_model", seed=99, is_native=True)
    out["aimv2_native"] = (m, hff.save(m, root / "aimv2_native"))
    return out


def reference(kind: str, model, x: torch.Tensor) -> dict:
    """What transformers computes, named as the harness names it (prefix tokens stripped here)."""
    model = copy.deepcopy(model)
    kw = {}
    if kind == "siglip2_vision_model":  # transformers' own packing, image by image
        from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches
        p = model.config.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        kw = {"pixel_values": torch.stack([convert_image_to_patches(im, p) for im in x]),
              "pixel_attention_mask": torch.ones(x.shape[0], h * w, dtype=torch.int32),
              "spatial_shapes": torch.tensor([[h, w]] * x.shape[0])}
    else:
        kw["pixel_values"] = x
        if kind not in ("dinov2", "dinov2_with_registers", "dinov3_vit", "aimv2_vision_model") and \
                tuple(x.shape[-2:]) != (hff.S, hff.S):
            kw["interpolate_pos_encoding"] = True
    if kind == "vit_mae":
        model.config.mask_ratio = 0.0
        kw["noise"] = torch.arange((x.shape[-2] // hff.P) * (x.shape[-1] // hff.P)).float().expand(x.shape[0], -1)
    with torch.no_grad():
        o = model(**kw, output_hidden_states=True)
    cls = kind not in NO_CLS
    start = (1 + EXTRA.get(kind, 0)) if cls else 0

    def layout(t):
        return torch.cat([t[:, :1], t[:, start:]], 1) if cls else t

    last = o.last_hidden_state
    if kind == "clip_vision_model":
        last = model.vision_model.post_layernorm(last)
    ref = {"tokens": layout(last), "block.1": layout(o.hidden_states[2]), "block.0": layout(o.hidden_states[1]),
           "mean_patch": last[:, start:].mean(1)}
    if cls:
        ref["cls"] = last[:, 0]
    if kind == "clip_vision_model":
        ref["cls"], ref["projected"] = o.pooler_output if hasattr(o, "pooler_output") else last[:, 0], o.image_embeds
    elif kind in ("siglip_vision_model", "siglip2_vision_model"):
        ref["projected"] = o.pooler_output
    elif kind in ("vit", "deit", "beit", "aimv2_vision_model"):
        ref["pooled"] = o.pooler_output
    return ref


def run(folder, x, reps, **opts):
    return encode(HuggingFace("e", model=str(folder), **opts), x, reps)


@pytest.mark.parametrize("kind", list(hff.KINDS))
def test_family_equals_transformers(models, kind):
    model, folder = models[kind]
    enc = HuggingFace("e", model=str(folder))
    enc.validate()
    assert ("cls" in enc.representations) == (kind not in NO_CLS)
    assert enc.prefix_tokens == (0 if kind in NO_CLS else 1) and enc.num_blocks == hff.DEPTH
    sizes = [(32, 32)] if kind == "aimv2_vision_model" else [(32, 32), (48, 40)]
    for h, w in sizes:
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        ref = reference(kind, model, x)
        out = encode(enc, x, list(ref))
        n = (h // hff.P) * (w // hff.P)
        assert out["tokens"].shape == (2, n + enc.prefix_tokens, hff.W)
        for rep, want in ref.items():
            torch.testing.assert_close(out[rep], want, **TOL, msg=lambda m: f"{kind} {h}x{w} {rep}: {m}")


def test_mae_grid_is_in_image_order(models):
    """Random masking noise with ratio 0 still permutes the tokens; un-shuffled by ids_restore they equal ours."""
    model, folder = models["vit_mae"]
    x = torch.randn(2, 3, 32, 32)
    ref = copy.deepcopy(model)
    ref.config.mask_ratio = 0.0
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        o = ref(pixel_values=x, noise=noise)
    shuffled = o.last_hidden_state[:, 1:]
    assert not torch.allclose(shuffled, run(folder, x, ["tokens"])["tokens"][:, 1:], **TOL)  # the noise permuted
    restored = torch.gather(shuffled, 1, o.ids_restore.unsqueeze(-1).expand(-1, -1, hff.W))
    torch.testing.assert_close(run(folder, x, ["tokens"])["tokens"][:, 1:], restored, **TOL)
    # and the grid is the image's: a change in the top-left patch moves the first patch token the most
    y = x.clone()
    y[:, :, :8, :8] += 3
    diff = (run(folder, y, ["block.0"])["block.0"] - run(folder, x, ["block.0"])["block.0"])[:, 1:].norm(dim=-1)
    assert diff.argmax(dim=1).tolist() == [0, 0]


def test_aimv2_native_any_size_fixed_table_refuses(models):
    x = torch.randn(1, 3, 48, 40)
    model, folder = models["aimv2_native"]
    with torch.no_grad():
        want = model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(run(folder, x, ["tokens"])["tokens"], want, **TOL)
    with pytest.raises(HarnessError, match=r"is_native false .* 32x32 inputs only; got 48x40"):
        run(models["aimv2_vision_model"][1], x, ["tokens"])


def test_cls_refused_for_families_without_one(models):
    enc = HuggingFace("e", model=str(models["ijepa"][1]))
    assert not enc.supports("cls") and enc.supports("mean_patch") and enc.supports("block.2")
    with pytest.raises(HarnessError, match=r"unsupported representation\(s\) cls; available: mean_patch"):
        encode(enc, torch.randn(1, 3, 32, 32), ["cls"])


def test_preprocessing_sources(models, tmp_path):
    _, folder = models["dinov2"]
    assert HuggingFace("e", model=str(folder)).identity()["options"]["mean"] == pytest.approx(
        [0.48145466, 0.4578275, 0.40821073])  # BitImageProcessor's defaults (no preprocessor_config.json)
    model = hff.build("dinov2")
    d = hff.save(model, tmp_path / "with_proc", {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                                                  "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                                                  "do_center_crop": True})
    enc = HuggingFace("e", model=str(d))
    enc.validate()
    assert enc.opts["mean"] == [0.485, 0.456, 0.406] and enc.opts["std"] == [0.229, 0.224, 0.225]
    assert enc.image_size == 224
    over = HuggingFace("e", model=str(d), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], image_size=64)
    over.validate()
    assert over.opts["mean"] == [0.5] * 3 and over.opts["std"] == [0.25] * 3 and over.image_size == 64
    # the normalisation really is the one applied to uint8 inputs
    u8 = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    x = (u8.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = model(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(encode(over, u8, ["cls"])["cls"], want, **TOL)


def test_identity_follows_the_weights(models, tmp_path):
    _, folder = models["vit"]
    a = HuggingFace("e", model=str(folder)).identity()
    d = hff.write_folder("vit", tmp_path / "other", seed=5)
    b = HuggingFace("e", model=str(d)).identity()
    assert a["weights_sha256"] != b["weights_sha256"] and a["transformers"] == "5.23.0"


def test_unsupported_model_type_is_one_line(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(HarnessError) as e:
        HuggingFace("e", model=str(d)).validate()
    msg = str(e.value)
    assert "\n" not in msg and "model_type 'bert' is not a supported vision encoder" in msg
    assert "dinov2_with_registers" in msg and "siglip2" in msg and "clip_vision_model" in msg


def test_missing_weights_and_wrong_file_are_one_line(models, tmp_path):
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "config.json").write_text((models["vit"][1] / "config.json").read_text())
    with pytest.raises(HarnessError, match=r"no model weights \(expected one of model.safetensors"):
        HuggingFace("e", model=str(d)).validate()
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HarnessError, match=r"model.safetensors: not a readable safetensors file"):
        HuggingFace("e", model=str(d)).validate()


def test_full_clip_and_siglip_checkpoints_load_their_vision_tower(tmp_path):
    """Hub checkpoints are usually the full two-tower model (model_type clip / siglip): the vision tower is read."""
    from harness.api import import_transformers
    tf = import_transformers()
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    for cfg_cls, model_cls, vision_cls, proj in (("CLIPConfig", "CLIPModel", "CLIPVisionModelWithProjection", "clip"),
                                                 ("SiglipConfig", "SiglipModel", "SiglipVisionModel", "head")):
        torch.manual_seed(0)
        cfg = getattr(tf, cfg_cls)(text_config=text, vision_config=dict(hff.VIT), projection_dim=24)
        full = getattr(tf, model_cls)(cfg).eval()
        full.save_pretrained(str(tmp_path / cfg_cls))
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            want = full.get_image_features(pixel_values=x)
        want = getattr(want, "pooler_output", want)
        enc = HuggingFace("e", model=str(tmp_path / cfg_cls))
        torch.testing.assert_close(encode(enc, x, ["projected"])["projected"], want, **TOL)
        assert enc.load_report["unexpected"], "the text tower is reported as unused"


def test_weights_of_another_shape_are_one_line(tmp_path):
    d = hff.write_folder("clip_vision_model", tmp_path / "clip")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "projection_dim": 40}))
    with pytest.raises(HarnessError, match=r"clip: transformers could not load CLIPVisionModelWithProjection: ") as e:
        encode(HuggingFace("e", model=str(d)), torch.randn(1, 3, 32, 32), ["projected"])
    assert "\n" not in str(e.value)


def test_heads_offered_only_with_their_weights(tmp_path):
    """A ViT saved without its pooler (e.g. from a classifier) loads, without 'pooled'; a missing backbone
    weight is an error naming it."""
    from harness.api import import_transformers
    tf = import_transformers()
    torch.manual_seed(0)
    model = tf.ViTModel(tf.ViTConfig(**hff.VIT), add_pooling_layer=False).eval()
    hff.save(model, tmp_path / "nopool")
    enc = HuggingFace("e", model=str(tmp_path / "nopool"))
    assert not enc.supports("pooled") and enc.supports("cls")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(encode(enc, x, ["tokens"])["tokens"], want, **TOL)
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tmp_path / "nopool" / "model.safetensors"))
    sd.pop("encoder.layer.1.output.dense.weight")
    save_file(sd, str(tmp_path / "nopool" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(HarnessError, match=r"nopool: ViTModel weights missing or of the wrong shape: \S*1\S*"):
        encode(HuggingFace("e", model=str(tmp_path / "nopool")), x, ["tokens"])
