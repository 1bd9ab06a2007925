"""The weight-free baseline encoders: random_vit (seeded timm ViT) and pixels."""
import pytest
import torch

from harness.execution import encode

from harness import HarnessError
from harness.plugins import Plugins
from partbench_plugins.encoders.baselines import Pixels, RandomViT

from _vit_reference import vit_forward

TINY = dict(embed_dim=64, depth=2, num_heads=2, patch_size=16, img_size=64)


def test_registered_through_entry_point():
    plugins = Plugins(allow=["baselines"])
    assert plugins.get("encoder", "random_vit").cls is RandomViT
    assert plugins.get("encoder", "pixels").cls is Pixels


@pytest.mark.parametrize("size", [64, 96])  # 96: position embedding interpolated 4x4 -> 6x6
def test_random_vit_matches_reference(size):
    enc = RandomViT("r", **TINY, seed=3)
    enc.load("cpu")
    x = torch.randn(2, 3, size, size)
    out = encode(enc, x, ["cls", "mean_patch", "tokens", "block.0", "block.1"])
    sd = {k: v.detach() for k, v in enc.backbone.model.state_dict().items()}
    tokens, blocks = vit_forward(sd, x, heads=2, blocks=(0, 1))
    n = (size // 16) ** 2
    assert out["tokens"].shape == (2, 1 + n, 64)
    torch.testing.assert_close(out["tokens"], tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["cls"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["mean_patch"], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["block.0"], blocks[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["block.1"], blocks[1], atol=1e-5, rtol=1e-5)
    # raw block output is not normalised: block.1 (last) differs from tokens by the final LayerNorm
    assert not torch.allclose(out["block.1"], out["tokens"], atol=1e-3)


def test_random_vit_seeded_and_rng_untouched():
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = encode(RandomViT("a", **TINY, seed=0), x, ["cls"])["cls"]
    after = torch.rand(3)
    assert torch.equal(before, after), "building the random ViT must not consume the global RNG"
    b = encode(RandomViT("b", **TINY, seed=0), x, ["cls"])["cls"]
    c = encode(RandomViT("c", **TINY, seed=1), x, ["cls"])["cls"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_random_vit_default_is_tiny_and_identity_has_versions():
    enc = RandomViT("r")
    assert enc.num_blocks == 4 and enc.arch.embed_dim == 192 and enc.arch.patch_size == 16
    ident = enc.identity()
    assert ident["options"]["seed"] == 0 and "timm" in ident and "torch" in ident
    assert enc.supports("block.3") and not enc.supports("block.4") and not enc.supports("projected")


def test_random_vit_errors():
    with pytest.raises(HarnessError, match="not divisible by num_heads"):
        RandomViT("r", embed_dim=64, num_heads=3)
    with pytest.raises(HarnessError, match="not a multiple of patch_size"):
        RandomViT("r", img_size=100)
    enc = RandomViT("r", **TINY)
    with pytest.raises(HarnessError, match="unsupported representation"):
        encode(enc, torch.randn(1, 3, 64, 64), ["projected"])
    with pytest.raises(HarnessError, match="multiples of the patch size"):
        encode(enc, torch.randn(1, 3, 60, 64), ["cls"])


def test_random_vit_bf16_returns_float32():
    enc = RandomViT("r", **TINY, precision="bf16")
    x = torch.randn(2, 3, 64, 64)
    out = encode(enc, x, ["cls"])["cls"]
    ref = encode(RandomViT("r", **TINY), x, ["cls"])["cls"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)


def test_pixels():
    enc = Pixels("p", grid=4, patch_size=16)
    enc.load("cpu")
    x = torch.randn(2, 3, 32, 48)
    out = encode(enc, x, ["cls", "mean_patch", "tokens"])
    # cls: 4x4 area means of the 32x48 image (8x12 cells), channel-major flattening
    cells = x.reshape(2, 3, 4, 8, 4, 12).mean(dim=(3, 5))
    torch.testing.assert_close(out["cls"], cells.reshape(2, -1))
    torch.testing.assert_close(out["mean_patch"], out["cls"])
    # tokens: 2x3 patches of 3*16*16 values, row-major patch order, mean first
    tok = out["tokens"]
    assert tok.shape == (2, 1 + 6, 3 * 16 * 16)
    torch.testing.assert_close(tok[:, 1 + 4], x[:, :, 16:32, 16:32].reshape(2, -1))  # row 1, col 1
    torch.testing.assert_close(tok[:, 0], tok[:, 1:].mean(1))
    with pytest.raises(HarnessError, match="unsupported representation"):
        encode(enc, x, ["block.0"])
    assert not enc.supports("block.0") and not enc.supports("projected")
