"""pretrain/tiny.py is deterministic: a shortened schedule run twice (separate processes, different numbers of
drawing processes) writes bit-identical weights, and on the machine type that made the shipped weights it
matches the checksums recorded there (tests/data/tiny_short_schedule.json)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHORT = json.loads((Path(__file__).parent / "data" / "tiny_short_schedule.json").read_text())


def _pretrain(out: Path, render_workers: int) -> dict:
    cmd = [sys.executable, str(ROOT / "pretrain" / "tiny.py"), "--out", str(out), *SHORT["args"],
           "--render-workers", str(render_workers), "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return {m: hashlib.sha256((out / f"{m}.safetensors").read_bytes()).hexdigest()
            for m in ("supervised", "contrastive", "mim")}


def test_short_schedule_is_bit_identical(tmp_path):
    first = _pretrain(tmp_path / "a", render_workers=1)
    second = _pretrain(tmp_path / "b", render_workers=2)
    assert first == second
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["methods"]["mim"]["sha256"] == first["mim"] and manifest["threads"] == 2
    same_machine_type = (SHORT["torch"] == torch.__version__
                         and SHORT["cpu_capability"] == torch.backends.cpu.get_cpu_capability())
    if not same_machine_type:
        pytest.skip(f"recorded on torch {SHORT['torch']} / {SHORT['cpu_capability']}; this machine has "
                    f"{torch.__version__} / {torch.backends.cpu.get_cpu_capability()} (float results may differ)")
    assert first == SHORT["sha256"]
