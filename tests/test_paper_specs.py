"""The paper specs (specs/paper.yaml and the per-table specs) are valid and run end to end.

A tiny PARTBENCH_CKPT folder holds one checkpoint per method in its official file layout under exactly
the published file names paper.yaml expects (width 64, depth 2, the real 224/16 grid), and a tiny
PARTBENCH_DATA folder holds CUB_200_2011/, coco/, cifar-10-batches-py/ and imagenet/ in their published
formats. Every spec validates with the expected unit count; Table 4, Table 1, Table 2 and the Fig. 6
gallery run through the command line with short-training overrides, every unit succeeds, and the
published "(paper)" numbers travel into the result JSON and the printed tables.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.plugins import Plugins
from harness.spec import build_plan

from fixtures_data import noise_image, write_cifar10, write_coco, write_cub
from fixtures_seg import write_ade, write_img_ann
from _paper_files import W, make
from oracles import check_probe_counts, check_retrieval_unit

SPECS = Path(__file__).resolve().parent.parent / "specs"

# file name in PARTBENCH_CKPT (as paper.yaml names them) -> (method, variant) of the official layout
CHECKPOINTS = {
    "deit_base_patch16_224-b5f2ef4d.pth": ("deit", ""),
    "jx_vit_base_p16_224-80ecf9dd.pth": ("deit", "google_vit"),
    "vit-b-300ep.pth.tar": ("mocov3", ""),
    "dino_vitbase16_pretrain_full_checkpoint.pth": ("dino", ""),
    "beit_base_standard_epoch800_checkpoint-799.pth": ("beit", ""),
    "mae_pretrain_vit_base.pth": ("mae", ""),
    "cae_base_1600ep.pth": ("cae", ""),
    "checkpoint.pth": ("ibot", ""),
}
ENCODERS = ["deit", "vit_in21k", "mocov3", "dino", "beit", "mae", "cae", "ibot"]
PROJECTED = ["mocov3", "dino", "ibot"]
# the tiny files' projector output (MoCo v3) and DINO-head bottleneck (the exact compact 'projected')
PROJECTED_DIM = {"mocov3": 32, "dino": 16, "ibot": 16}

# 8 encoders x 2 datasets x 3 tasks + 3 x 2 projected; 8 x 2 + 3 x 2; 8 + 8; 7 (no vit_in21k gallery)
UNITS = {"table4_parts.yaml": 54, "table2_objects.yaml": 22, "table1_imagenet.yaml": 16, "fig6_gallery.yaml": 7}
# segmentation: the seven methods on ADE20K; ADE-Part, Pascal-Part, LIP; the two pairs; the LIP lr sweep.
# Tables 5, 7 and 8 share their part-level cells, so these specs overlap.
SEG_UNITS = {"table3_ade_objects.yaml": 7, "table5_parts_seg.yaml": 21, "table7_ade.yaml": 14,
             "table8_pascal.yaml": 14, "table9_lip_lr.yaml": 7}
UNITS["paper.yaml"] = sum(UNITS.values()) + 7 * 6 + 7 + 6  # + Table 10 (no BEiT row)
UNITS.update(SEG_UNITS)
UNITS["table10_pose.yaml"] = 6
SEG_ENCODERS = [e for e in ENCODERS if e != "vit_in21k"]
# the tiny checkpoints have 2 blocks: the segmentation head reads both
TINY_BLOCKS = ["tasks.seg.options.blocks=[0,1]", "tasks.seg_lr.options.blocks=[0,1]",
               "tasks.pose.options.blocks=[0,1]"]

WNIDS = ["n01440764", "n01443537", "n01484850"]


# ------------------------------------------------------------------------------------------------
# tiny PARTBENCH_CKPT / PARTBENCH_DATA
# ------------------------------------------------------------------------------------------------
def write_checkpoints(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, (method, variant)) in enumerate(CHECKPOINTS.items()):
        torch.save(make(method, W(500 + i), variant), root / name)
    return root


def cub_images(n_train: int = 4, n_test: int = 2) -> dict:
    """Images with the four default keypoints (right eye, right leg, left wing, tail) 80 px apart
    (crop half-side 20): every keypoint is kept, 4 crops per image, both splits populated."""
    images = {}
    for iid in range(1, n_train + n_test + 1):
        cls = "001.Albatross" if iid % 2 else "002.Auklet"
        dx, dy = 3 * iid, 2 * iid
        kps = {11: (40.0 + dx, 40.0 + dy, 1), 12: (120.0 + dx, 40.0, 1), 9: (40.0, 120.0 + dy, 1),
               14: (120.0, 120.0, 1), 1: (80.0, 80.0, 1)}  # 'back' visible but not selected
        images[iid] = (f"{cls}/img_{iid:04d}.jpg", (170, 170), int(iid <= n_train), kps)
    return images


def write_coco_tree(root: Path) -> Path:
    """The fixture COCO tree, plus object boxes on val2017 (coco_objects' test split is val2017)."""
    write_coco(root)
    ann = root / "annotations" / "instances_val2017.json"
    doc = json.loads(ann.read_text())
    doc["annotations"] = [
        {"id": 101, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [5.0, 5.0, 40.0, 38.0], "area": 1.0},
        {"id": 102, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [60.0, 50.0, 50.0, 44.0], "area": 1.0},
        {"id": 103, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [0.0, 70.0, 40.0, 40.0], "area": 1.0},
        {"id": 104, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [70.0, 0.0, 36.0, 40.0], "area": 1.0},
        {"id": 105, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [0.0, 0.0, 10.0, 10.0], "area": 1.0},
    ]
    ann.write_text(json.dumps(doc))
    # the val2017 person gets a real box (Table 10 crops persons; coco_parts only reads keypoints)
    kp = root / "annotations" / "person_keypoints_val2017.json"
    doc = json.loads(kp.read_text())
    doc["annotations"][0]["bbox"] = [5.0, 5.0, 100.0, 110.0]
    kp.write_text(json.dumps(doc))
    return root


def write_imagenet(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """ImageFolder train/ and val/ with 3 classes; val names are ILSVRC2012-style numbers, one of them
    >= 25000 so imagenet_patches' max_id filter has something to drop."""
    seed = 0
    for ci, wnid in enumerate(WNIDS):
        for k in range(n_train):
            seed += 1
            noise_image(root / "train" / wnid / f"{wnid}_{k + 1}.JPEG", 48 + 8 * k, 40, seed=seed)
        for k in range(n_val):
            seed += 1
            noise_image(root / "val" / wnid / f"ILSVRC2012_val_{ci * n_val + k + 1:08d}.JPEG", 64, 56, seed=seed)
    noise_image(root / "val" / WNIDS[0] / "ILSVRC2012_val_00030000.JPEG", 64, 64, seed=99)
    return root


def write_data(root: Path) -> Path:
    write_cub(root / "CUB_200_2011", cub_images())
    write_coco_tree(root / "coco")
    write_cifar10(root, per_batch=12)
    write_imagenet(root / "imagenet")
    write_ade(root / "ADEChallengeData2016")
    write_ade(root / "ade_59object" / "ADEChallengeData2016", num_classes=59)
    write_img_ann(root / "ade_209part", 209)
    write_img_ann(root / "pascal_object", 16)
    write_img_ann(root / "pascal_part", 193)
    write_img_ann(root / "LIP", 19)
    return root


@pytest.fixture(scope="module")
def paper_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper")
    return write_checkpoints(base / "ckpt"), write_data(base / "data")


@pytest.fixture
def paper_env(paper_dirs, monkeypatch):
    ckpt, data = paper_dirs
    monkeypatch.setenv("PARTBENCH_CKPT", str(ckpt))
    monkeypatch.setenv("PARTBENCH_DATA", str(data))
    return ckpt, data


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", list(UNITS))
def test_spec_validates(spec, paper_env, capsys):
    # the tiny checkpoints are 64 wide: the attentive probes' 12 heads are refused at validation
    heads = ["-o", "tasks.part_attentive.options.num_heads=4", "-o", "tasks.image_attentive.options.num_heads=4"]
    for o in TINY_BLOCKS:
        heads += ["-o", o]
    assert cli.main(["validate", str(SPECS / spec), *heads]) == 0
    out = capsys.readouterr().out
    assert f"OK — {UNITS[spec]} units" in out, out
    plan = build_plan(SPECS / spec, Plugins(), heads[1::2])
    assert len(plan.units) == UNITS[spec]
    # every reference entry names a unit of paper.yaml; the per-table specs inherit them all
    assert set(plan.reference) >= {"part_retrieval", "part_linear", "part_attentive", "object_retrieval",
                                   "image_linear", "image_attentive", "seg", "seg_lr", "pose"}


def test_paper_units_are_the_union_of_the_tables(paper_env):
    plugins = Plugins()
    heads = ["tasks.part_attentive.options.num_heads=4", "tasks.image_attentive.options.num_heads=4", *TINY_BLOCKS]
    paper = {u.id for u in build_plan(SPECS / "paper.yaml", plugins, heads).units}
    tables = {s: {u.id for u in build_plan(SPECS / s, plugins, heads).units} for s in UNITS if s != "paper.yaml"}
    assert set().union(*tables.values()) == paper
    non_seg = [ids for s, ids in tables.items() if s not in SEG_UNITS]  # disjoint; seg tables share cells
    assert sum(map(len, non_seg)) + len(set().union(*(tables[s] for s in SEG_UNITS))) == len(paper)
    # every paper.yaml reference number belongs to a unit of the plan
    plan = build_plan(SPECS / "paper.yaml", plugins, heads)
    for task, by_ds in plan.reference.items():
        for ds, by_enc in by_ds.items():
            for enc in by_enc:
                assert f"{task}__{ds}__{enc}" in paper, (task, ds, enc)


# ------------------------------------------------------------------------------------------------
# end-to-end runs (short training)
# ------------------------------------------------------------------------------------------------
def run_cli(spec: str, out: Path, overrides: list[str], capsys) -> tuple[list[dict], str]:
    argv = ["run", str(SPECS / spec), "--out", str(out), "--no-progress"]
    for o in overrides:
        argv += ["-o", o]
    rc = cli.main(argv)
    printed = capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    failed = [(r["unit"], r["error"]) for r in results if r["status"] != "ok"]
    assert rc == 0 and not failed, (rc, failed[:3], printed[-2000:])
    assert len(results) == UNITS[spec]
    return results, printed


def short_probe(task: str, heads: bool = False) -> list[str]:
    out = [f"tasks.{task}.options.epochs=2"]  # the default batch (1024) holds every tiny split at once
    return out + ([f"tasks.{task}.options.num_heads=4"] if heads else [])


def table_row(printed: str, task: str, dataset: str, encoder: str) -> list[str]:
    """The cells of one row of the printed table of ``task`` (tables are separated by blank lines)."""
    for block in printed.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].strip() == task:
            rows = [ln.split() for ln in lines[1:] if ln.split()[:2] == [dataset, encoder]]
            assert len(rows) == 1, (task, dataset, encoder, block)
            return rows[0]
    raise AssertionError(f"no printed table for {task}:\n{printed}")


@pytest.mark.slow
def test_table4_runs(paper_env, tmp_path, capsys):
    overrides = short_probe("part_linear") + short_probe("part_attentive", heads=True)
    results, printed = run_cli("table4_parts.yaml", tmp_path / "t4", overrides, capsys)
    by_unit = {r["unit"]: r for r in results}
    plan = build_plan(SPECS / "table4_parts.yaml", Plugins(), overrides)
    for ds in ("cub_parts", "coco_parts"):
        for enc in ENCODERS:
            r = by_unit[f"part_retrieval__{ds}__{enc}"]
            check_retrieval_unit(r, plan, tmp_path)
            assert r["details"]["representation"]["reported"] in ("cls", "mean_patch")
            assert r["details"]["checkpoint_load_report"]["missing"] == []
            for task in ("part_linear", "part_attentive"):
                r = by_unit[f"{task}__{ds}__{enc}"]
                check_probe_counts(r)
                assert r["details"]["protocol"]["epochs"] == 2
        for enc in PROJECTED:
            r = by_unit[f"part_retrieval_projected__{ds}__{enc}"]
            assert r["details"]["representation"]["reported"] == "projected"
            assert r["details"]["per_representation"]["projected"]["dim"] == PROJECTED_DIM[enc]
    # the tiny splits have the intended sizes (all crops kept)
    assert by_unit["part_retrieval__cub_parts__dino"]["details"]["n_items"] == 24
    assert by_unit["part_linear__cub_parts__dino"]["details"]["n"]["train"] == 16
    assert by_unit["part_linear__coco_parts__dino"]["details"]["n"]["test"] == 2
    assert by_unit["part_attentive__cub_parts__cae"]["details"]["head"]["num_heads"] == 4

    # the published numbers ride along in the result JSON ...
    assert by_unit["part_retrieval__cub_parts__cae"]["reference"] == {"AP": 58.0}
    assert by_unit["part_retrieval__coco_parts__ibot"]["reference"] == {"AP": 59.2}
    assert by_unit["part_retrieval_projected__cub_parts__dino"]["reference"] == {"AP": 31.7}
    assert by_unit["part_linear__cub_parts__beit"]["reference"] == {"top1_best_epoch": 55.4}
    assert by_unit["part_attentive__coco_parts__mocov3"]["reference"] == {"top1_best_epoch": 95.3}
    assert all(r["reference"] for r in results)
    # ... and in the printed tables, in a "(paper)" column right after our value
    assert "AP (paper)" in printed and "top1_best_epoch (paper)" in printed
    for task, ds, enc, ref in [("part_retrieval", "cub_parts", "cae", "58.00"),
                               ("part_linear", "coco_parts", "beit", "69.30"),
                               ("part_attentive", "cub_parts", "deit", "92.90")]:
        row = table_row(printed, task, ds, enc)
        ours = by_unit[f"{task}__{ds}__{enc}"]["metrics"]["AP" if task == "part_retrieval" else "top1_best_epoch"]
        lo, hi = by_unit[f"{task}__{ds}__{enc}"]["intervals"]["ci95"]["AP" if task == "part_retrieval" else
                                                                     "top1_best_epoch"]
        # our value with its bootstrap interval, then the paper's
        assert row[2:6] == [f"{ours:.2f}", f"[{lo:.2f},", f"{hi:.2f}]", ref], row
    report = (tmp_path / "t4" / "report.md").read_text()
    assert "AP (paper)" in report and "58.00" in report


def test_table1_runs(paper_env, tmp_path, capsys):
    results, printed = run_cli("table1_imagenet.yaml", tmp_path / "t1",
                               short_probe("image_linear") + short_probe("image_attentive", heads=True), capsys)
    by_unit = {r["unit"]: r for r in results}
    for enc in ENCODERS:
        for task, ds in (("image_linear", "imagenet"), ("image_attentive", "imagenet_100pc")):
            r = by_unit[f"{task}__{ds}__{enc}"]
            assert {"top1_best_epoch", "top1_final", "top1_heldout"} <= set(r["metrics"]), r["unit"]
            p = r["details"]["protocol"]
            assert (p["train_split"], p["test_split"]) == ("train", "val")
            assert p["train_transform"] == p["test_transform"] == "resize_crop:256:224"
            # 3 classes x 4 train images; val: 3 x 2 plus ILSVRC2012_val_00030000 (no max_id here)
            assert r["details"]["n"] == {"train": 12, "test": 7, "selection_train": 9, "heldout": 3}
            assert r["details"]["num_classes"] == 3
    assert by_unit["image_linear__imagenet__beit"]["reference"] == {"top1_best_epoch": 41.8}
    assert by_unit["image_attentive__imagenet_100pc__mae"]["reference"] == {"top1_best_epoch": 74.2}
    assert "top1_best_epoch (paper)" in printed and "74.20" in printed and "41.80" in printed


def test_table2_runs(paper_env, tmp_path, capsys):
    results, printed = run_cli("table2_objects.yaml", tmp_path / "t2", [], capsys)
    by_unit = {r["unit"]: r for r in results}
    plan = build_plan(SPECS / "table2_objects.yaml", Plugins())
    for ds, n, n_classes in (("cifar10", 12, 10), ("coco_objects", 4, 2)):
        for enc in ENCODERS:
            r = by_unit[f"object_retrieval__{ds}__{enc}"]
            assert r["details"]["split"] == "test" and r["details"]["n_items"] == n
            assert r["details"]["n_classes"] == n_classes
            check_retrieval_unit(r, plan, tmp_path)
        for enc in PROJECTED:
            r = by_unit[f"object_retrieval_projected__{ds}__{enc}"]
            assert r["details"]["representation"]["reported"] == "projected"
    # coco_objects test = val2017 boxes: the 10x10 box is dropped as too small
    summary = by_unit["object_retrieval__coco_objects__dino"]["details"]["dataset_summary"]
    assert summary["kept"] == 4 and summary["dropped_small"] == 1
    assert by_unit["object_retrieval__cifar10__deit"]["reference"] == {"AP": 71.3}
    assert by_unit["object_retrieval_projected__coco_objects__mocov3"]["reference"] == {"AP": 55.9}
    assert "AP (paper)" in printed and "71.30" in printed and "55.90" in printed


@pytest.mark.slow
def test_fig6_runs(paper_env, tmp_path, capsys):
    one_per_class = ["datasets.imagenet_patches.options.per_class=1"]  # 3 images x 49 patches
    results, printed = run_cli("fig6_gallery.yaml", tmp_path / "f6", one_per_class, capsys)
    assert sorted(r["encoder"] for r in results) == sorted(e for e in ENCODERS if e != "vit_in21k")
    for r in results:
        d = r["details"]
        assert d["representation"] == "mean_patch" and d["split"] == "val" and d["top_k"] == 8
        assert [q["label"] for q in d["queries"]] == WNIDS  # the first patch of each class
        assert all(len(q["retrieved"]) == 8 for q in d["queries"])
        assert {"sim@1", "sim@5", "sim@10"} <= set(r["metrics"])
        assert all((tmp_path / "f6" / a).is_file() for a in r["artifacts"])
    assert (tmp_path / "f6" / "artifacts" / "patch_gallery__imagenet_patches" / "gallery.png").is_file()
    assert "patch_gallery" in printed and "sim@1" in printed
    # the spec's max_id: 25000 drops ILSVRC2012_val_00030000
    ds = build_plan(SPECS / "fig6_gallery.yaml", Plugins()).datasets["imagenet_patches"]
    s = ds.load("val")
    assert s.summary["images_found"] == 7 and s.summary["images"] == 6 and len(s) == 6 * 49
    assert not any("00030000" in k for k in s.keys)


@pytest.mark.slow
def test_table7_and_fig7_run_with_the_fast_protocol(paper_env, tmp_path, capsys):
    small = ["tasks.seg.options.protocol=fast", "tasks.seg.options.iterations=6", "tasks.seg.options.warmup=2",
             "tasks.seg.options.batch_size=4", "tasks.seg.options.scale=[96,64]", "tasks.seg.options.crop=[64,64]",
             "tasks.seg.options.stride=[48,48]"]
    results, printed = run_cli("table7_ade.yaml", tmp_path / "t7", TINY_BLOCKS + small, capsys)
    by_unit = {r["unit"]: r for r in results}
    for enc in SEG_ENCODERS:
        for ds, level, n_classes in (("ade20k_object", "object", 59), ("ade20k_part", "part", 209)):
            r = by_unit[f"seg__{ds}__{enc}"]
            assert r["dataset_level"] == level and r["dataset_hierarchy"] == "ade20k"
            assert {"mIoU", "mAcc", "aAcc"} <= set(r["metrics"]) and r["details"]["protocol"] == "fast"
            assert len(r["details"]["per_class"]) == n_classes
    assert by_unit["seg__ade20k_object__cae"]["reference"] == {"mIoU": 47.4, "mAcc": 58.4, "aAcc": 82.9}
    assert by_unit["seg__ade20k_part__dino"]["reference"] == {"mIoU": 28.9, "mAcc": 36.8, "aAcc": 70.3}
    assert "mIoU (paper)" in printed and "object vs part: ade20k (ade20k_object / ade20k_part)" in printed
    out = tmp_path / "t7"
    (pair,) = json.loads((out / "levels.json").read_text())
    assert pair["baseline"] == "deit" and len(pair["rows"]) == len(SEG_ENCODERS)
    dino = next(r for r in pair["rows"] if r["encoder"] == "dino")
    ours = {ds: by_unit[f"seg__{ds}__{e}"]["metrics"]["mIoU"] for ds in ("ade20k_object", "ade20k_part")
            for e in ("dino",)}
    base = {ds: by_unit[f"seg__{ds}__deit"]["metrics"]["mIoU"] for ds in ("ade20k_object", "ade20k_part")}
    assert dino["object_vs_baseline"] == pytest.approx(ours["ade20k_object"] - base["ade20k_object"])
    assert dino["part_vs_baseline"] == pytest.approx(ours["ade20k_part"] - base["ade20k_part"])
    assert (out / "levels.png").read_bytes()[:4] == b"\x89PNG"


def test_table10_runs_and_prints_the_paper_columns(paper_env, tmp_path, capsys):
    small = ["tasks.pose.options.epochs=1", "tasks.pose.options.input_size=[64,48]", "tasks.pose.options.batch_size=4",
             "tasks.pose.options.warmup=1"]
    results, printed = run_cli("table10_pose.yaml", tmp_path / "t10", TINY_BLOCKS + small, capsys)
    by_unit = {r["unit"]: r for r in results}
    assert sorted(r["encoder"] for r in results) == sorted(e for e in SEG_ENCODERS if e != "beit")
    r = by_unit["pose__coco_persons__mae"]
    assert r["reference"] == {"AP": 23.6, "AP50": 59.8, "AR": 33.3, "AR50": 69.6}
    assert {"AP", "AP50", "AP75", "AR", "AR50"} <= set(r["metrics"])
    assert r["details"]["annotation_file"].endswith("person_keypoints_val2017.json")
    for col in ("AP (paper)", "AP50 (paper)", "AR (paper)", "AR50 (paper)"):
        assert col in printed
    assert "21.61" in printed  # MoCo v3's AR as printed in the paper


def test_table9_lr_columns_carry_the_paper_numbers(paper_env):
    plan = build_plan(SPECS / "table9_lip_lr.yaml", Plugins(), TINY_BLOCKS)
    # the paper's Table 9: 4e-4 (the main tables' rate, reported as mIoU) and five further rates, under the
    # names linear_seg gives the further heads' mIoU (f"mIoU@lr={lr:g}", tests/test_task_linear_seg.py)
    assert plan.tasks["seg_lr"].lr_list() == [4e-4, 1e-5, 2e-4, 3e-4, 5e-4, 1e-3]
    columns = {"mIoU", "mIoU@lr=1e-05", "mIoU@lr=0.0002", "mIoU@lr=0.0003", "mIoU@lr=0.0005", "mIoU@lr=0.001"}
    for enc in SEG_ENCODERS:
        assert set(plan.reference["seg_lr"]["lip"][enc]) == columns
    assert plan.reference["seg_lr"]["lip"]["cae"]["mIoU@lr=0.0005"] == 44.3


# ------------------------------------------------------------------------------------------------
# clear one-line errors
# ------------------------------------------------------------------------------------------------
def test_missing_ckpt_variable(paper_dirs, monkeypatch, capsys):
    monkeypatch.delenv("PARTBENCH_CKPT", raising=False)
    monkeypatch.setenv("PARTBENCH_DATA", str(paper_dirs[1]))
    assert cli.main(["validate", str(SPECS / "table4_parts.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("error: ") and "paper.yaml" in err
    assert "encoders.deit.options.checkpoint" in err and "PARTBENCH_CKPT is not set" in err, err


def test_missing_data_variable(paper_dirs, monkeypatch, capsys):
    monkeypatch.setenv("PARTBENCH_CKPT", str(paper_dirs[0]))
    monkeypatch.delenv("PARTBENCH_DATA", raising=False)
    assert cli.main(["validate", str(SPECS / "table2_objects.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "datasets.cub_parts.options.root" in err and "PARTBENCH_DATA is not set" in err, err


@pytest.mark.parametrize("name,swapped_in,method", [
    # validation reads every checkpoint (the tasks ask which representations it has), so a wrong file
    # stops the run before anything is computed. MAE's file where DINO's should be:
    ("dino_vitbase16_pretrain_full_checkpoint.pth", "mae_pretrain_vit_base.pth", "DINO"),
    # DeiT's file where BEiT's should be
    ("beit_base_standard_epoch800_checkpoint-799.pth", "deit_base_patch16_224-b5f2ef4d.pth", "BEiT"),
    # the Google ViT raw state dict where the DeiT {'model': ...} file should be
    ("deit_base_patch16_224-b5f2ef4d.pth", "jx_vit_base_p16_224-80ecf9dd.pth", "DeiT/supervised ViT"),
])
def test_swapped_checkpoint(name, swapped_in, method, paper_dirs, monkeypatch, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(paper_dirs[0], ckpt)
    shutil.copyfile(paper_dirs[0] / swapped_in, ckpt / name)
    monkeypatch.setenv("PARTBENCH_CKPT", str(ckpt))
    monkeypatch.setenv("PARTBENCH_DATA", str(paper_dirs[1]))
    assert cli.main(["validate", str(SPECS / "table4_parts.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert f": {ckpt / name}: not " in err, err
    article = "an" if method[0] in "AEIOU" else "a"
    assert f"not {article} {method} checkpoint" in err and "expected" in err, err
