"""Issue 22's "done when": tiny random DINOv2, DINOv2-with-registers, CLIP-with-projection and ViT-MAE models,
each written by save_pretrained, go through a spec with ``plugin: hf`` both from their folder and by hub id from a
hub-cache layout (HF_HUB_OFFLINE=1), and ``cls``, ``tokens``, ``block.1`` and (CLIP) ``projected`` equal
transformers' outputs within 1e-4; a retrieval run over all eight entries completes."""
from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import HarnessError, Plugins, Samples, build_plan, run_spec, transforms
from harness.testing import FakeContext

import _hf_files as hff

MODELS = {"dinov2": "tiny-org/dinov2", "dinov2_with_registers": "tiny-org/dinov2-reg",
          "clip_vision_model": "tiny-org/clip-b", "vit_mae": "tiny-org/mae"}
TOL = dict(atol=1e-4, rtol=1e-4)


class Pictures(Samples):
    def __init__(self, n: int = 3):
        super().__init__([f"im{i}" for i in range(n)], [0] * n, ["x"])
        rng = np.random.default_rng(0)
        self.arrays = [rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(n)]

    def image(self, i):
        return Image.fromarray(self.arrays[i])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """model_type -> the in-memory model; the folders; the hub cache with the same folders under MODELS' ids."""
    root = tmp_path_factory.mktemp("hf_spec")
    models, commits = {}, {}
    for i, kind in enumerate(MODELS):
        models[kind] = hff.build(kind, seed=50 + i)
        hff.save(models[kind], root / "folders" / kind)
        commits[kind] = hff.to_hub_cache(root / "folders" / kind, root / "hub", MODELS[kind])
    return models, root, commits


def write_spec(root, path):
    encoders = {}
    for kind, hub_id in MODELS.items():
        encoders[f"{kind}_folder"] = {"plugin": "hf", "options": {"model": str(root / "folders" / kind)}}
        encoders[f"{kind}_hub"] = {"plugin": "hf", "options": {"model": hub_id}}
    spec = {"encoders": encoders,
            "datasets": {"birds": {"plugin": "synthetic_parts", "options": {"num_images": 8, "format": "cub",
                                                                             "root": str(root / "data")}}},
            "tasks": {"parts": {"plugin": "retrieval", "options": {"representation": "cls", "transform": "resize:64"}}}}
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def hub_env(stored, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(stored[1] / "hub"))
    return stored


def expected(kind, model, x):
    with torch.no_grad():
        if kind == "vit_mae":
            model.config.mask_ratio = 0.0
            o = model(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True,
                      noise=torch.arange((x.shape[-2] // hff.P) * (x.shape[-1] // hff.P)).float().expand(len(x), -1))
        else:
            o = model(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True)
    start = 1 + (4 if kind == "dinov2_with_registers" else 0)
    last = model.vision_model.post_layernorm(o.last_hidden_state) if kind == "clip_vision_model" else \
        o.last_hidden_state

    def layout(t):
        return torch.cat([t[:, :1], t[:, start:]], 1)

    ref = {"cls": last[:, 0], "tokens": layout(last),
           "block.1": layout(o.hidden_states[2])}
    if kind == "clip_vision_model":
        ref["projected"] = o.image_embeds
    return ref


def test_spec_entries_equal_transformers(hub_env, tmp_path):
    models, root, commits = hub_env
    plan = build_plan(write_spec(root, tmp_path / "spec.json"), Plugins())
    pics = Pictures()
    for kind, model in models.items():
        for where in ("folder", "hub"):
            enc = plan.encoders[f"{kind}_{where}"]
            assert enc.plugin_name == "hf"
            reps = ["cls", "tokens", "block.1"] + ["projected"] * (kind == "clip_vision_model")
            ctx = FakeContext(enc, samples={"all": pics}, out_dir=tmp_path / kind / where)
            got = {r: [] for r in reps}
            for _, out in ctx.stream("all", reps, transform="resize:48"):
                for r in reps:
                    got[r].append(out[r].cpu())
            x = torch.stack([transforms.apply("resize:48", pics.image(i)) for i in range(len(pics))])
            mean, std = (torch.tensor(enc.opts[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
            ref = expected(kind, model, (x - mean) / std)
            for r in reps:
                torch.testing.assert_close(torch.cat(got[r]), ref[r], **TOL, msg=lambda m: f"{kind} {where} {r}: {m}")
            cached = ctx.features("all", ["cls"], transform="resize:48")["cls"]  # the feature cache's float32 vectors
            torch.testing.assert_close(torch.from_numpy(np.asarray(cached)), ref["cls"], **TOL)
            ident = enc.identity()
            assert (ident.get("commit") == commits[kind]) if where == "hub" else len(ident["weights_sha256"]) == 64


@pytest.mark.slow
def test_spec_runs_with_hub_and_folder_entries(hub_env, tmp_path):
    _, root, _ = hub_env
    results = run_spec(write_spec(root, tmp_path / "spec.json"), tmp_path / "out")
    assert len(results) == 8 and all(r["status"] == "ok" for r in results), [r.get("error") for r in results]
    report = {r["unit"]: r["details"]["checkpoint_load_report"] for r in results}
    assert report["parts__birds__clip_vision_model_hub"]["source"].startswith(
        "CLIPVisionModelWithProjection from tiny-org/clip-b @ ")


def test_revision_pins_a_commit(hub_env, tmp_path):
    models, root, commits = hub_env
    from partbench_plugins.encoders.hf import HuggingFace
    commit = commits["dinov2"]
    assert HuggingFace("e", model=MODELS["dinov2"], revision=commit).identity()["commit"] == commit
    with pytest.raises(HarnessError, match=rf"no snapshot {'0' * 40} .*`hf download tiny-org/dinov2 --revision "
                                           rf"{'0' * 40}`"):
        HuggingFace("e", model=MODELS["dinov2"], revision="0" * 40).validate()
    with pytest.raises(HarnessError, match=r"'tiny-org/dinov2' \(revision v2\) is not in the local Hugging Face cache"):
        HuggingFace("e", model=MODELS["dinov2"], revision="v2").validate()


def test_hf_home_locates_the_cache(stored, monkeypatch, tmp_path):
    _, root, commits = stored
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "hub").symlink_to(root / "hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    from partbench_plugins.encoders.hf import HuggingFace
    assert HuggingFace("e", model=MODELS["vit_mae"]).identity()["commit"] == commits["vit_mae"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(HarnessError) as e:
        HuggingFace("e", model=MODELS["vit_mae"]).validate()
    assert f"looked in {tmp_path / 'nowhere' / 'hub' / 'models--tiny-org--mae'}" in str(e.value)
    assert "\n" not in str(e.value)


def test_readme_one_line_spec(stored, tmp_path, monkeypatch):
    """The README's "my hub model" line validates as written (with a model in the cache)."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "{plugin: hf, options: {model: " in ln)
    hub_id = re.search(r"options: \{model: ([^}]+)\}", line).group(1).strip()
    _, root, _ = stored
    hff.to_hub_cache(root / "folders" / "dinov2", tmp_path / "hub", hub_id)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders:
        {textwrap.indent(line.strip(), '  ')}
        datasets:
          birds: {{plugin: synthetic_parts, options: {{num_images: 8, format: cub, root: "{tmp_path / 'data'}"}}}}
        tasks:
          parts: {{plugin: retrieval, options: {{representation: cls}}}}
        """))
    plan = build_plan(spec, Plugins())
    assert [e.plugin_name for e in plan.encoders.values()] == ["hf"]
