"""One dataset entry under retrieval, linear_probe, linear_seg (fast protocol) and in_context_seg, and the level chart with three
levels (SPIN: object, part, subpart), run end to end on tiny files in the official layouts."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import _part_files as pf
from harness.plugins import Plugins
from harness.runner import run_spec

TINY = "{depth: 1, embed_dim: 32, num_heads: 2, patch_size: 16, img_size: 64, seed: 0}"


@pytest.mark.slow
def test_one_pascal_part_116_entry_serves_retrieval_probes_and_segmentation(tmp_path):
    root = pf.write_pascal116(tmp_path / "PascalPart116")
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        encoders: {{vit: {{plugin: random_vit, options: {TINY}}}}}
        datasets: {{pp116: {{plugin: pascal_part_116, options: {{root: "{root}", level: part}}}}}}
        tasks:
          retrieval: {{plugin: retrieval, options: {{representation: cls, transform: "resize:64"}}}}
          probe: {{plugin: linear_probe, options: {{epochs: 2, batch_size: 8, train_transform: "resize:64",
                                                   test_transform: "resize:64"}}}}
          seg: {{plugin: linear_seg, options: {{protocol: fast, blocks: [], iterations: 4, batch_size: 2, warmup: 1,
                                              scale: [128, 96], crop: [64, 64], stride: [64, 64]}}}}
          ics: {{plugin: in_context_seg, options: {{input_size: 64, memory_size: 256, augmentation_epochs: 1, k: 5}}}}
        """))
    results = run_spec(spec, tmp_path / "out", plugins=Plugins(), show_progress=False)
    by = {r["task"]: r for r in results}
    assert all(r["status"] == "ok" for r in results), [r.get("error") for r in results]
    assert 0 <= by["retrieval"]["metrics"]["AP"] <= 100
    assert set(by["retrieval"]["inputs"]) == {"all"} and set(by["probe"]["inputs"]) == {"train", "val"}
    assert 0 <= by["probe"]["metrics"]["top1_best_epoch"] <= 100
    assert 0 <= by["seg"]["metrics"]["mIoU"] <= 100 and len(by["seg"]["details"]["per_class"]) == 116
    # the training-free in-context task is served the same label maps as linear_seg
    assert 0 <= by["ics"]["metrics"]["mIoU"] <= 100 and by["ics"]["inputs"] == by["seg"]["inputs"]
    # crops and label maps of the same split are different items: different fingerprints
    assert by["probe"]["inputs"]["val"] != by["seg"]["inputs"]["val"]
    for r in results:
        assert (r["dataset_level"], r["dataset_levels"], r["dataset_hierarchy"]) == (
            "part", ["object", "part"], "pascal_part_116")


@pytest.mark.slow
def test_the_level_chart_draws_three_levels_coarse_to_fine(tmp_path):
    root = pf.write_spin(tmp_path / "spin")
    spec = tmp_path / "spec.yaml"
    datasets = "\n".join(f'  spin_{lvl}: {{plugin: spin, options: {{root: "{root}", level: {lvl}}}}}'
                         for lvl in ("subpart", "object", "part"))  # listed out of order on purpose
    spec.write_text(textwrap.dedent(f"""\
        encoders:
          sup: {{plugin: tiny_pretrained, options: {{method: supervised}}}}
          vit: {{plugin: random_vit, options: {TINY}}}
        datasets:
        """) + datasets + textwrap.dedent("""
        tasks: {retrieval: {plugin: retrieval, options: {representation: cls, transform: "resize:64", split: test}}}
        """))
    run_spec(spec, tmp_path / "out", plugins=Plugins(), show_progress=False)
    (group,) = json.loads((tmp_path / "out" / "levels.json").read_text())
    assert group["levels"] == ["object", "part", "subpart"] and group["baseline"] == "sup"
    assert [group[lvl]["dataset"] for lvl in group["levels"]] == ["spin_object", "spin_part", "spin_subpart"]
    row = {r["encoder"]: r for r in group["rows"]}["vit"]
    assert set(row) >= {"object_vs_baseline", "part_vs_baseline", "subpart_vs_baseline"}
    assert (tmp_path / "out" / "levels.png").is_file()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "object vs part vs subpart: spin (spin_object / spin_part / spin_subpart), retrieval AP" in md


