"""The seven paper encoders, each from a tiny checkpoint written in its method's *official* file layout.

For every method: (a) every key of the file is consumed or deliberately ignored (and reported),
(b) cls / mean_patch / tokens / block.i equal an independent plain-torch reference on the same weights,
(c) projection heads equal an independent computation, (d) a truncated file and another method's file
give a one-line error naming the file and what was expected; plus position-embedding interpolation at a
non-native input size (320 for a 224 checkpoint).
"""
from __future__ import annotations

import re

import pytest
import torch

from harness.execution import encode

from harness import HarnessError
from harness.plugins import Plugins
from partbench_plugins.encoders.beit import BEiT
from partbench_plugins.encoders.cae import CAE
from partbench_plugins.encoders.deit import DeiT
from partbench_plugins.encoders.dino import DINO
from partbench_plugins.encoders.ibot import IBOT
from partbench_plugins.encoders.mae import MAE
from partbench_plugins.encoders.mocov3 import MoCoV3

from _paper_files import D, DEPTH, GRID, HEADS, W, make, rel_index
from _vit_reference import dino_head, gelu, vit_forward

ATOL = 1e-5


CLASSES = {"deit": DeiT, "mocov3": MoCoV3, "dino": DINO, "ibot": IBOT, "beit": BEiT, "mae": MAE, "cae": CAE}
METHOD_NAME = {"deit": "DeiT/supervised ViT", "mocov3": "MoCo v3", "dino": "DINO", "ibot": "iBOT",
               "beit": "BEiT", "mae": "MAE", "cae": "CAE"}

# what each official file carries besides what is read (reported in load_report["ignored"])
IGNORED = {
    "deit": {"head.*": 2},
    "mocov3": {"module.momentum_encoder.*": None, "module.predictor.*": None, "checkpoint['epoch']": 1,
               "checkpoint['arch']": 1, "checkpoint['optimizer']": 1, "checkpoint['scaler']": 1},
    "dino": {"checkpoint['student']": 1, "checkpoint['optimizer']": 1, "checkpoint['epoch']": 1,
             "checkpoint['args']": 1, "checkpoint['fp16_scaler']": 1, "checkpoint['dino_loss']": 1},
    "ibot": {"checkpoint['student']": 1, "checkpoint['optimizer']": 1, "checkpoint['epoch']": 1,
             "checkpoint['args']": 1, "checkpoint['fp16_scaler']": 1, "checkpoint['ibot_loss']": 1,
             "head.last_layer2.weight_g": 1, "head.last_layer2.weight_v": 1},
    "beit": {"mask_token": 1, "lm_head.*": 2, "rel_pos_bias.*": 1, "checkpoint['optimizer']": 1,
             "checkpoint['epoch']": 1, "checkpoint['args']": 1, "checkpoint['scaler']": 1},
    "mae": {},
    "cae": {"alignment_encoder.*": None, "rd_pos_embed": 1, "regresser.*": 2, "mask_token": 1, "decoder.*": 3,
            "checkpoint['optimizer']": 1, "checkpoint['epoch']": 1, "checkpoint['args']": 1,
            "checkpoint['scaler']": 1},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One official-layout file per method (and variants), written once for the module."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, (m, v) in enumerate([(m, "") for m in CLASSES] + [("dino", "backbone"), ("ibot", "backbone"),
                                                              ("deit", "google_vit"), ("mae", "full")]):
        path = root / f"{m}{'_' + v if v else ''}.pth"
        obj = make(m, W(100 + i), v)
        torch.save(obj, path)
        out[(m, v)] = (path, obj)
    return out


