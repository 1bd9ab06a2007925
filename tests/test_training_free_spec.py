"""specs/training_free.yaml validates with its files present in their published layouts (tiny weights, the
SPair-layout fixture), names the encoders and datasets as paper.yaml / beyond.yaml do, and a narrowed run of
both tasks goes through the command line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _pair_files import write_spair
from harness import cli
from harness.plugins import Plugins
from harness.spec import build_plan
from test_beyond_spec import write_beyond_checkpoints
from test_paper_specs import write_data

SPEC = Path(__file__).resolve().parent.parent / "specs" / "training_free.yaml"
ENCODERS = ["deit", "mocov3", "dino", "beit", "mae", "cae", "ibot", "dinov2_vitb14", "clip_openai"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("training_free")
    data = write_data(base / "data")
    write_spair(data / "SPair-71k")
    cub = data / "CUB_200_2011"  # bounding_boxes.txt, as CUB ships it (the paper's tasks never read it)
    ids = [line.split()[0] for line in (cub / "images.txt").read_text().splitlines() if line.strip()]
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 2.0 3.0 40.0 30.0\n" for i in ids))
    (cub / "train_test_split.txt").write_text("".join(f"{i} 0\n" for i in ids))  # pairs need two test images
    return write_beyond_checkpoints(base / "ckpt"), data


@pytest.fixture
def env(dirs, monkeypatch):
    monkeypatch.setenv("PARTBENCH_CKPT", str(dirs[0]))
    monkeypatch.setenv("PARTBENCH_DATA", str(dirs[1]))
    return dirs


@pytest.mark.slow
def test_training_free_validates_and_runs_narrowed(env, tmp_path, capsys):
    # the test tree's val2017 has one person: pairs come from its train2017 file
    persons = ["-o", f"datasets.coco_person_pairs.options.annotation_file={env[1]}/coco/annotations/"
               "person_keypoints_train2017.json",
               "-o", f"datasets.coco_person_pairs.options.image_folder={env[1]}/coco/images/train2017"]
    assert cli.main(["validate", str(SPEC), *persons]) == 0
    assert "OK — 45 units" in capsys.readouterr().out
    plan = build_plan(SPEC, Plugins(), persons[1::2])
    units = {u.id for u in plan.units}
    for enc in ENCODERS:
        for ds in ("spair", "cub_pairs", "coco_person_pairs"):
            assert f"correspondence__{ds}__{enc}" in units
        for ds in ("lip", "pascal_part"):
            assert f"in_context__{ds}__{enc}" in units
    assert plan.tasks["in_context"].opts["mode"] == "stream"
    narrowed = [*persons, "-o", "run=[{encoders: [dino], datasets: [spair], tasks: [correspondence]}, "
                "{encoders: [dino], datasets: [lip], tasks: [in_context]}]",
                "-o", "tasks.in_context.options.input_size=64", "-o", "tasks.in_context.options.memory_size=500",
                "-o", "tasks.correspondence.options.input_size=128"]
    out = tmp_path / "out"
    assert cli.main(["run", str(SPEC), *narrowed, "--out", str(out), "--no-progress"]) == 0
    corr = json.loads((out / "results" / "correspondence__spair__dino.json").read_text())
    assert corr["headline"][0] == "PCK@0.05_category" and "PCK@0.1_point" in corr["metrics"]
    assert (out / "results" / "correspondence__spair__dino.npz").is_file()
    seg = json.loads((out / "results" / "in_context__lip__dino.json").read_text())
    assert seg["details"]["memory_bank"]["augmentation_epochs"] == 2 and seg["metrics"]["mIoU"] is not None
