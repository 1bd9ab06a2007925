"""correspondence: PCK under the three averaging conventions on SPair-layout fixtures whose answer is known by
construction, same-image pairs, the blocked matcher, the pair datasets and their validate-time errors."""
import json
import textwrap

import numpy as np
import pytest
from harness.testing import check_resample
from partbench_plugins.tasks.correspondence_metrics import pck
import torch

from _pair_files import EXPECTED, EXPECTED_VP, PAIRS, colour_encoder, write_spair
from harness import SpecError
from harness.api import KeypointPair, PairSamples
from harness.plugins import Plugins
from harness.spec import build_plan
from harness.testing import FakeContext, StubDataset


def _task(**opts):
    from partbench_plugins.tasks.correspondence import Correspondence

    schema = Correspondence.option_schema()
    full = {k: o.default for k, o in schema.items()}
    full.update(opts)
    return Correspondence("corr", **full)


def _spair(root, **opts):
    from partbench_plugins.datasets.spair import Spair

    full = {k: o.default for k, o in Spair.option_schema().items()}
    full.update(root=str(root), **opts)
    return Spair("spair", **full)


def _run(task, encoder, dataset, tmp_path):
    ctx = FakeContext(encoder, dataset, out_dir=tmp_path / "out", task=task)
    (tmp_path / "out").mkdir(exist_ok=True)
    return task.run(ctx)


@pytest.mark.parametrize("upsample", [1, 4])
def test_spair_fixture_exact_pck_under_every_convention(tmp_path, upsample):
    root = write_spair(tmp_path / "SPair-71k")
    task = _task(input_size=128, upsample=upsample, alpha=[0.1, 0.5], figure_pairs=2)
    res = _run(task, colour_encoder(), _spair(root), tmp_path)
    m = res["metrics"]
    for conv, want in EXPECTED.items():
        assert m[f"PCK@0.1_{conv}"] == pytest.approx(want, abs=1e-4), conv
        assert m[f"PCK@0.5_{conv}"] == 100.0  # every lie (30 px) is within 0.5 x 100
    for vp, want in EXPECTED_VP.items():
        assert m[f"PCK@0.1_category_vp{vp}"] == pytest.approx(want, abs=1e-4)
        assert res["details"]["per_alpha"]["0.1"]["by_viewpoint"][str(vp)]["point"] == pytest.approx(want, abs=1e-4)
    assert task.headline[0] == "PCK@0.1_category" and res["details"]["headline"]["convention"] == "category"
    assert res["details"]["per_alpha"]["0.1"]["per_category"]["cat"]["PCK"] == pytest.approx(500 / 6)
    per = res["per_item"]
    assert per["points"].tolist() == [4, 2, 5] and per["correct@0.1"].tolist() == [3, 2, 2]
    assert per["viewpoint"].tolist() == [0, 1, 2]
    assert (tmp_path / "out" / "correspondence.png").stat().st_size > 1000
    # the bootstrap statistic reproduces every convention's number on the identity resample ...
    check_resample(task, res, metrics=[k for k in m if "_vp" not in k])
    # ... and on an explicit resample (pair 0 twice, pair 2 once) equals pck on the materialised pairs
    counts = np.array([[2, 0, 1]], np.int32)
    got = task.resample(per, counts)
    idx = [0, 0, 2]
    want = pck(per["points"][idx], per["correct@0.1"][idx], per["category"][idx])
    for conv, v in want.items():
        assert got[f"PCK@0.1_{conv}"][0] == round(v, 4), conv


@pytest.mark.parametrize("convention", ["point", "image"])
def test_the_headline_names_its_convention(convention):
    task = _task(convention=convention, alpha=[0.05, 0.1])
    assert task.headline[0] == f"PCK@0.05_{convention}" and len(task.headline) == 3


def _noise_pairs(tmp_path, sizes):
    """PairSamples of noise images, each paired with itself, keypoints on a grid over the whole image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, pairs = [], []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(p)
        paths.append(p)
        xs, ys = np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 7))
        kps = np.stack([xs.ravel(), ys.ravel()], 1)
        pairs.append(KeypointPair(i, i, kps, kps, (0.0, 0.0, float(w), float(h)), i % 2, name=f"self{i}"))

    class Noise(PairSamples):
        def image(self, i):
            with Image.open(paths[i]) as im:
                return im.convert("RGB")

    return Noise([p.name for p in paths], [i % 2 for i in range(len(sizes))], ["a", "b"], {}, pairs)


@pytest.mark.parametrize("encoder,upsample", [("random_vit", 1), ("random_vit", 2), ("pixels", 1)])
def test_same_image_pairs_score_100_above_half_a_cell_diagonal(tmp_path, encoder, upsample):
    from harness.plugins import Plugins

    plugins = Plugins()
    opts = {"random_vit": {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 16, "img_size": 64},
            "pixels": {"patch_size": 16}}[encoder]
    from harness.spec import validate_options

    cls = plugins.get("encoder", encoder).cls
    enc = cls(encoder, **validate_options(cls.option_schema(), opts, "enc"))
    enc.plugin_name = encoder
    enc.validate()
    sizes = [(100, 60), (70, 90), (64, 64)]
    samples = _noise_pairs(tmp_path, sizes)
    # input 64: a cell is 16 / upsample input pixels = (16 / upsample) * max(w, h) / 64 image pixels; the
    # threshold alpha * max(w, h) (box = image) exceeds half its diagonal when alpha > sqrt(2) / 2 * 16 / 64 / f
    alpha = np.sqrt(2) / 2 * 16 / 64 / upsample * 1.01
    task = _task(input_size=64, upsample=upsample, alpha=[alpha], figure_pairs=0)
    res = _run(task, enc, StubDataset("noise", {"test": samples}), tmp_path)
    for conv in ("point", "image", "category"):
        assert res["metrics"][f"PCK@{alpha:g}_{conv}"] == 100.0, conv


def test_blocked_top1_equals_a_full_argmax_with_ties_to_the_lower_index():
    from partbench_plugins.tasks.knn import topk_cosine

    g = torch.Generator().manual_seed(0)
    bank = torch.randn(400, 16, generator=g)
    bank[300] = bank[20]  # an exact tie: the lower index wins
    query = torch.cat([torch.randn(37, 16, generator=g), bank[20:21]])
    full = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    for qb, bb in ((7, 64), (4096, 65536), (1, 399)):
        s, i = topk_cosine(query, bank, 1, query_block=qb, bank_block=bb)
        assert torch.equal(i[:, 0], full.argmax(1)) and i[-1, 0] == 20
        s5, i5 = topk_cosine(query, bank, 5, query_block=qb, bank_block=bb)
        assert torch.allclose(s5, full.topk(5, dim=1).values, atol=1e-6)
        assert torch.equal(i5[:, 0], i[:, 0])


def _spec(tmp_path, root):
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{v: {{plugin: random_vit, options: {{embed_dim: 24, depth: 2, num_heads: 2, img_size: 32,
                                                       patch_size: 8}}}}}}
        datasets: {{spair: {{plugin: spair, options: {{root: {root}}}}}}}
        tasks: {{corr: {{plugin: correspondence, options: {{input_size: 64}}}}}}
    """))
    return spec


