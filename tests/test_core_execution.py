"""The one encoder forward (harness.execution.Executor): the forward_intermediates contract, the named
representations derived from it, the forward(x, reps) path of older plugins, and the checks around both."""
from __future__ import annotations

import pytest
import torch

from harness import Encoder, HarnessError
from harness.execution import Executor, encode


class Intermediates(Encoder):
    """Tokens = [prefix tokens, patch means]; block i = tokens * (i + 1); records what it was asked."""

    representations = ("cls", "mean_patch", "tokens", "blocks", "projected")
    num_blocks = 3
    patch_size = 4

    def __init__(self, prefix: int = 1, **opts):
        super().__init__("toy", **{"mean": [0.0] * 3, "std": [1.0] * 3, "batch_size": 2, "precision": "fp32", **opts})
        self.prefix_tokens = prefix
        self.calls = []

    def load(self, device="cpu"):
        self.device = device

    def forward_intermediates(self, x, indices, final=True):
        self.calls.append((list(indices), final, torch.is_inference_mode_enabled(),
                           torch.is_autocast_enabled(x.device.type)))
        patches = torch.nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)  # [B, N, 3]
        prefix = torch.stack([patches.amax(1), patches.amin(1)], dim=1)[:, :self.prefix_tokens]
        t = torch.cat([prefix, patches], dim=1)
        return (t if final else None), {i: t * (i + 1) for i in indices}

    def project(self, tokens):
        return tokens[:, 0] * 10


def batch():
    return torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12) / 100


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_representations_are_derived_from_forward_intermediates(prefix):
    enc = Intermediates(prefix)
    x = batch()
    reps = ["tokens", "block.2", "mean_patch", "block.0", "projected"] + (["cls"] if prefix else [])
    out = encode(enc, x, reps)
    patches = torch.nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)
    assert list(out) == reps and all(v.dtype == torch.float32 for v in out.values())
    assert out["tokens"].shape == (2, prefix + 6, 3)
    torch.testing.assert_close(out["tokens"][:, prefix:], patches)
    torch.testing.assert_close(out["mean_patch"], patches.mean(1))  # prefix tokens excluded
    torch.testing.assert_close(out["block.2"], out["tokens"] * 3)
    torch.testing.assert_close(out["block.0"], out["tokens"])
    torch.testing.assert_close(out["projected"], out["tokens"][:, 0] * 10)
    if prefix:
        torch.testing.assert_close(out["cls"], patches.amax(1))
    assert enc.calls == [([0, 2], True, True, False)]  # blocks once each, sorted; under inference mode


def test_blocks_only_skip_the_final_tokens():
    enc = Intermediates()
    out = encode(enc, batch(), ["block.1", "block.1"])
    assert list(out) == ["block.1"] and enc.calls == [([1], False, True, False)]


def test_cls_needs_a_prefix_token():
    with pytest.raises(HarnessError, match="has no CLS token"):
        encode(Intermediates(prefix=0), batch(), ["cls"])


def test_unsupported_names_and_sizes_are_one_line_errors():
    with pytest.raises(HarnessError, match=r"unsupported representation\(s\) block.3; available: .* \(3 blocks\)"):
        encode(Intermediates(), batch(), ["block.3"])
    with pytest.raises(HarnessError, match="multiples of the patch size 4"):
        encode(Intermediates(), batch()[..., :10], ["cls"])


def test_a_missing_block_is_named():
    class Forgetful(Intermediates):
        def forward_intermediates(self, x, indices, final=True):
            tokens, _ = super().forward_intermediates(x, indices, final)
            return tokens, {}

    with pytest.raises(HarnessError, match="forward_intermediates did not return block 1"):
        encode(Forgetful(), batch(), ["cls", "block.1"])


def test_autocast_and_uint8_input():
    enc = Intermediates(precision="bf16")
    x = (torch.rand(2, 3, 8, 8) * 255).to(torch.uint8)
    ex = Executor(enc, "cpu")
    out = ex(x, ["tokens"])
    ref = encode(Intermediates(), x.float() / 255, ["tokens"])["tokens"]  # normalised here: mean 0, std 1
    assert enc.calls[0][3] and out["tokens"].dtype == torch.float32 and ex.forwards == 2
    torch.testing.assert_close(out["tokens"], ref)


class Legacy(Encoder):
    """A plugin written before forward_intermediates: forward(x, reps) only."""

    representations = ("cls", "mean_patch", "tokens")

    def __init__(self, drop: str | None = None):
        super().__init__("legacy", mean=[0.0] * 3, std=[1.0] * 3, batch_size=2, precision="fp32")
        self.drop = drop

    def load(self, device="cpu"):
        self.device = device

    def forward(self, x, reps):
        assert torch.is_inference_mode_enabled()
        pooled = x.mean(dim=(2, 3))
        out = {"cls": pooled, "mean_patch": pooled * 2, "tokens": x.flatten(2).transpose(1, 2)}
        return {r: out[r] for r in reps if r != self.drop}


def test_forward_only_plugins_run_through_the_same_executor():
    x = batch()
    out = encode(Legacy(), x, ["mean_patch", "cls"])
    torch.testing.assert_close(out["mean_patch"], x.mean(dim=(2, 3)) * 2)
    assert list(out) == ["mean_patch", "cls"]
    with pytest.raises(HarnessError, match="did not return representation\\(s\\) cls"):
        encode(Legacy(drop="cls"), x, ["cls"])
    with pytest.raises(HarnessError, match=r"unsupported representation\(s\) block.0"):
        encode(Legacy(), x, ["block.0"])


def test_an_encoder_without_a_forward_is_named():
    class Nothing(Legacy):
        forward = Encoder.forward

    with pytest.raises(HarnessError, match="defines neither forward_intermediates nor forward"):
        encode(Nothing(), batch(), ["cls"])
