"""The generic `timm` encoder: any timm architecture + a local checkpoint file, no hub access."""
import pytest
import torch

from harness.execution import encode

from harness import HarnessError
from harness.compat import import_timm
from partbench_plugins.encoders.timm_model import TimmModel

from _vit_reference import vit_forward

KW = {"depth": 2, "num_classes": 0}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    timm = import_timm()
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KW).eval()
    sd = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()}  # non-trivial LN/bias
    path = tmp_path_factory.mktemp("timm") / "vit_tiny_ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 5}, path)
    return path, sd


@pytest.mark.parametrize("size", [224, 320])
def test_matches_reference(ckpt, size):
    path, sd = ckpt
    enc = TimmModel("t", model="vit_tiny_patch16_224", checkpoint=str(path), strip_prefixes=["module."],
                    model_kwargs=KW)
    x = torch.randn(2, 3, size, size)
    out = encode(enc, x, ["cls", "mean_patch", "tokens", "block.0", "block.1"])
    assert enc.load_report["missing"] == [] and enc.load_report["unexpected"] == []
    assert enc.load_report["ignored"] == {"checkpoint['epoch']": 1}
    # timm resamples the position embedding itself (antialiased bicubic), unlike the method plugins
    tokens, blocks = vit_forward(sd, x, heads=3, blocks=(0, 1), antialias=True)
    torch.testing.assert_close(out["tokens"], tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["cls"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["mean_patch"], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["block.1"], blocks[1], atol=1e-5, rtol=1e-5)
    assert len(enc.identity()["checkpoint_sha256"]) == 64


def test_strict_and_errors(ckpt, tmp_path):
    path, _ = ckpt
    with pytest.raises(HarnessError, match="unexpected keys: module.blocks.0"):
        TimmModel("t", model="vit_tiny_patch16_224", checkpoint=str(path), model_kwargs=KW).load("cpu")
    with pytest.raises(HarnessError, match="no state dict under checkpoint_key 'teacher'"):
        TimmModel("t", model="vit_tiny_patch16_224", checkpoint=str(path), checkpoint_key="teacher",
                  model_kwargs=KW).load("cpu")
    with pytest.raises(HarnessError, match="did you mean 'vit_tiny_patch16_224'"):
        TimmModel("t", model="vit_tiny_patch16_22", checkpoint=str(path)).supports("cls")
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(HarnessError, match="x.pth: not a readable PyTorch checkpoint"):
        TimmModel("t", model="vit_tiny_patch16_224", checkpoint=str(bad), model_kwargs=KW).load("cpu")
    enc = TimmModel("t", model="vit_tiny_patch16_224", checkpoint=str(path), model_kwargs=KW)
    assert enc.supports("block.1") and not enc.supports("block.2") and not enc.supports("projected")
