"""linear_probe / attentive_probe: learning, the attentive block, cached == re-encoded, the three
reported accuracies, the lr sweep, determinism, and validation-time errors."""
import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harness.testing import check_resample
from harness import Encoder, Samples, SpecError
from harness import transforms as T
from harness.spec import validate_options
from harness.testing import FakeContext
from partbench_plugins.tasks._probe import batches, cosine_lr, stratified_holdout
from partbench_plugins.tasks.attentive_probe import AttentiveHead, AttentiveProbe
from partbench_plugins.tasks.linear_probe import LinearProbe

from conftest import TOY_PLUGINS
from oracles import check_probe_counts


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP
    spin-waiting can slow them down 50x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# A minimal stand-in for the runner's Context: features()/samples()/images()/progress()/device/seed


class ArraySamples(Samples):
    pass


class ColourSamples(Samples):
    """Noisy solid-colour 20x20 images; label = colour."""

    PALETTE = [(200, 30, 30), (30, 180, 40), (30, 40, 200), (200, 200, 40)]

    def __init__(self, n, seed):
        labels = [i % 4 for i in range(n)]
        super().__init__([f"{seed}/{i}" for i in range(n)], labels, ["r", "g", "b", "y"])
        self.seed = seed

    def image(self, i):
        rng = np.random.default_rng(self.seed * 1000 + i)
        base = np.array(self.PALETTE[self.labels[i]], dtype=np.float64)
        return Image.fromarray(np.clip(base + rng.normal(0, 60, (20, 20, 3)), 0, 255).astype(np.uint8))


class ColourEncoder(Encoder):
    """Frozen random projection of 32x32 patch colour means: cls, mean_patch, tokens [B,1+49,24]."""

    representations = ("cls", "mean_patch", "tokens")
    embed_dim = 24

    def load(self, device="cpu"):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3, 24, generator=g)
        self.b = torch.randn(24, generator=g) * 0.1
        self.loads = getattr(self, "loads", 0) + 1

    def forward(self, x, reps):
        p = F.avg_pool2d(x, 32).flatten(2).transpose(1, 2)  # [B,49,3]
        tok = torch.tanh(p @ self.w + self.b)
        cls = torch.tanh(p.mean(1) @ self.w)
        out = {"cls": cls, "mean_patch": tok.mean(1), "tokens": torch.cat([cls[:, None], tok], 1)}
        return {k: out[k] for k in reps}


def make_encoder():
    enc = ColourEncoder("enc", mean=[0.5] * 3, std=[0.25] * 3, batch_size=16, precision="fp32")
    enc.load("cpu")
    return enc


def FakeCtx(tmp_path, samples, encoder=None, arrays=None, seed=0):
    """The shared FakeContext: real executor and cache over the given splits, or given arrays."""
    return FakeContext(encoder, samples=samples, arrays=arrays, out_dir=tmp_path, seed=seed,
                       cache_dir=tmp_path / "cache")


def task(cls, **opts):
    """A task instance with validated options (as the spec loader builds it)."""
    return cls("probe", **validate_options(cls.option_schema(), opts, "test"))


def gaussian_ctx(tmp_path, n_train=400, n_test=200, d=16, classes=4, sep=3.0, seed=0, shuffle=False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, d)) * sep / math.sqrt(d) * 2

    def split(n):
        y = np.arange(n) % classes
        x = centres[y] + rng.normal(0, 1, (n, d))
        return x.astype(np.float32), y

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    if shuffle:  # labels independent of the features
        ytr, yte = rng.permutation(ytr), rng.permutation(yte)
    names = [f"c{i}" for i in range(classes)]
    samples = {"train": ArraySamples([f"a{i}" for i in range(n_train)], ytr, names),
               "test": ArraySamples([f"b{i}" for i in range(n_test)], yte, names)}
    return FakeCtx(tmp_path, samples, arrays={"train": {"cls": xtr}, "test": {"cls": xte}})


FAST = dict(epochs=8, batch_size=64, eval_batch_size=64)


