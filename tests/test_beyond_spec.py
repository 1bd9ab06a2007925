"""specs/beyond.yaml validates with every file it names present in its published layout (tiny weights), its
published reference numbers sit on units of the plan, a narrowed run of the new encoders goes through the
command line, and a swapped file stops validation with the family's one-line error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.plugins import Plugins
from harness.spec import build_plan

import _beyond_files as bf
import _hf_files as hff
from oracles import check_retrieval_unit
from test_paper_specs import write_checkpoints, write_data

SPEC = Path(__file__).resolve().parent.parent / "specs" / "beyond.yaml"
NEW = ["dinov2_vitb14", "dinov2_vitb14_reg4", "clip_openai", "clip_laion2b", "siglip", "ijepa", "deit3_in21k",
       "dinov3_vits16", "dinov3_vitb16", "siglip2_b16", "aimv2_l14"]
#: the spec's hub models -> the tiny stand-in (model_type, config overrides) written into a test hub cache
HUB = {"facebook/dinov3-vits16-pretrain-lvd1689m": ("dinov3_vit", {}),
       "facebook/dinov3-vitb16-pretrain-lvd1689m": ("dinov3_vit", {"num_register_tokens": 4}),
       "google/siglip2-base-patch16-224": ("siglip2_vision_model", {}),
       "apple/aimv2-large-patch14-224": ("aimv2_vision_model", {"image_size": 224, "patch_size": 14})}
# 13 x 2 x 3 + 2 x 2 x 3 + 4 x 2 x 3 + 6 x 2 (parts); 19 x 2 + 6 x 2 (objects); 5 + 2 (ImageNet linear)
UNITS = 78 + 12 + 24 + 12 + 38 + 12 + 5 + 2
TINY = ["tasks.part_attentive.options.num_heads=4",  # the tiny files are 32-128 wide
        "encoders.deit3_in21k.options.model_kwargs={embed_dim: 64, depth: 2, num_heads: 2}"]


def write_beyond_checkpoints(root: Path) -> Path:
    write_checkpoints(root)  # the paper's seven, names as paper.yaml expects
    torch.save(bf.dinov2_file(bf.Rand(11)), root / "dinov2_vitb14_pretrain.pth")
    torch.save(bf.dinov2_file(bf.Rand(12), registers=4), root / "dinov2_vitb14_reg4_pretrain.pth")
    bf.write_openai_archive(bf.clip_model(13, quick_gelu=True), root / "ViT-B-16.pt")
    bf.write_openclip_dir(bf.clip_model(14, quick_gelu=False), root / "laion-CLIP-ViT-B-16-laion2B-s34B-b88K", False)
    _, timm_file = bf.write_siglip_files(bf.siglip_model(15), root / "siglip_build")
    (root / "timm-vit_base_patch16_siglip_224.webli").mkdir()
    shutil.move(str(timm_file), root / "timm-vit_base_patch16_siglip_224.webli" / "model.safetensors")
    shutil.rmtree(root / "siglip_build")
    torch.save(bf.ijepa_file(bf.Rand(16)), root / "IN1K-vit.h.14-300e.pth.tar")
    bf.deit3_file(root / "deit_3_base_224_21k.pth")
    return root


def write_hub_cache(cache: Path) -> Path:
    for i, (hub_id, (kind, kw)) in enumerate(HUB.items()):
        folder = hff.write_folder(kind, cache.parent / "hub_build" / kind / str(i), seed=40 + i, **kw)
        hff.to_hub_cache(folder, cache, hub_id)
    return cache


@pytest.fixture(scope="module")
def beyond_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("beyond_spec")
    return write_beyond_checkpoints(base / "ckpt"), write_data(base / "data"), write_hub_cache(base / "hub")


@pytest.fixture
def env(beyond_dirs, monkeypatch):
    monkeypatch.setenv("PARTBENCH_CKPT", str(beyond_dirs[0]))
    monkeypatch.setenv("PARTBENCH_DATA", str(beyond_dirs[1]))
    monkeypatch.setenv("HF_HUB_CACHE", str(beyond_dirs[2]))
    return beyond_dirs


def overrides(extra=()):
    out = []
    for o in [*TINY, *extra]:
        out += ["-o", o]
    return out


def test_beyond_validates(env, capsys):
    assert cli.main(["validate", str(SPEC), *overrides()]) == 0
    out = capsys.readouterr().out
    assert f"OK — {UNITS} units" in out, out
    plan = build_plan(SPEC, Plugins(), TINY)
    units = {u.id for u in plan.units}
    assert len(units) == UNITS
    for enc in NEW:  # every new encoder is on the part and the object table
        assert any(u.startswith("part_retrieval__cub_parts__" + enc) for u in units), enc
        assert f"object_retrieval__coco_objects__{enc}" in units
    # the published linear-probe figures of the new encoders ride on units of the plan
    new_refs = {(t, d, e) for t, by_ds in plan.reference.items() for d, by_enc in by_ds.items() for e in by_enc
                if e in NEW}
    assert new_refs == {("image_linear", "imagenet", "dinov2_vitb14"), ("image_linear", "imagenet", "dinov2_vitb14_reg4"),
                        ("image_linear", "imagenet", "clip_openai"), ("image_linear_mean", "imagenet", "ijepa")}
    assert all(f"{t}__{d}__{e}" in units for t, d, e in new_refs)
    assert plan.reference["image_linear"]["imagenet"]["dinov2_vitb14"] == {"top1_best_epoch": 84.5}
    assert plan.reference["part_retrieval"]["cub_parts"]["cae"] == {"AP": 58.0}  # the paper's, from paper.yaml
    encs = plan.encoders
    assert encs["ijepa"].prefix_tokens == 0 and not encs["ijepa"].supports("cls")
    assert encs["clip_laion2b"].supports("projected") and encs["siglip"].supports("projected")
    assert encs["deit3_in21k"].pretraining == "supervised"
    assert encs["siglip2_b16"].prefix_tokens == 0 and encs["siglip2_b16"].supports("projected")
    assert encs["dinov3_vitb16"].supports("cls") and encs["aimv2_l14"].patch_size == 14


def test_missing_hub_models_one_line_each(env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert cli.main(["validate", str(SPEC), *overrides()]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(HUB), lines
    for line, hub_id in zip(lines, HUB):
        assert line.startswith("error: ") and f"model '{hub_id}' (revision main) is not in the local Hugging Face " \
            f"cache (looked in {tmp_path / 'empty' / ('models--' + hub_id.replace('/', '--'))})" in line, line
        assert f"`hf download {hub_id}`" in line


def test_beyond_runs_new_encoders(env, tmp_path, capsys):
    run = ("run=[{encoders: [dinov2_vitb14_reg4, clip_openai, clip_laion2b, siglip, ijepa, deit3_in21k], "
           "datasets: [cub_parts], tasks: [part_retrieval]}, "
           "{encoders: [clip_openai, siglip], datasets: [cub_parts], tasks: [part_retrieval_projected]}, "
           "{encoders: [ijepa], datasets: [cub_parts], tasks: [part_linear_mean]}]")
    out = tmp_path / "run"
    argv = ["run", str(SPEC), "--out", str(out), "--no-progress",
            *overrides([run, "tasks.part_linear_mean.options.epochs=2"])]
    rc = cli.main(argv)
    printed = capsys.readouterr().out
    results = {r["unit"]: r for r in (json.loads(p.read_text()) for p in (out / "results").glob("*.json"))}
    failed = [(u, r["error"]) for u, r in results.items() if r["status"] != "ok"]
    assert rc == 0 and not failed and len(results) == 9, (rc, failed, printed[-2000:])
    plan = build_plan(SPEC, Plugins(), [*TINY, run, "tasks.part_linear_mean.options.epochs=2"])
    for enc in ("dinov2_vitb14_reg4", "clip_openai", "clip_laion2b", "siglip", "ijepa", "deit3_in21k"):
        r = results[f"part_retrieval__cub_parts__{enc}"]
        assert r["details"]["n_items"] == 24
        check_retrieval_unit(r, plan, tmp_path)
        assert r["details"]["checkpoint_load_report"]["missing"] == []
    assert results["part_retrieval__cub_parts__ijepa"]["details"]["representation"]["reported"] == "mean_patch"
    assert results["part_retrieval__cub_parts__siglip"]["details"]["representation"]["reported"] == "mean_patch"
    proj = results["part_retrieval_projected__cub_parts__clip_openai"]["details"]
    assert proj["representation"]["reported"] == "projected" and proj["per_representation"]["projected"]["dim"] == bf.CLIP_EMBED
    assert results["part_linear_mean__cub_parts__ijepa"]["details"]["protocol"]["epochs"] == 2


def test_swapped_file_stops_validation(beyond_dirs, monkeypatch, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(beyond_dirs[0], ckpt)
    shutil.copyfile(ckpt / "dinov2_vitb14_pretrain.pth", ckpt / "IN1K-vit.h.14-300e.pth.tar")
    monkeypatch.setenv("PARTBENCH_CKPT", str(ckpt))
    monkeypatch.setenv("PARTBENCH_DATA", str(beyond_dirs[1]))
    monkeypatch.setenv("HF_HUB_CACHE", str(beyond_dirs[2]))
    assert cli.main(["validate", str(SPEC), *overrides()]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "encoders.ijepa.options" in err
    assert "not an I-JEPA checkpoint" in err and "found a DINOv2 backbone" in err, err