def backbone_sd(method, obj, variant=""):
    """The backbone weights the reference computation uses, taken from the file object by hand."""
    if method == "deit":
        sd = obj if variant == "google_vit" else obj["model"]
        return {k: v for k, v in sd.items() if not k.startswith("head.")}
    if method == "mocov3":
        return {k[len("module.base_encoder."):]: v for k, v in obj["state_dict"].items()
                if k.startswith("module.base_encoder.") and not k.startswith("module.base_encoder.head.")}
    if method in ("dino", "ibot"):
        if variant == "backbone":
            return obj["state_dict"] if method == "ibot" else obj
        return {k[len("backbone."):]: v for k, v in obj["teacher"].items() if k.startswith("backbone.")}
    if method == "beit":
        return {k: v for k, v in obj["model"].items() if not k.startswith(("mask_token", "lm_head."))}
    if method == "mae":
        return {k: v for k, v in obj["model"].items() if not k.startswith(("decoder", "mask_token"))}
    if method == "cae":
        return {k[len("encoder."):]: v for k, v in obj["model"].items() if k.startswith("encoder.")}


def beit_bias(sd, g=GRID):
    table = sd["rel_pos_bias.relative_position_bias_table"]
    idx = rel_index(g)
    return lambda gh, gw: table[idx.reshape(-1)].reshape(g * g + 1, g * g + 1, -1).permute(2, 0, 1)


# how each method's own code resamples the position table (DINO and iBOT: interpolate_pos_encoding's
# scale_factor=(g+0.1)/14; the others resample to the target size)
POS_RULE = {"dino": "dino", "ibot": "dino"}


def reference(method, sd, x, blocks=(0, 1)):
    bias = beit_bias(sd) if method == "beit" else None
    return vit_forward(sd, x, heads=HEADS, eps=1e-6, rel_bias=bias, blocks=blocks,
                       pos_rule=POS_RULE.get(method, "size"))


def encoder(method, path, **opts):
    opts.setdefault("num_heads", HEADS)
    return CLASSES[method](method, checkpoint=str(path), **opts)


REPS = ["cls", "mean_patch", "tokens", "block.0", "block.1"]