def separable_ctx(tmp_path, test_label_shift=0, n_train=400, n_test=200, classes=4, d=16):
    """Linearly separable by construction: class k is 4 * e_k plus noise uniform in [-0.5, 0.5] per
    coordinate, so coordinate k is the largest exactly for class k. The test split's labels are the
    class shifted by ``test_label_shift`` (mod classes): with a shift, a probe that learned the train
    split's rule is wrong on every test item."""
    rng = np.random.default_rng(0)

    def split(n, shift):
        y = np.arange(n) % classes
        x = np.zeros((n, d))
        x[np.arange(n), y] = 4.0
        x += rng.uniform(-0.5, 0.5, x.shape)
        return x.astype(np.float32), (y + shift) % classes

    (xtr, ytr), (xte, yte) = split(n_train, 0), split(n_test, test_label_shift)
    names = [f"c{i}" for i in range(classes)]
    samples = {"train": ArraySamples([f"a{i}" for i in range(n_train)], ytr, names),
               "test": ArraySamples([f"b{i}" for i in range(n_test)], yte, names)}
    return FakeCtx(tmp_path, samples, arrays={"train": {"cls": xtr}, "test": {"cls": xte}})


# ---------------------------------------------------------------------------------------------
def test_linear_probe_on_separable_features_is_always_right(tmp_path):
    res = task(LinearProbe, **FAST).run(separable_ctx(tmp_path))
    m = res["metrics"]
    assert m == {"top1_best_epoch": 100.0, "top3_best_epoch": 100.0, "top1_final": 100.0, "top3_final": 100.0,
                 "top1_heldout": 100.0, "top3_heldout": 100.0}
    assert (tmp_path / "curves.csv").is_file() and res["artifacts"] == [str(tmp_path / "curves.csv")]
    json.dumps(res["details"])  # JSON-serialisable


def test_linear_probe_learns_the_train_split_rule_only(tmp_path):
    """Test labels shifted by one class: trained on the train split alone, the probe is wrong on every test
    item at every epoch (seeing test labels, or not training, would get some right)."""
    m = task(LinearProbe, **FAST).run(separable_ctx(tmp_path, test_label_shift=1))["metrics"]
    assert m["top1_final"] == m["top1_heldout"] == m["top1_best_epoch"] == 0.0


def test_attentive_probe_learns_from_tokens(tmp_path):
    samples = {"train": ColourSamples(48, 1), "test": ColourSamples(24, 2)}
    ctx = FakeCtx(tmp_path, samples, encoder=make_encoder())
    t = task(AttentiveProbe, epochs=15, batch_size=16, lr=0.05, num_heads=4, heldout_fraction=0.25)
    res = t.run(ctx)
    check_resample(t, res)
    # four colours far apart next to the noise left after pooling: separable, every test image right
    m = res["metrics"]
    assert m["top1_final"] == m["top1_heldout"] == m["top1_best_epoch"] == 100.0
    assert res["details"]["head"]["bn_at_eval"] == "running statistics"
    assert ctx.forwards == 48 + 24  # every image encoded exactly once


# ---------------------------------------------------------------------------------------------
def _reference_attentive(h, x, bn_mode):
    """The described block with plain torch ops, from the head's parameters."""
    B, N, D = x.shape
    H = h.num_heads
    dh = D // H

    def ln(t, m):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-6) * m.weight + m.bias

    q_in = ln(h.query.expand(B, 1, D), h.norm_q)
    k_in, v_in = ln(x, h.norm_k), ln(x, h.norm_v)
    q = q_in @ h.q.weight.T + h.q_bias  # q bias
    k = k_in @ h.k.weight.T  # no k bias
    v = v_in @ h.v.weight.T + h.v_bias  # v bias
    q = q.reshape(B, 1, H, dh).transpose(1, 2)
    k = k.reshape(B, N, H, dh).transpose(1, 2)
    v = v.reshape(B, N, H, dh).transpose(1, 2)
    a = torch.softmax((q * dh ** -0.5) @ k.transpose(-2, -1), dim=-1)  # [B,H,1,N]: attends to all tokens
    o = (a @ v).transpose(1, 2).reshape(B, D)
    o = o @ h.proj.weight.T + h.proj.bias  # no residual, no MLP
    if bn_mode == "batch":
        mu, var = o.mean(0), o.var(0, unbiased=False)
    else:
        mu, var = h.bn.running_mean, h.bn.running_var
    o = (o - mu) / torch.sqrt(var + 1e-5)  # affine=False
    return o @ h.fc.weight.T + h.fc.bias


