"""The tiny pretrained encoders: shipped weights (checksums, manifest), strict loading, representations,
and one-line errors for wrong files."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness import HarnessError
from harness.execution import encode
from harness.plugins import Plugins
from partbench_plugins.encoders.tiny_pretrained import ARCH, METHODS, WEIGHTS_DIR, TinyPretrained

from _vit_reference import vit_forward

MANIFEST = json.loads((WEIGHTS_DIR / "manifest.json").read_text())


def test_registered_through_entry_point():
    assert Plugins(allow=["tiny_pretrained"]).get("encoder", "tiny_pretrained").cls is TinyPretrained


@pytest.mark.parametrize("method", list(METHODS))
def test_shipped_weights_match_manifest(method):
    import hashlib

    entry = MANIFEST["methods"][method]
    path = WEIGHTS_DIR / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert MANIFEST["command"] == "python pretrain/tiny.py --out plugins/encoders/tiny_weights"
    assert MANIFEST["architecture"] == ARCH.describe()
    assert path.stat().st_size < 6_000_000  # fp16, a few MB


@pytest.mark.parametrize("method", list(METHODS))
def test_loads_strictly_and_matches_reference_forward(method):
    enc = TinyPretrained("t", method=method)
    enc.validate()
    assert enc.pretraining == METHODS[method]
    assert enc.supports("projected") == (method == "contrastive")
    assert enc.supports("block.3") and not enc.supports("block.4")
    enc.load("cpu")
    assert enc.load_report["pretraining"]["method"] == method
    sd = {k: v.float() for k, v in load_file(str(enc.path)).items() if not k.startswith("head.")}
    for size in (64, 128):  # native 4 x 4 grid, and the interpolated 8 x 8 of the segmentation tasks
        x = torch.randn(2, 3, size, size)
        reps = ["cls", "mean_patch", "block.1"] + (["projected"] if method == "contrastive" else [])
        out = encode(enc, x, reps)
        if size == 64:
            tokens, blocks = vit_forward(sd, x, heads=ARCH.num_heads, blocks=(1,))
            torch.testing.assert_close(out["cls"], tokens[:, 0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out["block.1"], blocks[1], atol=1e-4, rtol=1e-4)
        assert out["block.1"].shape == (2, 1 + (size // 16) ** 2, 192)
        if method == "contrastive":
            assert out["projected"].shape == (2, 128)
    # the weights are trained: far from the initialisation pretrain/tiny.py starts from (timm's, seed 0)
    from partbench_plugins.encoders.encoder_bases import seeded
    from partbench_plugins.encoders.vit_architecture import build_model

    with seeded(0):
        init = build_model(ARCH).state_dict()
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight", "pos_embed"):
        assert (sd[k] - init[k]).abs().max() > 1e-3, k  # fp16 storage alone moves a weight by < 1e-4
    assert enc.identity()["checkpoint_sha256"] == MANIFEST["methods"][method]["sha256"]


def test_projected_refused_where_there_is_no_head():
    enc = TinyPretrained("t", method="mim")
    enc.load("cpu")
    with pytest.raises(HarnessError, match="unsupported representation"):
        encode(enc, torch.randn(1, 3, 64, 64), ["projected"])


def _copy(tmp_path, method, edit=None, meta=None):
    sd = load_file(str(WEIGHTS_DIR / f"{method}.safetensors"))
    if edit:
        edit(sd)
    path = tmp_path / f"{method}-edited.safetensors"
    save_file(sd, str(path), metadata=meta if meta is not None else {"partbench": json.dumps({"method": method})})
    return path


def test_wrong_files_fail_with_one_line(tmp_path):
    sup = WEIGHTS_DIR / "supervised.safetensors"
    with pytest.raises(HarnessError, match=r"weights of method 'supervised', but the encoder asks for method 'mim'"):
        TinyPretrained("t", method="mim", weights=str(sup)).validate()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(HarnessError, match="not a readable safetensors file"):
        TinyPretrained("t", method="mim", weights=str(junk)).validate()
    foreign = _copy(tmp_path, "mim", meta={})
    with pytest.raises(HarnessError, match="no 'partbench' metadata entry"):
        TinyPretrained("t", method="mim", weights=str(foreign)).validate()
    with pytest.raises(HarnessError, match="weights file .* not found"):
        TinyPretrained("t", method="mim", weights=str(tmp_path / "absent.safetensors")).validate()


def test_missing_or_unexpected_keys_are_reported_never_loaded(tmp_path):
    no_norm = _copy(tmp_path, "supervised", edit=lambda sd: sd.pop("norm.weight"))
    with pytest.raises(HarnessError, match=r"missing keys: norm\.weight") as exc:
        TinyPretrained("t", method="supervised", weights=str(no_norm)).load()
    assert "\n" not in str(exc.value)
    no_head = _copy(tmp_path, "contrastive", edit=lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("head.")])
    with pytest.raises(HarnessError, match=r"projection head \(head\.\*\): missing keys: 0\.bias"):
        TinyPretrained("t", method="contrastive", weights=str(no_head)).load()
    extra = _copy(tmp_path, "mim", edit=lambda sd: sd.update({"decoder.pos": torch.zeros(2)}))
    with pytest.raises(HarnessError, match=r"unexpected keys: decoder\.pos"):
        TinyPretrained("t", method="mim", weights=str(extra)).load()
