"""specs/parts_beyond.yaml validates against tiny files of the five datasets in their official layouts (and the
encoder files beyond.yaml names), every level of each, with crops and label maps from the same entries."""
from __future__ import annotations

from pathlib import Path

import pytest

import _part_files as pf
from harness import cli
from harness.plugins import Plugins
from harness.spec import build_plan
from test_beyond_spec import TINY, write_beyond_checkpoints, write_data

SPEC = Path(__file__).resolve().parent.parent / "specs" / "parts_beyond.yaml"
ENCODERS = ["deit", "mocov3", "dino", "beit", "mae", "cae", "ibot", "dinov2_vitb14", "clip_openai"]
# 9 encoders x 11 datasets x (2 crop tasks + 1 segmentation task)
UNITS = 9 * 11 * 3
OVERRIDES = [*TINY, "tasks.level_seg.options.blocks=[0, 1]"]  # the tiny files have two blocks


def write_part_data(data: Path) -> Path:
    pf.write_partimagenet_seg(data / "PartImageNet")
    pf.write_paco(data / "paco", data / "coco" / "images")
    spin = pf.write_spin(data / "spin_build")
    (data / "spin").mkdir()
    for p in spin.iterdir():  # the annotations and maps in spin/, the images are PartImageNet's own
        if p.name != "images":
            p.rename(data / "spin" / p.name)
    pf.write_pascal116(data / "PascalPart116")
    pf.write_ade234(data / "ADE20KPart234")
    return data


@pytest.mark.slow
def test_parts_beyond_validates_on_every_level(tmp_path, monkeypatch, capsys):
    ckpt = write_beyond_checkpoints(tmp_path / "ckpt")
    data = write_part_data(write_data(tmp_path / "data"))
    monkeypatch.setenv("PARTBENCH_CKPT", str(ckpt))
    monkeypatch.setenv("PARTBENCH_DATA", str(data))
    argv = [a for o in OVERRIDES for a in ("-o", o)]
    assert cli.main(["validate", str(SPEC), *argv]) == 0
    assert f"OK — {UNITS} units" in capsys.readouterr().out
    plan = build_plan(SPEC, Plugins(), OVERRIDES)
    assert len(plan.units) == UNITS and not plan.reference
    levels = {name: (ds.hierarchy, ds.level) for name, ds in plan.datasets.items() if ds.levels}
    assert levels["spin_subpart"] == ("spin", "subpart") and levels["paco_object"] == ("paco", "object")
    assert {lvl for h, lvl in levels.values() if h == "spin"} == {"object", "part", "subpart"}
    for u in plan.units:
        assert u.encoder in ENCODERS
    seg = next(u for u in plan.units if u.task == "level_seg" and u.dataset == "spin_subpart")
    crop = next(u for u in plan.units if u.task == "part_linear" and u.dataset == "spin_subpart")
    assert type(plan.dataset_of(seg).load("test")).__name__ == "SegSamples"
    assert type(plan.dataset_of(crop).load("test")).__name__ == "CropSamples"