def _randomised_head(batch_stats_at_eval=False):
    torch.manual_seed(3)
    h = AttentiveHead(24, 5, num_heads=4, bn_batch_stats_at_eval=batch_stats_at_eval).double()
    with torch.no_grad():
        for p in h.parameters():  # non-trivial values everywhere (LN affine, biases included)
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 and p.numel() == 24 else 0.0))
        h.bn.running_mean.copy_(torch.randn(24, dtype=torch.float64))
        h.bn.running_var.copy_(torch.rand(24, dtype=torch.float64) + 0.5)
    return h


@pytest.mark.parametrize("mode", ["train", "eval_running", "eval_batch"])
def test_attentive_head_forward_and_gradients_equal_plain_block(mode):
    h = _randomised_head(batch_stats_at_eval=(mode == "eval_batch"))
    x = torch.randn(6, 1 + 9, 24, dtype=torch.float64) * 2 + 0.3
    h.train(mode == "train")
    ref = _reference_attentive(h, x, "running" if mode == "eval_running" else "batch")
    out = h(h.shared(x))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # the same gradients for every parameter (the k-side LN bias gets exactly none: softmax is
    # shift-invariant)
    g_out = torch.autograd.grad(out.square().sum(), list(h.parameters()), allow_unused=True)
    g_ref = torch.autograd.grad(_reference_attentive(h, x, "running" if mode == "eval_running" else "batch")
                                .square().sum(), list(h.parameters()), allow_unused=True)
    for (name, _), a, b in zip(h.named_parameters(), g_out, g_ref):
        a = torch.zeros(1, dtype=torch.float64) if a is None else a
        b = torch.zeros(1, dtype=torch.float64) if b is None else b
        torch.testing.assert_close(a.expand_as(b) if a.numel() == 1 else a, b, rtol=1e-8, atol=1e-9, msg=name)


def test_attentive_head_eval_modes_differ_and_train_updates_running_stats():
    h = _randomised_head()
    x = torch.randn(8, 5, 24, dtype=torch.float64)
    before = h.bn.running_mean.clone()
    h.train()
    h(h.shared(x))
    assert not torch.equal(before, h.bn.running_mean)
    h.eval()
    running = h(h.shared(x))
    h.bn_batch_stats_at_eval = True
    batch = h(h.shared(x))
    assert not torch.allclose(running, batch)
    # batch statistics make a sample's output depend on its batch-mates; running statistics do not
    assert not torch.allclose(h(h.shared(x[:4])), batch[:4])
    h.bn_batch_stats_at_eval = False
    torch.testing.assert_close(h(h.shared(x[:4])), running[:4])


def test_attentive_head_init_follows_official():
    torch.manual_seed(0)
    h = AttentiveHead(768, 4)
    assert h.q.bias is None and h.k.bias is None and h.v.bias is None and not hasattr(h, "k_bias")
    assert h.norm_k.eps == 1e-6 and h.bn.affine is False and h.bn.eps == 1e-5
    assert abs(h.fc.weight.std().item() - 0.01) < 1e-3 and h.fc.bias.abs().max() == 0
    # timm/torch trunc_normal_(std=.02) cuts at +-2 absolute, i.e. practically N(0, 0.02)
    assert abs(h.query.std().item() - 0.02) < 2e-3 and abs(h.k.weight.std().item() - 0.02) < 1e-3
    with pytest.raises(Exception, match="does not divide"):
        AttentiveHead(30, 4, num_heads=12)


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,opts", [
    (LinearProbe, dict(epochs=4, batch_size=16, lr=0.5, lrs=[0.05])),
    (AttentiveProbe, dict(epochs=3, batch_size=16, lr=0.05, num_heads=4)),
])
def test_cached_and_reencoded_training_give_the_same_accuracy(tmp_path, cls, opts):
    samples = {"train": ColourSamples(40, 1), "test": ColourSamples(20, 2)}
    cached_ctx = FakeCtx(tmp_path / "a", samples, encoder=make_encoder())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cached = task(cls, heldout_fraction=0.2, **opts).run(cached_ctx)
    re_ctx = FakeCtx(tmp_path / "b", samples, encoder=make_encoder())
    reenc = task(cls, heldout_fraction=0.2, feature_source="reencode", **opts).run(re_ctx)
    assert cached["metrics"] == reenc["metrics"]
    for run in ("per_lr", "heldout_choice", "best_epoch"):
        assert cached["details"][run] == reenc["details"][run]
    # the same computation, not just the same accuracy: every curve (losses to 6 decimals) agrees
    assert (tmp_path / "a/curves.csv").read_text() == (tmp_path / "b/curves.csv").read_text()
    assert cached_ctx.forwards == 60 and cached["details"]["encoder_forwards_by_task"] == 0
    E = opts["epochs"]
    # full run: train+test every epoch; selection run: 32 train + 8 held-out every epoch; +2 width probe
    assert reenc["details"]["encoder_forwards_by_task"] == E * (40 + 20) + E * (32 + 8) + 2
    assert re_ctx.forwards == reenc["details"]["encoder_forwards_by_task"]  # nothing went through the cache


