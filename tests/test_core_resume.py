"""Resume sees what changed: a result is reused only when its key (core and plugin versions, identities, seed,
dataset fingerprints) is unchanged; the log says why a unit is recomputed. Results are strict JSON."""
import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from harness.plugins import Plugins
from harness.runner import run_spec

from conftest import TOY_PLUGINS


def _folder(root, n=6):
    """A tiny ImageFolder tree (the `imagenet_folder` plugin's format): two classes, train and val."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, colour in (("n01", (200, 30, 30)), ("n02", (30, 40, 200))):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{c}_{i}.png")
    return root


def _spec(tmp_path, root):
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(f"""
        encoders: {{pix: {{plugin: pixels, options: {{patch_size: 16}}}}}}
        datasets: {{imgs: {{plugin: imagenet_folder, options: {{root: {root}}}}}}}
        tasks: {{c: {{plugin: toy_centroid, options: {{split: val}}}}}}
        """))
    return p


@pytest.fixture
def plugins():
    return Plugins(plugins_dirs=[TOY_PLUGINS])


def test_editing_one_image_recomputes_the_unit_and_says_why(tmp_path, plugins):
    root = _folder(tmp_path / "data")
    spec = _spec(tmp_path, root)
    first = run_spec(spec, tmp_path / "out", plugins=plugins)
    assert first[0]["status"] == "ok" and set(first[0]["inputs"]) == {"val"}
    logged = []
    same = run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append)
    assert same.skipped == 1
    # one image edited (same file name, new content and modification time)
    img = root / "val" / "n02" / "n02_3.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    os.utime(img, ns=(os.stat(img).st_atime_ns, os.stat(img).st_mtime_ns + 10**9))
    logged.clear()
    again = run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append)
    assert again.skipped == 0 and again.forwards == 12
    assert ("[1/1] c__imgs__pix: recomputed: dataset 'imgs' split 'val' changed since the result was written "
            "(files edited, added or removed)") in logged
    assert again[0]["key"] != first[0]["key"]
    assert again[0]["metrics"]["acc"] < first[0]["metrics"]["acc"]  # the red image in the blue class


def test_a_bumped_plugin_version_recomputes_and_says_so(tmp_path, plugins, monkeypatch):
    spec = _spec(tmp_path, _folder(tmp_path / "data"))
    run_spec(spec, tmp_path / "out", plugins=plugins)
    task_cls = plugins.registry["task"]["toy_centroid"].cls
    monkeypatch.setattr(task_cls, "version", "2")
    logged = []
    again = run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append)
    assert again.skipped == 0
    assert "[1/1] c__imgs__pix: recomputed: task plugin 'toy_centroid' changed (version 1 -> 2)" in logged
    assert again[0]["plugins"]["task"]["version"] == "2" and again[0]["identity"]["task"]["version"] == "2"


def test_another_number_of_bootstrap_resamples_recomputes(tmp_path, plugins):
    spec = _spec(tmp_path, _folder(tmp_path / "data"))
    run_spec(spec, tmp_path / "out", plugins=plugins)
    logged = []
    assert run_spec(spec, tmp_path / "out", plugins=plugins, overrides=["bootstrap=0"], log=logged.append).skipped == 0
    assert "[1/1] c__imgs__pix: recomputed: the number of bootstrap resamples changed" in logged


def test_a_bumped_core_version_recomputes(tmp_path, plugins, monkeypatch):
    import harness.runner

    spec = _spec(tmp_path, _folder(tmp_path / "data"))
    run_spec(spec, tmp_path / "out", plugins=plugins)
    monkeypatch.setattr(harness.runner, "CORE_VERSION", "999")
    logged = []
    assert run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append).skipped == 0
    from harness.api import CORE_VERSION

    assert f"[1/1] c__imgs__pix: recomputed: the harness core changed (version {CORE_VERSION} -> 999)" in logged


def test_changed_options_and_older_results_are_recomputed(tmp_path, plugins):
    spec = _spec(tmp_path, _folder(tmp_path / "data"))
    run_spec(spec, tmp_path / "out", plugins=plugins)
    logged = []
    run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append,
             overrides=["encoders.pix.options.grid=4"])
    assert "[1/1] c__imgs__pix: recomputed: encoder 'pix' options changed" in logged
    path = tmp_path / "out/results/c__imgs__pix.json"
    old = json.loads(path.read_text())
    for k in ("key", "schema", "inputs", "identity"):
        old.pop(k)
    path.write_text(json.dumps(old))
    logged.clear()
    assert run_spec(spec, tmp_path / "out", plugins=plugins, log=logged.append,
                    overrides=["encoders.pix.options.grid=4"]).skipped == 0
    assert "[1/1] c__imgs__pix: recomputed: its result was written by an older partbench" in logged


def test_a_non_finite_value_is_written_as_null_with_a_warning(tmp_path, plugins, monkeypatch):
    task_cls = plugins.registry["task"]["toy_centroid"].cls
    real = task_cls.run

    def with_nan(self, ctx):
        out = real(self, ctx)
        out["metrics"]["spread"] = float("nan")
        out["details"]["ratio"] = [1.0, float("inf")]
        return out

    monkeypatch.setattr(task_cls, "run", with_nan)
    spec = _spec(tmp_path, _folder(tmp_path / "data"))
    res = run_spec(spec, tmp_path / "out", plugins=plugins)
    text = (tmp_path / "out/results/c__imgs__pix.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["metrics"]["spread"] is None and data["details"]["ratio"] == [1.0, None]
    assert data["warnings"] == ["metrics.spread: nan is not a finite number, written as null",
                                "details.ratio[1]: inf is not a finite number, written as null"]
    assert res[0]["metrics"]["spread"] is None
    for name in ("summary.json",):
        json.loads((tmp_path / "out" / name).read_text(),
                   parse_constant=lambda c: pytest.fail(f"{name}: non-strict JSON constant {c}"))


def test_fingerprints_are_never_confused_between_freed_and_new_views(tmp_path, monkeypatch):
    """A freed view's address is soon reused by a new view (CPython): a fingerprint remembered by ``id()``
    would be handed to the new view, giving it the old view's cache keys (and torchrun ranks, whose
    allocations differ, different keys). Every object keeps its own. ``id`` is made to collide here, as an
    address reuse does, so the check does not depend on the allocator."""
    import harness.features
    from harness.api import Samples
    from harness.cache import FeatureCache
    from harness.features import FeatureEngine

    monkeypatch.setattr(harness.features, "id", lambda obj: 1, raising=False)
    engine = FeatureEngine(FeatureCache(tmp_path / "cache"))
    a = Samples(["x", "y"], [0, 1], ["c0", "c1"])
    b = Samples(["z"], [1], ["c0", "c1"])
    assert engine.fingerprint(a) == a.fingerprint()
    assert engine.fingerprint(b) == b.fingerprint() != a.fingerprint()