def _first_pair(root):
    return sorted((root / "PairAnnotation" / "test").glob("*.json"))[0]


@pytest.mark.parametrize("breakage,message", [
    ("json", "malformed pair file: not JSON"),
    ("fields", "malformed pair file: 4 source and 3 target keypoints"),
    ("outside", r"keypoint 1 of trg_kps \(140, 20\) is outside its 128x96 image"),
    ("image", r"image .*2008_000001.jpg is missing"),
])
def test_broken_spair_files_are_one_line_validate_time_errors(tmp_path, breakage, message):
    root = write_spair(tmp_path / "SPair-71k")
    pair = _first_pair(root)
    doc = json.loads(pair.read_text())
    if breakage == "json":
        pair.write_text(pair.read_text()[:-10])
    elif breakage == "fields":
        doc["trg_kps"] = doc["trg_kps"][:3]
        pair.write_text(json.dumps(doc))
    elif breakage == "outside":
        doc["trg_kps"][1] = [140, 20]
        pair.write_text(json.dumps(doc))
    else:
        (root / "JPEGImages" / "cat" / "2008_000001.jpg").unlink()
    with pytest.raises(SpecError) as err:
        build_plan(_spec(tmp_path, root), Plugins())
    text = str(err.value)
    assert "\n" not in text and str(pair) in text
    assert __import__("re").search(message, text), text


def test_a_layout_line_without_its_pair_file_names_the_file(tmp_path):
    root = write_spair(tmp_path / "SPair-71k")
    _first_pair(root).unlink()
    with pytest.raises(SpecError, match=r"000001-2008_000000-2008_000001:cat.json: pair file not found"):
        build_plan(_spec(tmp_path, root), Plugins())


def test_spair_pairs_from_annotations_categories_and_subsets(tmp_path):
    root = write_spair(tmp_path / "SPair-71k")
    s = _spair(root, pairs_from="annotations").load("test")
    assert [p.name for p in s.pairs] == sorted(p.name for p in s.pairs) and len(s.pairs) == 3
    assert s.classes == ["cat", "dog"] and len(s) == 6
    assert [p.viewpoint for p in s.pairs] == [0, 1, 2] and s.pairs[0].kp_ids == (0, 1, 2, 3)
    only = _spair(root, categories=["dog"]).load("test")
    assert [only.classes[p.category] for p in only.pairs] == ["dog"]
    one = _spair(root, pairs_per_category=1, seed=3).load("test")
    assert sorted(one.classes[p.category] for p in one.pairs) == ["cat", "dog"]
    assert sum(len(v) for v in PAIRS.values()) == 3


def test_cub_and_coco_person_pairs_are_drawn_within_a_class_with_shared_keypoints(tmp_path):
    from partbench_plugins.datasets.coco_pairs import CocoPersonPairs
    from partbench_plugins.datasets.cub_pairs import read_cub_pairs
    from partbench_plugins.datasets.synthetic import ensure

    root = ensure(tmp_path / "syn", 24, 96, 0)
    a = read_cub_pairs(root / "CUB_200_2011", "all", 30, 5)
    b = read_cub_pairs(root / "CUB_200_2011", "all", 30, 5)
    assert [p.name for p in a.pairs] == [p.name for p in b.pairs] and len(a.pairs) == 30
    assert [p.name for p in read_cub_pairs(root / "CUB_200_2011", "all", 30, 6).pairs] != [p.name for p in a.pairs]
    for p in a.pairs:
        assert p.source != p.target and a.labels[p.source] == a.labels[p.target] == p.category
        assert len(p.source_kps) == len(p.target_kps) == len(p.kp_ids) >= 1
    opts = {k: o.default for k, o in CocoPersonPairs.option_schema().items()}
    opts.update(root=str(root / "coco"), pairs=20)
    c = CocoPersonPairs("c", **opts).load("train")
    assert len(c.pairs) == 20 and c.classes == ["person"]
    for p in c.pairs:  # keypoints in the person's region, the box inside it
        w, h = c.image_size(p.target)
        assert (p.target_kps >= 0).all() and (p.target_kps[:, 0] < w).all() and (p.target_kps[:, 1] < h).all()
        assert c.image(p.target).size == (w, h)