# ---------------------------------------------------------------------------------------------
def test_three_accuracies_are_computed_as_described(tmp_path):
    # test labels are half noise, so the test curve's best epoch is a lucky one
    ctx = gaussian_ctx(tmp_path, n_train=300, n_test=300, sep=1.2, seed=4)
    y = ctx.samples("test").labels.copy()
    noisy = np.random.default_rng(0).random(len(y)) < 0.5
    y[noisy] = np.random.default_rng(1).integers(0, 4, noisy.sum())
    old = ctx.samples("test")
    ctx.dataset.given["test"] = ArraySamples(old.keys, y, old.classes)
    ctx = FakeCtx(tmp_path, ctx.dataset.given, arrays=ctx.arrays)
    t = task(LinearProbe, epochs=12, batch_size=32, eval_batch_size=64, lr=0.02, lrs=[2.0, 0.2])
    res = t.run(ctx)
    # per-item correctness reproduces the three accuracies (the held-out choice's lr is a sweep entry)
    assert set(check_resample(t, res)) >= {"top1_best_epoch", "top1_final", "top1_heldout", "top3_heldout"}
    assert res["per_item"]["top1"].shape == (300, 12)
    m, d = res["metrics"], res["details"]
    rows = list(__import__("csv").DictReader(open(tmp_path / "curves.csv")))

    def curve(run, lr, key):
        return [float(r[key]) for r in rows if r["run"] == run and float(r["base_lr"]) == lr]

    test_p = curve("full", 0.02, "test_top1")  # the protocol lr is `lr`, not a sweep entry
    assert len(test_p) == 12
    assert m["top1_best_epoch"] == pytest.approx(max(test_p), abs=1e-3)
    assert d["best_epoch"]["epoch"] == int(np.argmax(test_p)) + 1
    assert m["top1_final"] == pytest.approx(test_p[-1], abs=1e-3)
    # held-out choice: the best held-out top-1 over every (lr, epoch) of the selection run ...
    held = {lr: curve("selection", lr, "heldout_top1") for lr in (0.02, 2.0, 0.2)}
    best_lr = max(held, key=lambda lr: max(held[lr]))
    best_e = int(np.argmax(held[best_lr]))
    assert d["heldout_choice"]["base_lr"] == best_lr and d["heldout_choice"]["epoch"] == best_e + 1
    # ... reported as the full-train run's test accuracy there
    assert m["top1_heldout"] == pytest.approx(curve("full", best_lr, "test_top1")[best_e], abs=1e-3)
    # the case was built so that the three differ
    assert len({round(m["top1_best_epoch"], 3), round(m["top1_final"], 3), round(m["top1_heldout"], 3)}) == 3

    # the held-out choice never looks at the test split: other test labels, same choice
    ctx2 = gaussian_ctx(tmp_path, n_train=300, n_test=300, sep=1.2, seed=4)
    res2 = t.run(ctx2)
    assert res2["details"]["heldout_choice"] == d["heldout_choice"]
    assert res2["metrics"]["top1_final"] != m["top1_final"]


def test_lr_sweep_heads_equal_separate_runs(tmp_path):
    ctx = gaussian_ctx(tmp_path, sep=1.5)
    sweep = task(LinearProbe, **FAST, lr=0.1, lrs=[1.0], batchnorm=True).run(ctx)
    alone = task(LinearProbe, **FAST, lr=1.0, batchnorm=True).run(ctx)
    assert sweep["details"]["per_lr"]["1.0"] == alone["details"]["per_lr"]["1.0"]
    assert sweep["details"]["protocol"]["init_lrs"] == [0.1 * 64 / 256, 1.0 * 64 / 256]


