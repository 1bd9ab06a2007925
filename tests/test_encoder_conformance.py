"""Every built-in encoder passes the conformance kit (``harness.testing.check_encoder``) on its tiny weight files
(the paper's seven, the beyond families, ``timm``, ``hf``, the baselines, the tiny pretrained ViTs), and the kit
catches what it promises to catch."""
from __future__ import annotations

import pytest
import torch

from harness.api import Encoder, HarnessError, Option
from harness.testing import check_encoder

import _beyond_files as bf
import _hf_files as hff
from _paper_files import HEADS, W, make

PAPER = ("deit", "mocov3", "dino", "ibot", "beit", "mae", "cae")


def _paper(method):
    def write(tmp):
        torch.save(make(method, W(200 + PAPER.index(method))), tmp / f"{method}.pth")
        return {"checkpoint": str(tmp / f"{method}.pth"), "num_heads": HEADS}, None
    return write


def _dinov2(tmp, registers=0):
    torch.save(bf.dinov2_file(bf.Rand(21), registers=registers), tmp / "dinov2.pth")
    return {"checkpoint": str(tmp / "dinov2.pth"), "num_heads": bf.HEADS}, None


def _clip(tmp):
    path = bf.write_openai_archive(bf.clip_model(23, quick_gelu=True), tmp / "ViT-B-16.pt")
    return {"checkpoint": str(path)}, None


def _siglip(tmp):
    _, timm_file = bf.write_siglip_files(bf.siglip_model(24), tmp / "siglip")
    return {"checkpoint": str(timm_file), "num_heads": bf.SIGLIP_HEADS}, None


def _ijepa(tmp):
    torch.save(bf.ijepa_file(bf.Rand(25)), tmp / "ijepa.pth.tar")
    return {"checkpoint": str(tmp / "ijepa.pth.tar"), "num_heads": bf.HEADS}, None


def _timm(tmp):
    bf.deit3_file(tmp / "deit3.pth")
    return {"model": "deit3_base_patch16_224", "checkpoint": str(tmp / "deit3.pth"), "model_kwargs": bf.DEIT3_KW,
            "filter_kwargs": {"adapt_layer_scale": True}}, None


def _hf(kind, **overrides):
    def write(tmp):
        folder = hff.write_folder(kind, tmp / kind, seed=30, **overrides)
        bad = tmp / "broken"
        bad.mkdir()
        (bad / "config.json").write_text((folder / "config.json").read_text())
        (bad / "model.safetensors").write_bytes(b"this is not a model file\n")
        return {"model": str(folder)}, {"model": str(bad)}
    return write


CASES = {
    **{m: (m, _paper(m)) for m in PAPER},
    "dinov2": ("dinov2", _dinov2), "dinov2_reg4": ("dinov2", lambda t: _dinov2(t, registers=4)),
    "clip": ("clip", _clip), "siglip": ("siglip", _siglip), "ijepa": ("ijepa", _ijepa), "timm": ("timm", _timm),
    **{f"hf_{k}": ("hf", _hf(k)) for k in hff.KINDS if k != "aimv2_vision_model"},
    "hf_aimv2_native": ("hf", _hf("aimv2_vision_model", is_native=True)),
    "random_vit": ("random_vit", lambda t: (dict(embed_dim=32, depth=2, num_heads=2, img_size=64), None)),
    "pixels": ("pixels", lambda t: ({"grid": 4}, None)),
    **{f"tiny_pretrained_{m}": ("tiny_pretrained", lambda t, m=m: ({"method": m}, None))
       for m in ("supervised", "contrastive", "mim")},
}
SLOW = {"clip", "siglip", "timm"}  # open_clip / timm model construction takes seconds on a busy machine


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_builtin_encoder_conforms(case, tmp_path):
    plugin, write = CASES[case]
    options, wrong = write(tmp_path)
    report = check_encoder(plugin, options, wrong=wrong, batch=2)
    assert report["representations"] and len(report["sizes"]) == 2
    if plugin not in ("random_vit", "pixels"):  # the baselines read no file
        assert report["wrong_file"], f"{case}: no wrong file was tried"


def test_aimv2_fixed_table_runs_its_one_size(tmp_path):
    """AIMv2 without is_native has a position table for image_size only: the kit runs it at that size."""
    options, wrong = _hf("aimv2_vision_model")(tmp_path)
    check_encoder("hf", options, wrong=wrong, sizes=[(32, 32), (32, 32)], batch=2)
    with pytest.raises(HarnessError, match="is_native false"):
        check_encoder("hf", options, wrong=wrong, batch=2)


class _Broken(Encoder):
    """A deliberately wrong encoder: its outputs depend on the batch, its grid ignores the input size and its
    validate accepts any file."""
    representations = ("mean_patch", "tokens")
    options = {"checkpoint": Option(str, help="a file", path="file")}
    embed_dim, patch_size, prefix_tokens = 4, 8, 0

    def load(self, device="cpu"):
        pass

    def forward(self, x, reps):
        tokens = x.mean(dim=(0, 1)).flatten()[:4 * 16].reshape(1, 16, 4).expand(x.shape[0], -1, -1)  # batch mean
        return {"tokens": tokens, "mean_patch": tokens.mean(1)}


def test_kit_reports_each_failure(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(AssertionError) as e:
        check_encoder(_Broken, {"checkpoint": str(f)}, batch=2)
    msg = str(e.value)
    assert "tokens at 48x40: shape (2, 16, 4), expected (2, 30, 4)" in msg
    assert "item differs when run alone" in msg
    assert "validate() accepted it" in msg