def check_reps(out, tokens, blocks):
    torch.testing.assert_close(out["tokens"], tokens, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(out["cls"], tokens[:, 0], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(out["mean_patch"], tokens[:, 1:].mean(1), atol=ATOL, rtol=ATOL)
    for i in (0, 1):
        torch.testing.assert_close(out[f"block.{i}"], blocks[i], atol=ATOL, rtol=ATOL)


# ------------------------------------------------------------------------------------------------
# (a) + (b): official layout loads strictly and matches the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CLASSES))
def test_official_layout_matches_reference(method, files):
    path, obj = files[(method, "")]
    enc = encoder(method, path)
    enc.load("cpu")
    rep = enc.load_report
    assert rep["missing"] == [] and rep["unexpected"] == [], rep
    for key, count in IGNORED[method].items():
        assert key in rep["ignored"], (key, rep["ignored"])
        if count is not None:
            assert rep["ignored"][key] == count, (key, rep["ignored"])
    assert set(rep["ignored"]) == set(IGNORED[method]), rep["ignored"]
    # every backbone tensor of the file is in the model, unchanged
    sd = backbone_sd(method, obj)
    model_sd = enc.backbone.model.state_dict()
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue
        assert torch.equal(model_sd[k], v), k
    assert enc.num_blocks == DEPTH and enc.arch.grid == GRID and enc.arch.embed_dim == D

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = encode(enc, x, REPS)
    tokens, blocks = reference(method, sd, x)
    check_reps(out, tokens, blocks)
    assert "checkpoint_sha256" in enc.identity() and len(enc.identity()["checkpoint_sha256"]) == 64


@pytest.mark.parametrize("method,variant", [("dino", "backbone"), ("ibot", "backbone"), ("deit", "google_vit"),
                                            ("mae", "full")])
def test_other_official_files(method, variant, files):
    path, obj = files[(method, variant)]
    opts = {"variant": "google_vit"} if variant == "google_vit" else {}
    enc = encoder(method, path, **opts)
    enc.load("cpu")
    assert enc.load_report["missing"] == [] and enc.load_report["unexpected"] == []
    if variant == "full":
        assert enc.load_report["ignored"]["decoder_embed.*"] == 2
        assert enc.load_report["ignored"]["mask_token"] == 1
    x = torch.randn(1, 3, 224, 224)
    tokens, blocks = reference(method, backbone_sd(method, obj, variant), x)
    check_reps(encode(enc, x, REPS), tokens, blocks)
    if variant == "backbone":
        assert not enc.supports("projected")
        with pytest.raises(HarnessError, match="projected"):
            encode(enc, x, ["projected"])


# ------------------------------------------------------------------------------------------------
# (c) projection heads
# ------------------------------------------------------------------------------------------------
def bn_eval(x, sd, pre, eps=1e-5):
    y = (x - sd[pre + "running_mean"]) / torch.sqrt(sd[pre + "running_var"] + eps)
    if pre + "weight" in sd:
        y = y * sd[pre + "weight"] + sd[pre + "bias"]
    return y


def moco_mlp_ref(sd, prefix, x, n_layers):
    for li in range(n_layers):
        x = x @ sd[f"{prefix}{3 * li}.weight"].T
        x = bn_eval(x, sd, f"{prefix}{3 * li + 1}.")
        if li < n_layers - 1:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("projection", ["projector", "predictor"])
def test_mocov3_projection(projection, files):
    path, obj = files[("mocov3", "")]
    enc = encoder("mocov3", path, projection=projection)
    x = torch.randn(2, 3, 224, 224)
    out = encode(enc, x, ["projected", "cls"])
    sd = obj["state_dict"]
    ref = moco_mlp_ref(sd, "module.base_encoder.head.", out["cls"], 3)
    if projection == "predictor":
        ref = moco_mlp_ref(sd, "module.predictor.", ref, 2)
        assert "module.predictor.*" not in enc.load_report["ignored"]
    assert out["projected"].shape == (2, 32)
    torch.testing.assert_close(out["projected"], ref, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("method", ["dino", "ibot"])
@pytest.mark.parametrize("network", ["teacher", "student"])
def test_dino_ibot_projection(method, network, files):
    path, obj = files[(method, "")]
    enc = encoder(method, path, network=network)
    x = torch.randn(2, 3, 224, 224)
    out = encode(enc, x, ["projected", "cls", "tokens"])
    prefix = "" if network == "teacher" else "module."
    net = obj[network]
    bb = {k[len(prefix + "backbone."):]: v for k, v in net.items() if k.startswith(prefix + "backbone.")}
    bb.pop("masked_embed", None)
    head = {k[len(prefix + "head."):]: v for k, v in net.items() if k.startswith(prefix + "head.")}
    tokens, _ = vit_forward(bb, x, heads=HEADS)
    torch.testing.assert_close(out["tokens"], tokens, atol=ATOL, rtol=ATOL)
    full = dino_head(head, tokens[:, 0])  # [2, 96]: the head's own output
    # 'projected' is its exact 16-d (bottleneck) equivalent: the same Gram matrix of dot products
    assert out["projected"].shape == (2, 16)
    torch.testing.assert_close(out["projected"] @ out["projected"].T, full @ full.T, atol=1e-4, rtol=1e-4)
    full_enc = encoder(method, path, network=network, full_projection=True)
    torch.testing.assert_close(encode(full_enc, x, ["projected"])["projected"], full, atol=ATOL, rtol=ATOL)
    if network == "student" and method == "ibot":
        assert enc.load_report["ignored"]["backbone.masked_embed"] == 1
    assert enc.load_report["missing"] == [] and enc.load_report["unexpected"] == []


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_compact_projection_preserves_cosine_similarities_dot_products_and_distances(method, files):
    """The stored bottleneck-width 'projected' (L^T z, L L^T = W^T W) against the full head output W z on
    many inputs: every pairwise cosine similarity, dot product and Euclidean distance is the same."""
    path, _ = files[(method, "")]
    compact = encode(encoder(method, path), torch.randn(12, 3, 224, 224, generator=torch.Generator().manual_seed(0)),
                     ["projected"])["projected"].double()
    full = encode(encoder(method, path, full_projection=True),
                  torch.randn(12, 3, 224, 224, generator=torch.Generator().manual_seed(0)), ["projected"])["projected"].double()
    assert compact.shape[1] < full.shape[1]
    cos = lambda a: torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(a, dim=1).T  # noqa: E731
    torch.testing.assert_close(cos(compact), cos(full), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compact @ compact.T, full @ full.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cdist(compact, compact), torch.cdist(full, full), atol=1e-3, rtol=1e-4)


def test_a_rank_deficient_head_is_a_clear_error(tmp_path):
    from harness import HarnessError
    from partbench_plugins.encoders.dino_family import DINOHead, ExactLowRankHead

    head = DINOHead([8, 8, 4], 10)
    with torch.no_grad():
        head.last_layer.weight_v[:, 3] = head.last_layer.weight_v[:, 2]  # two equal columns: rank 3 < 4
    with pytest.raises(HarnessError, match=r"W\^T W is not positive definite \(rank 3 of 4\); set full_projection"):
        ExactLowRankHead(head, "x.pth")


def test_dino_head_uses_weight_norm_not_plain_linear(files):
    """W = g * v / ||v||: a plain Linear(v) (the paper code's head class) would give a different output."""
    path, obj = files[("dino", "")]
    enc = encoder("dino", path, full_projection=True)
    x = torch.randn(1, 3, 224, 224)
    out = encode(enc, x, ["projected", "cls"])
    head = {k[5:]: v for k, v in obj["teacher"].items() if k.startswith("head.")}
    h = out["cls"]
    for i in (0, 2, 4):
        h = h @ head[f"mlp.{i}.weight"].T + head[f"mlp.{i}.bias"]
        h = gelu(h) if i < 4 else h
    plain = torch.nn.functional.normalize(h, dim=-1) @ head["last_layer.weight_v"].T
    assert not torch.allclose(out["projected"], plain, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# position embedding / relative position interpolation at a non-native size
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(320, 320), (512, 512), (320, 256), (256, 512)])
@pytest.mark.parametrize("method", ["dino", "ibot", "mocov3", "mae", "cae", "deit"])
def test_pos_embed_resampled_as_each_methods_own_code(method, size, files):
    """At every non-native size (segmentation crops are 320, 480, 512, and non-square windows occur) the
    position table is resampled by the method's own rule, checked against explicit bicubic weights."""
    path, obj = files[(method, "")]
    enc = encoder(method, path)
    x = torch.randn(1, 3, *size)
    out = encode(enc, x, REPS)
    assert out["tokens"].shape == (1, 1 + (size[0] // 16) * (size[1] // 16), D)
    tokens, blocks = reference(method, backbone_sd(method, obj), x)
    check_reps(out, tokens, blocks)


def test_the_dino_rule_differs_from_resizing():
    """The +0.1 scale rule is not the size rule: a test comparing them could not pass by accident."""
    from _vit_reference import interp_pos

    pos = torch.randn(1, 1 + 14 * 14, 8, dtype=torch.float64)
    a, b = interp_pos(pos, 20, 20, rule="dino"), interp_pos(pos, 20, 20, rule="size")
    assert (a - b).abs().max() > 1e-2
    assert torch.equal(interp_pos(pos, 14, 14, rule="dino"), pos)


def test_beit_rel_pos_table_at_320(tmp_path):
    """A table that is constant per head over patch offsets stays constant when resampled, so the
    reference bias at 20x20 is known exactly; the 3 CLS entries must be carried over."""
    obj = make("beit", W(7))
    sd = obj["model"]
    n_rel = (2 * GRID - 1) ** 2 + 3
    table = torch.zeros(n_rel, HEADS)
    table[:-3] = torch.tensor([0.7, -0.4])
    table[-3:] = torch.tensor([[0.3, 0.1], [-0.2, 0.5], [0.9, -0.6]])
    sd["rel_pos_bias.relative_position_bias_table"] = table
    path = tmp_path / "beit.pth"
    torch.save(obj, path)
    enc = encoder("beit", path)
    g = 20
    x = torch.randn(1, 3, 16 * g, 16 * g)
    out = encode(enc, x, ["tokens"])
    n = g * g + 1
    bias = torch.empty(HEADS, n, n)
    bias[:] = table[0][:, None, None]
    bias[:, 0, :] = table[-3][:, None]  # cls -> patch
    bias[:, :, 0] = table[-2][:, None]  # patch -> cls
    bias[:, 0, 0] = table[-1]
    tokens, _ = vit_forward(sd, x, heads=HEADS, rel_bias=lambda gh, gw: bias)
    torch.testing.assert_close(out["tokens"], tokens, atol=ATOL, rtol=ATOL)


def test_beit_rel_pos_resample_keeps_source_offsets():
    """The geometric resampling places source offsets 0, +-1 at 0, +-1: those values are kept exactly."""
    from partbench_plugins.encoders.vit_architecture import resize_rel_pos_table

    g, src = 4, 7
    table = torch.randn(src * src + 3, 2, generator=torch.Generator().manual_seed(0))
    same = resize_rel_pos_table(table, g, (g, g))
    torch.testing.assert_close(same, table)
    big = resize_rel_pos_table(table, g, (8, 8))
    dst = 15
    assert big.shape == (dst * dst + 3, 2)
    body, new = table[:-3].reshape(src, src, 2), big[:-3].reshape(dst, dst, 2)
    c, C = src // 2, dst // 2
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            torch.testing.assert_close(new[C + dy, C + dx], body[c + dy, c + dx], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(big[-3:], table[-3:])


# ------------------------------------------------------------------------------------------------
# (d) bad files give one clear line
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(CLASSES))
def test_truncated_checkpoint(method, files, tmp_path):
    path, _ = files[(method, "")]
    data = path.read_bytes()
    bad = tmp_path / f"{method}_truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(HarnessError) as err:
        encoder(method, bad).load("cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "not a readable PyTorch checkpoint" in msg
    assert "expected" in msg


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    with pytest.raises(HarnessError, match=r"notes\.txt: not a .*PyTorch checkpoint.*expected the MAE file"):
        encoder("mae", bad).load("cpu")


# Every pair (method, another method's official file) must be refused with the method's name.
OTHERS = [(m, o) for m in CLASSES for o in CLASSES if o != m]


@pytest.mark.parametrize("method,other", OTHERS)
def test_other_methods_checkpoint_is_refused(method, other, files):
    path, _ = files[(other, "")]
    with pytest.raises(HarnessError) as err:
        encoder(method, path).load("cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert re.search(f"not an? {re.escape(METHOD_NAME[method])} checkpoint", msg), msg


def test_wrong_backbone_only_files(files):
    dino_bb, _ = files[("dino", "backbone")]
    with pytest.raises(HarnessError, match="network: student needs the full checkpoint"):
        encoder("dino", dino_bb, network="student").load("cpu")
    with pytest.raises(HarnessError, match="not an iBOT checkpoint"):
        encoder("ibot", dino_bb).load("cpu")
    google, _ = files[("deit", "google_vit")]
    with pytest.raises(HarnessError, match="variant: google_vit"):
        encoder("deit", google).load("cpu")


# ------------------------------------------------------------------------------------------------
# strictness, weights_only, misc
# ------------------------------------------------------------------------------------------------
def test_strict_lists_keys_and_non_strict_reports_them(tmp_path):
    obj = make("mae", W(3))
    del obj["model"]["blocks.1.mlp.fc2.bias"]
    obj["model"]["blocks.0.extra_scale"] = torch.ones(D)
    path = tmp_path / "mae_broken.pth"
    torch.save(obj, path)
    with pytest.raises(HarnessError) as err:
        encoder("mae", path).load("cpu")
    msg = str(err.value)
    assert "missing keys: blocks.1.mlp.fc2.bias" in msg and "unexpected keys: blocks.0.extra_scale" in msg
    assert "strict: false" in msg and "\n" not in msg
    enc = encoder("mae", path, strict=False)
    enc.load("cpu")
    assert enc.load_report["missing"] == ["blocks.1.mlp.fc2.bias"]
    assert enc.load_report["unexpected"] == ["blocks.0.extra_scale"]
    assert encode(enc, torch.randn(1, 3, 224, 224), ["cls"])["cls"].shape == (1, D)


class Opaque:
    """An arbitrary pickled object: refused by weights_only=True."""

    def __init__(self):
        self.value = 3


def test_weights_only(tmp_path):
    obj = make("mae", W(4))
    obj["extra"] = Opaque()
    path = tmp_path / "mae_pickle.pth"
    torch.save(obj, path)
    with pytest.raises(HarnessError, match="weights_only: false"):
        encoder("mae", path).load("cpu")
    enc = encoder("mae", path, weights_only=False)
    enc.load("cpu")
    assert enc.load_report["ignored"] == {"checkpoint['extra']": 1}


def test_num_heads_matters_and_is_checked(files):
    path, obj = files[("mae", "")]
    with pytest.raises(HarnessError, match="not divisible by num_heads"):
        encoder("mae", path, num_heads=3).load("cpu")
    # BEiT: the heads are visible in the relative position table
    bpath, _ = files[("beit", "")]
    with pytest.raises(HarnessError, match="relative position table has 2 heads"):
        encoder("beit", bpath, num_heads=4).load("cpu")
    assert CLASSES["beit"]("b", checkpoint=str(bpath)).supports("block.1")


def test_cae_paper_ln_eps(files):
    path, obj = files[("cae", "")]
    x = torch.randn(1, 3, 224, 224)
    out = encode(encoder("cae", path, ln_eps=1e-5), x, ["cls"])
    sd = backbone_sd("cae", obj)
    tokens, _ = vit_forward(sd, x, heads=HEADS, eps=1e-5)
    torch.testing.assert_close(out["cls"], tokens[:, 0], atol=ATOL, rtol=ATOL)


def test_validation_time_checks(files):
    path, _ = files[("dino", "")]
    enc = encoder("dino", path)
    assert enc.supports("projected") and enc.supports("block.1") and not enc.supports("block.2")
    assert enc.backbone is None  # supports() only peeks at the file
    mae_path, _ = files[("mae", "")]
    assert not encoder("mae", mae_path).supports("projected")


def test_all_registered():
    plugins = Plugins(allow=list(CLASSES) + ["baselines"])
    for name, cls in CLASSES.items():
        assert plugins.get("encoder", name).cls is cls


class _TouchOnUnpickle:
    """Unpickling this runs code (creates a file): what weights_only=False files can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_validation_never_unpickles_a_weights_only_false_file(tmp_path, method):
    import warnings

    marker = tmp_path / "code_ran"
    obj = make(method, W(5))
    obj["extra"] = _TouchOnUnpickle(str(marker))
    path = tmp_path / "needs_pickle.pth"
    torch.save(obj, path)
    enc = encoder(method, path, weights_only=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc.validate()
        assert enc.supports("cls") and enc.supports("block.1")
    assert not marker.exists()  # validation ran nothing from the file ...
    (w,) = [str(c.message) for c in caught]  # ... and said so, once
    assert "not opened during validation" in w and "will unpickle it" in w and str(path) in w
    enc.load("cpu")  # the run unpickles (the user opted in)
    assert marker.exists() and enc.load_report["missing"] == []
    # a file the safe loader reads is read safely even with weights_only: false
    safe = tmp_path / "plain.pth"
    torch.save(make(method, W(5)), safe)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder(method, safe, weights_only=False).validate()
