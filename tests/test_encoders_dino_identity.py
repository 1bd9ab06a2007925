"""DINO/iBOT features cached before the position-resampling fix (resize-to-size) or with the full
65,536-/8,192-d 'projected' can never be reused: the encoders' identity (part of every cache key) records
the resampling rule and the form of 'projected'."""
from __future__ import annotations

import pytest
import torch

from harness.cache import FeatureCache

from _paper_files import W, make
from test_encoders_checkpoints import encoder


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_cache_keys_differ_from_those_before_the_fixes(method, tmp_path):
    path = tmp_path / f"{method}.pth"
    torch.save(make(method, W(3)), path)
    ident = encoder(method, path).identity()
    assert ident["pos_resample"] == "dino" and ident["options"]["full_projection"] is False
    # what 764f158 (before both fixes) built: plugin, options without full_projection, checkpoint hash
    before = {"plugin": ident["plugin"], "checkpoint_sha256": ident["checkpoint_sha256"],
              "options": {k: v for k, v in ident["options"].items() if k != "full_projection"}}
    cache = FeatureCache(tmp_path / "cache")
    rest = dict(dataset={"plugin": "d"}, split="all", items="x", transform="t", representation="projected",
                precision="fp32")
    keys = {cache.key(encoder=before, **rest), cache.key(encoder=ident, **rest),
            cache.key(encoder=encoder(method, path, full_projection=True).identity(), **rest)}
    assert len(keys) == 3  # old entries, the compact projection and the full one never share an entry