@pytest.mark.slow
def test_the_mmseg_recipe_reads_the_same_maps(tmp_path):
    """protocol: paper hands mmseg's BaseSegDataset the layout of SPIN's maps painted from its JSON (.JPEG links
    beside the maps, no zero reduction, background a class; train and val in different cache folders)."""
    spin = pf.write_spin(tmp_path / "spin", rasterise=False)
    val = spin / "spin_val_subparts.json"  # val one image short of train: which split mmseg scored shows
    data = json.loads(val.read_text())
    gone = data["images"].pop()["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != gone]
    val.write_text(json.dumps(data))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        encoders: {{vit: {{plugin: random_vit, options: {TINY}}}}}
        datasets:
          spin: {{plugin: spin, options: {{root: "{spin}", level: subpart}}}}
        tasks:
          paper: {{plugin: linear_seg, options: {{protocol: paper, blocks: [0], iterations: 2, batch_size: 2, warmup: 1,
                                                 workers: 0, isolation: inprocess, scale: [128, 96], crop: [64, 64],
                                                 stride: [64, 64]}}}}
        """))
    results = run_spec(spec, tmp_path / "out", plugins=Plugins(), show_progress=False)
    assert [r["status"] for r in results] == ["ok"], [r.get("error") for r in results]
    assert len(results[0]["details"]["per_class"]) == 204 and results[0]["details"]["protocol"] == "paper"
    scored = np.load(tmp_path / "out" / results[0]["per_item"]["file"])["items"]
    assert len(scored) == 5  # val's images, read from val's own folder


@pytest.mark.slow
def test_segmentation_on_the_releases_that_ship_only_json_masks(tmp_path):
    """PartImageNet_OOD (polygons), PACO (RLE parts, polygon objects) and ADE20K-Part-234's objects: linear_seg
    and in_context_seg run on maps painted from the JSON, with the classes of each level."""
    images = tmp_path / "coco" / "images"
    paco = pf.write_paco(tmp_path / "paco", images)
    ood = pf.write_partimagenet_ood(tmp_path / "PartImageNet_OOD")
    ade = pf.write_ade234(tmp_path / "ADE20KPart234")
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        encoders: {{vit: {{plugin: random_vit, options: {TINY}}}}}
        datasets:
          ood_part: {{plugin: partimagenet, options: {{root: "{ood}", level: part}}}}
          paco_part: {{plugin: paco, options: {{root: "{paco}", coco_images: "{images}", level: part}}}}
          paco_object: {{plugin: paco, options: {{root: "{paco}", coco_images: "{images}", level: object}}}}
          ade_object: {{plugin: ade20k_part_234, options: {{root: "{ade}", level: object}}}}
        tasks:
          seg: {{plugin: linear_seg, options: {{protocol: fast, blocks: [], iterations: 4, batch_size: 2, warmup: 1,
                                              scale: [128, 96], crop: [64, 64], stride: [64, 64],
                                              train_split: train, test_split: val}}}}
          ics: {{plugin: in_context_seg, options: {{input_size: 64, memory_size: 256, augmentation_epochs: 1, k: 5,
                                                   train_split: train, test_split: val}}}}
        """))
    results = run_spec(spec, tmp_path / "out", plugins=Plugins(), show_progress=False)
    assert all(r["status"] == "ok" for r in results), [r.get("error") for r in results]
    classes = {r["dataset"]: len(r["details"]["per_class"]) for r in results if r["task"] == "seg"}
    assert classes == {"ood_part": 41, "paco_part": 4, "paco_object": 2, "ade_object": 2}
    assert all(0 <= r["metrics"]["mIoU"] <= 100 and r["intervals"] for r in results)
