"""Encoder families beyond the paper's seven, each from tiny files written in its released layout.

DINOv2 and I-JEPA (authors' code not installable): an independent plain-torch reference written from the
published architecture facts, plus timm's own DINOv2 / I-JEPA models at the native size. CLIP: open_clip
itself (``load_openai_model`` on the TorchScript archive, ``create_model('local-dir:...')`` on an OpenCLIP
repo folder, ``force_image_size`` for the non-native size). SigLIP: open_clip's ``ViT-B-16-SigLIP``
construction (timm tower) on the open_clip file, timm's model on the timm file. DeiT III: the ``timm`` plugin
on the DeiT III file layout. fp32, 1e-5, at 224 and at a non-native, non-square size; strict loading,
reported keys, and one-line errors for every other family's file.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from harness import HarnessError
from harness.compat import import_timm
from harness.execution import encode
from harness.plugins import Plugins
from partbench_plugins.encoders.clip import CLIP, import_open_clip
from partbench_plugins.encoders.dinov2 import DINOv2
from partbench_plugins.encoders.ijepa import IJEPA, RELEASED_HEADS
from partbench_plugins.encoders.siglip import SigLIP
from partbench_plugins.encoders.timm_model import TimmModel
from partbench_plugins.encoders.weight_files import check_heads

import _beyond_files as bf
from _paper_files import W, make
from _vit_reference import gelu, gelu_tanh
from test_encoders_checkpoints import CLASSES as PAPER_CLASSES, METHOD_NAME as PAPER_NAMES

ATOL = 1e-5
open_clip = import_open_clip()  # a dependency of the package (setup.cfg): never skipped


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def image(h=224, w=224, n=2, seed=1):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every family's files, written once: name -> (path, object or model)."""
    root = tmp_path_factory.mktemp("beyond")
    out = {}
    for name, kw, seed in (("dinov2_vits14_pretrain.pth", {}, 1),
                           ("dinov2_vits14_reg4_pretrain.pth", {"registers": 4}, 2),
                           ("dinov2_vitg14_pretrain.pth", {"swiglu_hidden": 40}, 3)):
        obj = bf.dinov2_file(bf.Rand(seed), **kw)
        torch.save(obj, root / name)
        out[name] = (root / name, obj)
    obj = bf.ijepa_file(bf.Rand(4))
    torch.save(obj, root / "IN1K-vit.h.14-300e.pth.tar")
    out["ijepa"] = (root / "IN1K-vit.h.14-300e.pth.tar", obj)
    model = bf.clip_model(5, quick_gelu=True)
    out["clip_openai"] = (bf.write_openai_archive(model, root / "ViT-B-16.pt"), model)
    model = bf.clip_model(6, quick_gelu=False)
    out["clip_openclip"] = (bf.write_openclip_dir(model, root / "laion-b16", quick_gelu=False), model)
    out["clip_safetensors"] = (bf.write_openclip_dir(model, root / "laion-b16-st", False, safetensors=True), model)
    model = bf.siglip_model(7)
    oc, tm = bf.write_siglip_files(model, root / "siglip")
    out["siglip_openclip"], out["siglip_timm"] = (oc, model), (tm, model)
    return out


# ------------------------------------------------------------------------------------------------
# DINOv2
# ------------------------------------------------------------------------------------------------
DINOV2 = ["dinov2_vits14_pretrain.pth", "dinov2_vits14_reg4_pretrain.pth", "dinov2_vitg14_pretrain.pth"]
REPS = ["cls", "mean_patch", "tokens", "block.0", "block.1"]


def check(out, tokens, blocks, prefix=1):
    close(out["tokens"], tokens)
    close(out["mean_patch"], tokens[:, prefix:].mean(1))
    if prefix:
        close(out["cls"], tokens[:, 0])
    for i, b in blocks.items():
        close(out[f"block.{i}"], b)


