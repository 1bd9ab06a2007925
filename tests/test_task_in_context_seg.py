"""in_context_seg (Hummingbird): against a slow explicit reference (loops, float64) on tiny inputs, a case whose
answer is known, cache vs stream, the faiss backend's error, and the augmentation's crop rule."""
import numpy as np
import pytest
from harness.testing import check_resample
import torch
import torch.nn.functional as F
from PIL import Image

from _pair_files import colour_encoder
from golden import ExactPatches, _seg_split
from harness.api import SegSamples
from harness.testing import FakeContext, StubDataset

OPTS = {"input_size": 32, "memory_size": 100, "augmentation_epochs": 2, "k": 5, "batch_size": 4}


def _task(**opts):
    from partbench_plugins.tasks.in_context_seg import InContextSeg

    full = {k: o.default for k, o in InContextSeg.option_schema().items()}
    full.update(opts)
    return InContextSeg("icl", **full)


def _ctx(tmp_path, encoder, train, val, task):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return FakeContext(encoder, StubDataset("seg", {"train": train, "val": val}), out_dir=out, task=task)


def _reference(task, ctx):
    """The protocol written out with loops in float64 on the task's own views and cached features."""
    from partbench_plugins.tasks.hummingbird import crop_label

    o = task.opts
    task.bind(ctx.encoder)
    unit = task.prepare(ctx)
    p, s = ctx.encoder.patch_size, unit.size[0]
    g = s // p
    rep = unit.reps[0]
    train, val = unit.samples["train"], unit.samples["test"]
    C = len(train.classes)
    tv = unit.views["train"]
    ftrain = np.asarray(ctx.features(tv, [rep], unit.transform)[rep], np.float64)
    fval = np.asarray(ctx.features(unit.views["test"], [rep], unit.transform)[rep], np.float64)
    keep = min(g * g, o["memory_size"] // len(tv))
    bank, labels = [], []
    for k in range(len(tv)):
        lab = crop_label(train.mask(int(tv.source[k])), tv.geometry[k], s)
        soft = np.zeros((g * g, C))
        for r in range(g):
            for c in range(g):
                for v in lab[r * p:(r + 1) * p, c * p:(c + 1) * p].ravel():
                    if v != 255:
                        soft[r * g + c, v] += 1.0 / (p * p)
        freq = [sum(soft[j, cls] > 0 for j in range(g * g)) for cls in range(C)]
        rng = np.random.default_rng([o["augmentation_seed"], 0xB1, k])
        nonempty = [j for j in range(g * g) if soft[j].sum() > 0]
        u = rng.random(len(nonempty))
        score = {j: np.inf for j in range(g * g)}
        for n, j in enumerate(nonempty):
            score[j] = sum(freq[cls] for cls in range(C) if soft[j, cls] > 0) * u[n]
        chosen = sorted(sorted(range(g * g), key=lambda j: score[j])[:keep])
        for j in chosen:
            f = ftrain[k, j]
            bank.append(f / np.linalg.norm(f))
            labels.append(soft[j])
    bank, labels = np.asarray(bank), np.asarray(labels)
    inter, union = np.zeros((len(val), C), np.int64), np.zeros((len(val), C), np.int64)
    for i in range(len(val)):
        scores = np.zeros((g * g, C))
        for j in range(g * g):
            q = fval[i, j] / np.linalg.norm(fval[i, j])
            sims = bank @ q
            nn = np.argsort(-sims, kind="stable")[:o["k"]]
            w = np.exp((sims[nn] - sims[nn].max()) / o["beta"])
            scores[j] = (w / w.sum()) @ labels[nn]
        up = F.interpolate(torch.from_numpy(scores.T.reshape(1, C, g, g)), size=(s, s), mode="bilinear",
                           align_corners=False)[0]
        pred = up.argmax(0).numpy()
        mask = np.asarray(Image.fromarray(val.mask(i)).resize((s, s), Image.NEAREST))
        for cls in range(C):
            t, pr = (mask == cls), (pred == cls) & (mask != 255)
            inter[i, cls] = np.sum(t & pr)
            union[i, cls] = np.sum(t | pr)
    return inter, union


def test_matches_an_explicit_reference_on_tiny_inputs(tmp_path):
    train, val = _seg_split(tmp_path / "train", 5, 0), _seg_split(tmp_path / "val", 3, 1)
    task = _task(**OPTS)
    ctx = _ctx(tmp_path, ExactPatches(8), train, val, task)
    res = task.run(ctx)
    inter, union = _reference(task, ctx)
    assert np.array_equal(res["per_item"]["intersection"], inter)
    assert np.array_equal(res["per_item"]["union"], union)
    tot_i, tot_u = inter.sum(0), union.sum(0)
    want = 100 * np.mean([a / b for a, b in zip(tot_i, tot_u) if b > 0])
    assert res["metrics"]["mIoU"] == pytest.approx(want, abs=1e-4)
    assert res["details"]["memory_bank"]["patches"] == 10 * (100 // 10)  # fewer than the 16 patches of a view
    check_resample(task, res, metrics=["mIoU", "aAcc"])  # the identity resample gives the reported numbers
    # a resample (image 0 twice, image 2 once) sums those images' counts before dividing
    got = task.resample(res["per_item"], np.array([[2, 0, 1]], np.int32))
    ti, tu = 2 * inter[0] + inter[2], 2 * union[0] + union[2]
    assert got["mIoU"][0] == pytest.approx(100 * np.mean([a / b for a, b in zip(ti, tu) if b > 0]), abs=1e-4)
    assert 0 < res["metrics"]["mIoU"] < 100  # not a degenerate case


def _uniform_split(root, colours, n_per_colour):
    """Images each filled with one palette colour = one class, with an ignored (background) band."""
    root.mkdir(parents=True)
    (root / "img").mkdir()
    (root / "ann").mkdir()
    keys = []
    for c, rgb in enumerate(colours):
        for i in range(n_per_colour):
            key = f"{c}_{i}"
            img = np.zeros((40, 48, 3), np.uint8)
            img[:] = rgb
            lab = np.full((40, 48), c + 1, np.uint8)
            lab[:, :5 + 3 * i] = 0  # reduce_zero_label: ignored
            Image.fromarray(img).save(root / "img" / f"{key}.png")
            Image.fromarray(lab, mode="L").save(root / "ann" / f"{key}.png")
            keys.append(key)
    return SegSamples(keys, ["red", "blue"], {}, [str(root / "img" / f"{k}.png") for k in keys],
                      [str(root / "ann" / f"{k}.png") for k in keys])


@pytest.mark.parametrize("match", ["none", "hungarian"])
def test_known_answer_uniform_classes_are_segmented_perfectly(tmp_path, match):
    colours = [(230, 25, 25), (25, 25, 230)]
    train = _uniform_split(tmp_path / "train", colours, 3)
    val = _uniform_split(tmp_path / "val", colours, 2)
    task = _task(**{**OPTS, "jitter": False, "match": match})
    res = task.run(_ctx(tmp_path, colour_encoder(8), train, val, task))
    assert res["metrics"] == {"mIoU": 100.0, "aAcc": 100.0}
    ignored = sum(40 * (5 + 3 * i) for i in range(2)) * 2
    labelled = 4 * 32 * 32 - sum(round(32 * (5 + 3 * i) / 48) * 32 for i in range(2)) * 2
    assert res["per_item"]["union"].sum() == labelled and ignored > 0


def test_stream_and_cache_give_the_same_result(tmp_path):
    train, val = _seg_split(tmp_path / "train", 4, 0), _seg_split(tmp_path / "val", 2, 1)
    out = {}
    for mode in ("cache", "stream"):
        task = _task(**OPTS, mode=mode)
        (tmp_path / mode).mkdir()
        res = task.run(_ctx(tmp_path / mode, ExactPatches(8), train, val, task))
        out[mode] = res
    assert out["cache"]["metrics"] == out["stream"]["metrics"]
    assert np.array_equal(out["cache"]["per_item"]["intersection"], out["stream"]["per_item"]["intersection"])


def test_faiss_backend_is_refused_clearly_or_agrees_with_torch():
    from partbench_plugins.tasks.knn import faiss_topk, topk_cosine

    task = _task(knn_backend="faiss")
    enc = ExactPatches(8)
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"knn_backend 'faiss' needs the faiss package: pip install 'partbench\[faiss\]'"):
            task.check(enc, StubDataset("seg", {"train": None, "val": None}))
        return
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(50, 8, generator=g), torch.randn(300, 8, generator=g)
    assert torch.equal(faiss_topk(q, b, 4)[1], topk_cosine(q, b, 4)[1])


def test_random_resized_crop_follows_torchvision_bounds():
    from partbench_plugins.tasks.hummingbird import augmentation, random_resized_crop

    rng = np.random.default_rng(0)
    for w, h in ((40, 30), (300, 40), (17, 200)):
        for _ in range(50):
            x0, y0, cw, ch = random_resized_crop(rng, w, h)
            assert 0 <= x0 and 0 <= y0 and 0 < cw and 0 < ch and x0 + cw <= w and y0 + ch <= h
    g = augmentation(np.random.default_rng(1), 40, 30, jitter=False)
    assert g[4] == 0.0 and sorted(g[9:13]) == [0, 1, 2, 3]