def test_same_seed_same_result_other_seed_other_split(tmp_path):
    a = task(LinearProbe, **FAST).run(gaussian_ctx(tmp_path, sep=1.0))
    b = task(LinearProbe, **FAST).run(gaussian_ctx(tmp_path, sep=1.0))
    assert a["metrics"] == b["metrics"] and a["details"]["per_lr"] == b["details"]["per_lr"]
    ctx = gaussian_ctx(tmp_path, sep=1.0)
    ctx.seed = 7
    c = task(LinearProbe, **FAST).run(ctx)
    assert c["details"]["per_lr"] != a["details"]["per_lr"]


# ---------------------------------------------------------------------------------------------
def test_schedule_batches_and_holdout_helpers():
    assert cosine_lr(0.4, 0, 90) == 0.4 and cosine_lr(0.4, 45, 90) == pytest.approx(0.2)
    assert cosine_lr(0.4, 89, 90) > 0  # the last epoch's lr is small but not 0 (official)
    b = batches(np.arange(2049)[::-1].copy(), 1024)
    assert [len(x) for x in b] == [1024, 1025]  # a trailing single sample joins the previous batch
    assert all((np.diff(x) > 0).all() for x in b)
    labels = np.repeat([0, 1, 2], [50, 30, 1])
    rest, held = stratified_holdout(labels, 0.1, seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [5, 3, 0]
    assert len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == len(labels)
    assert np.array_equal(held, stratified_holdout(labels, 0.1, seed=0)[1])
    assert not np.array_equal(held, stratified_holdout(labels, 0.1, seed=1)[1])


# ---------------------------------------------------------------------------------------------
# validation-time errors, through the spec loader (which calls Option.check and Task.check)
EXTRA_ENCODERS = '''
from harness import Encoder, hookimpl

class VecOnly(Encoder):
    representations = ("cls",)

class Tokens30(Encoder):
    representations = ("cls", "tokens")
    embed_dim = 30

@hookimpl
def register_encoders(register):
    register("vec_only", VecOnly)
    register("tokens_30", Tokens30)
'''


@pytest.fixture
def plan(tmp_path):
    from harness.plugins import Plugins

    pdir = tmp_path / "plugs"
    pdir.mkdir()
    (pdir / "extra.py").write_text(EXTRA_ENCODERS)
    for f in TOY_PLUGINS.glob("*.py"):
        (pdir / f.name).write_text(f.read_text())
    plugins = Plugins(plugins_dirs=[pdir], allow=["toy", "extra", "linear_probe", "attentive_probe"])

    def build(task_yaml, encoder="toy_stats"):
        from harness.spec import build_plan

        spec = tmp_path / "spec.yaml"
        spec.write_text(textwrap.dedent(f"""
            encoders: {{e: {{plugin: {encoder}}}}}
            datasets: {{d: {{plugin: toy_colours}}}}
            tasks: {{t: {task_yaml}}}
            """))
        return build_plan(spec, plugins)

    return build


@pytest.mark.parametrize("task_yaml,message", [
    ("{plugin: linear_probe, options: {lr: 0}}", "tasks.t.options.lr: must be > 0 (got 0.0)"),
    ("{plugin: linear_probe, options: {lr: -0.1}}", "tasks.t.options.lr: must be > 0"),
    ("{plugin: attentive_probe, options: {lrs: [0.01, 0]}}", "every base learning rate must be > 0"),
    ("{plugin: linear_probe, options: {lrs: []}}", "must be a non-empty list"),
    ("{plugin: linear_probe, options: {representation: patch}}",
     "tasks.t.options.representation: 'patch' is not one of ['cls', 'mean_patch', 'projected', 'pooled']"),
    ("{plugin: linear_probe, options: {representation: projected}}", "has no 'projected' representation"),
    ("{plugin: linear_probe, options: {heldout_fraction: 1.0}}", "must be in [0, 1)"),
    ("{plugin: linear_probe, options: {train_transform: 'crop:3'}}", "unknown transform 'crop:3'"),
    ("{plugin: linear_probe, options: {train_split: training}}", "no split 'training'"),
    ("{plugin: linear_probe, options: {test_split: train}}", "train_split and test_split are both 'train'"),
    ("{plugin: linear_probe, options: {epochs: 0}}", "tasks.t.options.epochs: must be >= 1"),
    ("{plugin: attentive_probe, options: {bn_batch_stats_at_eval: 1}}", "expected true/false"),
])
def test_bad_options_fail_at_validation(plan, task_yaml, message):
    with pytest.raises(SpecError) as err:
        plan(task_yaml)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_incompatible_encoder_fails_at_validation(plan):
    with pytest.raises(SpecError, match="has no 'tokens' representation"):
        plan("{plugin: attentive_probe}", encoder="vec_only")
    with pytest.raises(SpecError, match="num_heads 12 does not divide the encoder's token width 30"):
        plan("{plugin: attentive_probe}", encoder="tokens_30")


def test_test_split_defaults_to_val_without_a_test_split():
    class Folder:
        name, splits = "imagenet", ("train", "val")

    class Parts:
        name, splits = "cub", ("all", "train", "test")

    t = task(LinearProbe)
    assert t.test_split(Folder()) == "val" and t.test_split(Parts()) == "test"
    assert task(LinearProbe, test_split="all").test_split(Folder()) == "all"


def test_good_spec_validates(plan):
    p = plan("{plugin: attentive_probe, options: {lrs: [0.01, 0.1], num_heads: 3, bn_batch_stats_at_eval: true}}")
    assert p.tasks["t"].opts["lrs"] == [0.01, 0.1]


# ---------------------------------------------------------------------------------------------
def test_end_to_end_through_the_runner_on_cub_and_coco_format_parts(tmp_path):
    """The real runner, random_vit and synthetic_parts (CUB and COCO formats); cached == re-encoded
    through the runner too (its encoders return inference-mode tensors)."""
    from harness.plugins import Plugins
    from harness.runner import run_spec

    plugins = Plugins(allow=["baselines", "synthetic", "cub", "coco", "linear_probe", "attentive_probe"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{vit: {{plugin: random_vit, options: {{embed_dim: 48, depth: 1, num_heads: 3}}}}}}
        datasets:
          cub: {{plugin: synthetic_parts, options: {{root: {tmp_path / 'syn'}, num_images: 32, image_size: 128}}}}
          coco: {{plugin: synthetic_parts, options: {{root: {tmp_path / 'syn'}, num_images: 32, image_size: 128,
                                                    format: coco}}}}
        tasks:
          lin: {{plugin: linear_probe, options: {{epochs: 3, batch_size: 8, heldout_fraction: 0.2}}}}
          att: {{plugin: attentive_probe, options: {{epochs: 2, batch_size: 8, num_heads: 4, lrs: [0.1],
                                                   heldout_fraction: 0.2}}}}
          att_re: {{plugin: attentive_probe, options: {{epochs: 2, batch_size: 8, num_heads: 4, lrs: [0.1],
                                                      heldout_fraction: 0.2, feature_source: reencode}}}}
        run: [{{datasets: [cub], tasks: [lin, att, att_re]}}, {{datasets: [coco], tasks: [lin, att]}}]
        """))
    res = {r["unit"]: r for r in run_spec(spec, tmp_path / "out", plugins=plugins)}
    assert all(r["status"] == "ok" for r in res.values()), [r["error"] for r in res.values()]
    for unit in ("lin__cub__vit", "att__cub__vit", "lin__coco__vit", "att__coco__vit"):
        r = res[unit]
        assert r["headline"] == ["top1_best_epoch", "top1_final", "top1_heldout"]
        check_probe_counts(r)
        assert (tmp_path / "out" / r["artifacts"][0]).is_file()
    assert res["lin__cub__vit"]["details"]["num_classes"] == 4 and res["lin__coco__vit"]["details"]["num_classes"] == 3
    assert res["att__cub__vit"]["metrics"] == res["att_re__cub__vit"]["metrics"]
    n = res["att__cub__vit"]["details"]["n"]
    assert res["att_re__cub__vit"]["forwards"] == 2 * (n["train"] + n["test"]) + 2 * (n["selection_train"] +
                                                                                       n["heldout"]) + 2