@pytest.mark.parametrize("name", DINOV2)
@pytest.mark.parametrize("size", [(224, 224), (518, 518), (280, 210)])
def test_dinov2_matches_reference(name, size, files):
    path, sd = files[name]
    enc = DINOv2("d", checkpoint=str(path), num_heads=bf.HEADS)
    x = image(*size)
    out = encode(enc, x, REPS)
    regs = "register_tokens" in sd
    tokens, blocks = bf.dinov2_reference(sd, x, offset=0.0 if regs else 0.1, antialias=regs, blocks=(0, 1))
    gh, gw = size[0] // 14, size[1] // 14
    assert out["tokens"].shape == (2, 1 + gh * gw, bf.D)  # registers dropped
    check(out, tokens, blocks)
    rep = enc.load_report
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["ignored"] == {"mask_token": 1}
    assert enc.num_blocks == 2 and enc.patch_size == 14 and enc.embed_dim == bf.D and enc.prefix_tokens == 1
    assert len(enc.identity()["checkpoint_sha256"]) == 64


def test_dinov2_resampling_rule_is_the_hubs(files):
    """At 224 the non-register models resample with the 0.1 offset (scale factor), which differs from
    resampling to the size: the test would catch the wrong rule. The options switch it."""
    path, sd = files[DINOV2[0]]
    x = image()
    hub = encode(DINOv2("d", checkpoint=str(path), num_heads=2), x, ["tokens"])["tokens"]
    sized = encode(DINOv2("d", checkpoint=str(path), num_heads=2, interpolate_offset=0.0), x, ["tokens"])["tokens"]
    assert (hub - sized).abs().max() > 1e-4
    close(sized, bf.dinov2_reference(sd, x, offset=0.0, antialias=False)[0])
    anti = encode(DINOv2("d", checkpoint=str(path), num_heads=2, interpolate_offset=0.0, interpolate_antialias=True),
                  x, ["tokens"])["tokens"]
    assert (anti - sized).abs().max() > 1e-4
    close(anti, bf.dinov2_reference(sd, x, offset=0.0, antialias=True)[0])


@pytest.mark.parametrize("name,timm_name", [(DINOV2[0], "vit_small_patch14_dinov2"),
                                            (DINOV2[1], "vit_small_patch14_reg4_dinov2")])
def test_dinov2_equals_timm_at_native_size(name, timm_name, files):
    """timm's own DINOv2 models, loaded through timm's converter of the released file, at 518."""
    import_timm()
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path, sd = files[name]
    model = timm.create_model(timm_name, pretrained=False, embed_dim=bf.D, depth=2, num_heads=bf.HEADS,
                              num_classes=0).eval()
    model.load_state_dict(checkpoint_filter_fn(dict(sd), model), strict=True)
    x = image(518, 518, n=1)
    with torch.no_grad():
        ref = model.forward_features(x)
    ref = torch.cat([ref[:, :1], ref[:, model.num_prefix_tokens:]], dim=1)
    close(encode(DINOv2("d", checkpoint=str(path), num_heads=bf.HEADS), x, ["tokens"])["tokens"], ref)


# ------------------------------------------------------------------------------------------------
# I-JEPA
# ------------------------------------------------------------------------------------------------
def ijepa_encoder_sd(obj, net="encoder"):
    return {k[len("module."):]: v for k, v in obj[net].items()}


