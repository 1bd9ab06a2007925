"""The part-dataset example in docs/plugins.md runs as documented: the public crop rule keeps and drops
as the official code, the result records the counts, and an edited keypoint (same keys) is re-encoded."""
import json
import re
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from harness.plugins import Plugins
from harness.runner import run_spec

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def example_code() -> str:
    blocks = re.findall(r"```python\n(# my_plugins/csv_parts\.py\n.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/plugins.md must show the csv_parts example once"
    return blocks[0]


def write_data(root: Path, beak_x: float = 100.0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["image,part,x,y"]
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(root / f"bird{i}.jpg")
        # eye-beak 60 px apart (kept: d_min/2 = 30), tail 150 px away from both (kept), and a wing
        # 10 px from the eye (too close: d_min/2 = 5 -> eye and wing dropped)
        rows += [f"bird{i}.jpg,beak,{beak_x},40", f"bird{i}.jpg,tail,100,190"]
        if i == 0:
            rows += ["bird0.jpg,eye,40,40", "bird0.jpg,wing,50,40"]
    (root / "keypoints.csv").write_text("\n".join(rows) + "\n")


def test_the_documented_csv_part_dataset_runs(tmp_path):
    plugins_dir = tmp_path / "my_plugins"
    plugins_dir.mkdir()
    (plugins_dir / "csv_parts.py").write_text(example_code())
    data = tmp_path / "birds"
    write_data(data)
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        encoders: {{pixels: {{plugin: pixels}}}}
        datasets: {{birds: {{plugin: csv_parts, options: {{root: {data}}}}}}}
        tasks: {{r: {{plugin: retrieval, options: {{split: all}}}}}}
    """))
    plugins = Plugins(plugins_dirs=[plugins_dir])
    (res,) = run_spec(spec, tmp_path / "out", plugins=plugins, cache_dir=tmp_path / "cache")
    assert res["status"] == "ok", res["error"]
    summary = res["details"]["dataset_summary"]
    assert summary["kept"] == 8 and summary["dropped_too_close"] == 2  # eye and wing of bird0
    assert res["details"]["n_items"] == 8 and res["forwards"] == 8
    # an edited keypoint with the same keys: new crops, new features (never the old cache entry)
    write_data(data, beak_x=110.0)
    (again,) = run_spec(spec, tmp_path / "out2", plugins=plugins, cache_dir=tmp_path / "cache")
    assert again["status"] == "ok" and again["forwards"] == 8