@pytest.mark.parametrize("network", ["encoder", "target_encoder"])
@pytest.mark.parametrize("size", [(224, 224), (280, 210)])
def test_ijepa_matches_reference(network, size, files):
    path, obj = files["ijepa"]
    enc = IJEPA("i", checkpoint=str(path), num_heads=bf.HEADS, network=network)
    x = image(*size)
    out = encode(enc, x, ["mean_patch", "tokens", "block.0", "block.1"])
    tokens, blocks = bf.ijepa_reference(ijepa_encoder_sd(obj, network), x, blocks=(0, 1))
    assert out["tokens"].shape == (2, (size[0] // 14) * (size[1] // 14), bf.D)  # no CLS token
    check(out, tokens, blocks, prefix=0)
    rep = enc.load_report
    assert rep["missing"] == [] and rep["unexpected"] == []
    other = "target_encoder" if network == "encoder" else "encoder"
    assert set(rep["ignored"]) == {f"checkpoint['{k}']" for k in obj if k != network} and \
        f"checkpoint['{other}']" in rep["ignored"]
    assert not enc.supports("cls") and not enc.supports("projected") and enc.supports("block.1")
    assert enc.prefix_tokens == 0


def test_ijepa_equals_timm(files):
    """timm's I-JEPA model (vit_huge_patch14_gap_224 definition, tiny) loads the file through timm's own
    converter ('encoder', 'module.'): same tokens, and its average pool equals mean_patch."""
    import_timm()
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path, obj = files["ijepa"]
    model = timm.create_model("vit_huge_patch14_gap_224", pretrained=False, embed_dim=bf.D, depth=2,
                              num_heads=bf.HEADS, num_classes=0).eval()
    model.load_state_dict(checkpoint_filter_fn(dict(obj), model), strict=True)
    x = image(n=1)
    out = encode(IJEPA("i", checkpoint=str(path), num_heads=bf.HEADS), x, ["tokens", "mean_patch"])
    with torch.no_grad():
        close(out["tokens"], model.forward_features(x))
        close(out["mean_patch"], model.forward_head(model.forward_features(x), pre_logits=True))


def test_ijepa_released_heads():
    assert check_heads("f", 1280, None, RELEASED_HEADS) == 16  # ViT-H/14: 16 heads of 80, not 1280 // 64
    assert check_heads("f", 1408, None, RELEASED_HEADS) == 16
    assert check_heads("f", 1280, 20, RELEASED_HEADS) == 20


# ------------------------------------------------------------------------------------------------
# CLIP
# ------------------------------------------------------------------------------------------------
def clip_reference(visual, x, blocks=(0, 1)):
    """open_clip's VisionTransformer: ln_post tokens (output_tokens), the class token before and after proj,
    raw block outputs (forward_intermediates)."""
    visual = visual.eval()
    with torch.no_grad():
        visual.output_tokens = True
        projected, patches = visual(x)
        inter = visual.forward_intermediates(x, indices=list(blocks), output_fmt="NLC", output_extra_tokens=True)
        proj, visual.proj = visual.proj, None
        cls, _ = visual(x)
        visual.proj, visual.output_tokens = proj, False
    tokens = torch.cat([cls[:, None], patches], dim=1)
    return tokens, projected, {i: torch.cat([p, t], dim=1) for i, p, t in
                               zip(blocks, inter["image_intermediates_prefix"], inter["image_intermediates"])}


def test_clip_openai_archive(files):
    path, _ = files["clip_openai"]
    enc = CLIP("c", checkpoint=str(path))
    x = image()
    out = encode(enc, x, REPS + ["projected"])
    ref = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    tokens, projected, blocks = clip_reference(ref.visual, x)
    check(out, tokens, blocks)
    close(out["projected"], projected)
    with torch.no_grad():
        close(out["projected"], ref.encode_image(x))
    rep = enc.load_report
    assert rep["missing"] == [] and rep["unexpected"] == []
    for key in ("input_resolution", "context_length", "vocab_size", "transformer.*", "token_embedding.*",
                "positional_embedding", "ln_final.*", "text_projection", "logit_scale"):
        assert key in rep["ignored"], (key, rep["ignored"])
    assert "act=quick_gelu" in rep["architecture"] and enc.identity()["activation"] == "quick_gelu"
    assert out["projected"].shape == (2, bf.CLIP_EMBED) and enc.opts["mean"][0] == pytest.approx(0.48145466)


@pytest.mark.parametrize("size", [(224, 224), (320, 256)])
def test_clip_openclip_file(size, files):
    path, _ = files["clip_openclip"]
    enc = CLIP("c", checkpoint=str(path))  # GELU, read from the open_clip_config.json next to the file
    x = image(*size)
    out = encode(enc, x, REPS + ["projected"])
    ref = open_clip.create_model(f"local-dir:{path.parent}", force_image_size=size)  # resize_pos_embed on load
    tokens, projected, blocks = clip_reference(ref.visual, x)
    check(out, tokens, blocks)
    close(out["projected"], projected)
    assert "act=gelu" in enc.load_report["architecture"]
    st_path, _ = files["clip_safetensors"]
    close(encode(CLIP("c", checkpoint=str(st_path)), x, ["tokens"])["tokens"], tokens)


def test_clip_activation_must_be_known(files, tmp_path):
    path, _ = files["clip_openclip"]
    alone = tmp_path / "open_clip_pytorch_model.bin"
    shutil.copyfile(path, alone)
    with pytest.raises(HarnessError, match="quick_gelu: true.*quick_gelu: false") as err:
        CLIP("c", checkpoint=str(alone)).validate()
    assert "\n" not in str(err.value) and str(alone) in str(err.value)
    x = image(n=1)
    gelu = encode(CLIP("c", checkpoint=str(alone), quick_gelu=False), x, ["tokens"])["tokens"]
    close(gelu, encode(CLIP("c", checkpoint=str(path)), x, ["tokens"])["tokens"])
    quick = encode(CLIP("c", checkpoint=str(alone), quick_gelu=True), x, ["tokens"])["tokens"]
    assert (quick - gelu).abs().max() > 1e-4  # the activation matters: a wrong default would be caught


# ------------------------------------------------------------------------------------------------
# SigLIP
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,act", [
    ({"model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}, "gelu_tanh"),
    ({"model_type": "siglip", "vision_config": {"hidden_act": "gelu"}}, "gelu"),
    ({"architecture": "vit_base_patch16_siglip_224", "model_args": {"act_layer": "gelu"}}, "gelu"),
    ({"architecture": "vit_base_patch16_siglip_224", "num_classes": 0}, "gelu_tanh"),  # timm's: silent on it
])
def test_siglip_activation_from_config(config, act, files, tmp_path):
    """A config.json next to the weights that states the activation decides it; the option overrides."""
    shutil.copyfile(files["siglip_timm"][0], tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    x = image(n=1)
    enc = SigLIP("s", checkpoint=str(tmp_path / "model.safetensors"), num_heads=bf.SIGLIP_HEADS)
    out = encode(enc, x, ["tokens", "projected"])
    tokens, pooled, _ = bf.siglip_reference(siglip_trunk_sd(files), x, heads=bf.SIGLIP_HEADS,
                                            act=gelu if act == "gelu" else gelu_tanh)
    close(out["tokens"], tokens)
    close(out["projected"], pooled)
    assert enc.identity()["activation"] == act
    other = "gelu" if act == "gelu_tanh" else "gelu_tanh"
    forced = SigLIP("s", checkpoint=str(tmp_path / "model.safetensors"), num_heads=bf.SIGLIP_HEADS, activation=other)
    assert forced.identity()["activation"] == other and forced.identity() != enc.identity()


def test_siglip_unknown_config_activation(files, tmp_path):
    shutil.copyfile(files["siglip_timm"][0], tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model", "hidden_act": "relu"}))
    with pytest.raises(HarnessError, match=r"config.json: hidden_act is 'relu'; expected one of .*gelu_pytorch_tanh"):
        SigLIP("s", checkpoint=str(tmp_path / "model.safetensors")).validate()
    enc = SigLIP("s", checkpoint=str(tmp_path / "model.safetensors"), activation="gelu")  # the option wins
    enc.validate()


def test_siglip_open_clip_file(files):
    """open_clip's own ViT-B-16-SigLIP on the same file: timm's SigLIP 1 definition, exact GELU (which
    ``activation: gelu`` selects; the default is the published tanh approximation, tested above)."""
    path, _ = files["siglip_openclip"]
    enc = SigLIP("s", checkpoint=str(path), num_heads=bf.SIGLIP_HEADS, activation="gelu")
    x = image()
    out = encode(enc, x, ["mean_patch", "tokens", "block.0", "block.1", "projected"])
    ref = open_clip.create_model(f"local-dir:{path.parent}").eval()
    trunk = ref.visual.trunk
    with torch.no_grad():
        tokens = trunk.forward_features(x)
        inter = trunk.forward_intermediates(x, indices=[0, 1], output_fmt="NLC", intermediates_only=True)
        close(out["projected"], ref.encode_image(x))
    check(out, tokens, dict(enumerate(inter)), prefix=0)
    rep = enc.load_report
    assert rep["missing"] == [] and rep["unexpected"] == []
    assert {"text.*", "logit_scale", "logit_bias"} <= set(rep["ignored"]), rep["ignored"]
    assert not enc.supports("cls") and enc.prefix_tokens == 0 and enc.opts["mean"] == [0.5, 0.5, 0.5]
    assert out["projected"].shape == (2, bf.SIGLIP_WIDTH)


def siglip_trunk_sd(files):
    from safetensors.torch import load_file
    return load_file(str(files["siglip_timm"][0]))


@pytest.mark.parametrize("name", ["siglip_timm", "siglip_openclip"])
@pytest.mark.parametrize("size", [(224, 224), (320, 256)])
def test_siglip_matches_published_model(name, size, files):
    """Against an independent plain-torch SigLIP (the published architecture: tanh-approximated GELU in the
    blocks and the MAP head), every weight perturbed off its init: pooled, tokens and blocks within 1e-5."""
    sd = siglip_trunk_sd(files)
    x = image(*size)
    enc = SigLIP("s", checkpoint=str(files[name][0]), num_heads=bf.SIGLIP_HEADS)
    out = encode(enc, x, ["mean_patch", "tokens", "block.0", "block.1", "projected"])
    tokens, pooled, blocks = bf.siglip_reference(sd, x, heads=bf.SIGLIP_HEADS, blocks=(0, 1))
    check(out, tokens, blocks, prefix=0)
    close(out["projected"], pooled)
    assert enc.identity()["activation"] == "gelu_tanh" and "act=gelu_tanh act_from=published" in \
        enc.load_report["architecture"]
    exact, exact_pooled, _ = bf.siglip_reference(sd, x, heads=bf.SIGLIP_HEADS, act=gelu)
    assert (exact - tokens).abs().max() > 4 * ATOL and (exact_pooled - pooled).abs().max() > 4 * ATOL  # it can tell


@pytest.mark.parametrize("size", [(224, 224), (320, 256)])
def test_siglip_timm_file(size, files):
    path, _ = files["siglip_timm"]
    enc = SigLIP("s", checkpoint=str(path), num_heads=bf.SIGLIP_HEADS, activation="gelu")  # model.safetensors, as timm
    x = image(*size)
    out = encode(enc, x, ["mean_patch", "tokens", "block.1", "projected"])
    ref = open_clip.create_model(f"local-dir:{files['siglip_openclip'][0].parent}", force_image_size=size).eval()
    with torch.no_grad():  # open_clip resizes the timm tower with timm's own set_input_size
        tokens = ref.visual.trunk.forward_features(x)
        close(out["projected"], ref.encode_image(x))
    close(out["tokens"], tokens)
    close(out["mean_patch"], tokens.mean(1))
    assert enc.load_report["ignored"] == {} and enc.load_report["source"] == "timm state dict (raw)"


# ------------------------------------------------------------------------------------------------
# DeiT III (supervised, IN-21k) through the timm plugin
# ------------------------------------------------------------------------------------------------
DEIT3_KW = bf.DEIT3_KW


def test_deit3_through_timm_plugin(tmp_path):
    path = tmp_path / "deit_3_base_224_21k.pth"
    model = bf.deit3_file(path)
    enc = TimmModel("deit3", model="deit3_base_patch16_224", checkpoint=str(path), model_kwargs=DEIT3_KW,
                    filter_kwargs={"adapt_layer_scale": True}, pretraining="supervised")
    x = image(n=1)
    out = encode(enc, x, ["cls", "mean_patch", "tokens"])
    with torch.no_grad():
        tokens = model.forward_features(x)
    close(out["tokens"], tokens)
    close(out["mean_patch"], tokens[:, 1:].mean(1))
    assert enc.load_report["missing"] == [] and enc.load_report["unexpected"] == []
    assert enc.pretraining == "supervised"
    with pytest.raises(HarnessError, match="unexpected keys: blocks.0.gamma_1"):
        TimmModel("deit3", model="deit3_base_patch16_224", checkpoint=str(path), model_kwargs=DEIT3_KW).validate()


# ------------------------------------------------------------------------------------------------
# wrong files: one line naming the file and what was expected
# ------------------------------------------------------------------------------------------------
NEW = {"dinov2": (DINOv2, "DINOv2", DINOV2[0]), "ijepa": (IJEPA, "I-JEPA", "ijepa"),
       "clip": (CLIP, "CLIP", "clip_openai"), "siglip": (SigLIP, "SigLIP", "siglip_timm")}
NEW_FILES = [DINOV2[0], DINOV2[1], "ijepa", "clip_openai", "clip_openclip", "siglip_openclip", "siglip_timm"]
FAMILY_OF = {DINOV2[0]: "dinov2", DINOV2[1]: "dinov2", "ijepa": "ijepa", "clip_openai": "clip",
             "clip_openclip": "clip", "siglip_openclip": "siglip", "siglip_timm": "siglip"}


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper7")
    out = {}
    for i, m in enumerate(PAPER_CLASSES):
        torch.save(make(m, W(300 + i)), root / f"{m}.pth")
        out[m] = root / f"{m}.pth"
    return out


def one_line(exc, path):
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.mark.parametrize("family,other", [(f, o) for f in NEW for o in NEW_FILES if FAMILY_OF[o] != f]
                         + [(f, p) for f in NEW for p in PAPER_CLASSES])
def test_new_encoders_refuse_other_files(family, other, files, paper_files):
    cls, method, _ = NEW[family]
    path = files[other][0] if other in files else paper_files[other]
    with pytest.raises(HarnessError) as err:
        cls(family, checkpoint=str(path)).load("cpu")
    msg = one_line(err, path)
    assert re.search(f"not an? {re.escape(method)} checkpoint", msg) and "expected" in msg, msg


@pytest.mark.parametrize("method", list(PAPER_CLASSES))
@pytest.mark.parametrize("other", NEW_FILES)
def test_paper_encoders_refuse_new_files(method, other, files):
    path = files[other][0]
    with pytest.raises(HarnessError) as err:
        PAPER_CLASSES[method](method, checkpoint=str(path)).load("cpu")
    msg = one_line(err, path)
    assert re.search(f"not an? {re.escape(PAPER_NAMES[method])} checkpoint|TorchScript archive|"
                     f"not a readable PyTorch checkpoint", msg) and "expected" in msg, msg
    if other.startswith("dinov2") and method == "dino":
        assert "found a DINOv2 backbone" in msg  # not "incomplete DINO checkpoint"


@pytest.mark.parametrize("family", list(NEW))
def test_truncated_files(family, files, tmp_path):
    cls, _, name = NEW[family]
    path = files[name][0]
    bad = tmp_path / path.name
    data = path.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(HarnessError) as err:
        cls(family, checkpoint=str(bad), quick_gelu=True).load("cpu") if family == "clip" else \
            cls(family, checkpoint=str(bad)).load("cpu")
    assert "not a readable" in one_line(err, bad)


def test_strict_lists_keys_and_non_strict_reports_them(files, tmp_path):
    _, sd = files[DINOV2[1]]
    broken = dict(sd)
    del broken["blocks.1.ls2.gamma"]
    broken["blocks.0.extra"] = torch.ones(3)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(broken, path)
    with pytest.raises(HarnessError) as err:
        DINOv2("d", checkpoint=str(path), num_heads=2).load("cpu")
    msg = one_line(err, path)
    assert "missing keys: blocks.1.ls2.gamma" in msg and "unexpected keys: blocks.0.extra" in msg
    enc = DINOv2("d", checkpoint=str(path), num_heads=2, strict=False)
    enc.load("cpu")
    assert enc.load_report["missing"] == ["blocks.1.ls2.gamma"] and enc.load_report["unexpected"] == ["blocks.0.extra"]


def test_all_registered():
    plugins = Plugins(allow=["dinov2", "ijepa", "clip", "siglip"])
    for name, (cls, _, _) in NEW.items():
        assert plugins.get("encoder", name).cls is cls
