"""A real external plugin package is built, pip-installed into this environment, discovered through
its entry point and used by a spec run; then uninstalled."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TESTS, TOY_PLUGINS

TEMPLATE = TESTS / "external_plugin"


def _pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
                          capture_output=True, text=True)


@pytest.fixture
def installed_hello(tmp_path):
    src = tmp_path / "partbench-hello"
    shutil.copytree(TEMPLATE, src)
    r = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        _pip("uninstall", "-y", "partbench-hello")


def _harness(*args, env=None):
    exe = Path(sys.executable).with_name("harness")
    return subprocess.run([str(exe), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_external_plugin_installed_discovered_and_used(installed_hello, tmp_path):
    ls = _harness("ls", "encoders")
    assert ls.returncode == 0, ls.stderr
    line = next(l for l in ls.stdout.splitlines() if l.startswith("hello_histogram"))
    assert "partbench-hello:hello" in line and "colour histograms" in line.lower()
    plugins = json.loads(_harness("plugins").stdout)
    assert {"name": "partbench-hello:hello", "hooks": ["register_encoders"], "version": "0.1.0"} in plugins

    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        encoders:
          hist: {plugin: hello_histogram, options: {bins: 3}}
        datasets:
          colours: {plugin: toy_colours, options: {n: 9}}
        tasks:
          centroid: {plugin: toy_centroid}
        """))
    env = {"HARNESS_LOAD_PLUGINS": "hello,toy"}
    run = _harness("run", str(spec), "--out", str(tmp_path / "out"), "--plugins-dir", str(TOY_PLUGINS),
                   "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    res = json.loads((tmp_path / "out/results/centroid__colours__hist.json").read_text())
    assert res["status"] == "ok" and res["forwards"] == 9 and res["metrics"]["acc"] > 90
    assert res["config"]["encoder"]["origin"] == "partbench-hello:hello"
    bad = _harness("validate", str(spec), "-o", "encoders.hist.options.bins=40", "--plugins-dir", str(TOY_PLUGINS),
                   env=env)
    assert bad.returncode == 2 and "encoders.hist.options.bins: must be between 2 and 16 (got 40)" in bad.stderr


def test_the_plugins_own_conformance_test_passes(installed_hello):
    """tests/test_hello.py of the example package (docs/plugins.md) runs the conformance kit on it, installed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hello_tests", TEMPLATE / "tests" / "test_hello.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_hello_histogram_conforms()


def test_docs_show_the_tested_plugin_verbatim():
    doc = (TESTS.parent / "docs" / "plugins.md").read_text()
    for f in ("pyproject.toml", "partbench_hello/__init__.py", "tests/test_hello.py"):
        assert (TEMPLATE / f).read_text().strip() in doc, f"docs/plugins.md does not show {f} as tested"


TIMM_PLUGIN = '''"""A third-party plugin that imports timm (hence torchvision) when it is imported."""
import timm

from harness import Encoder, hookimpl


class TimmVersion(Encoder):
    """Reports nothing useful: it only proves timm imported."""

    representations = ("cls",)
    description = f"built against timm {timm.__version__}"


@hookimpl
def register_encoders(register):
    register("timm_importer", TimmVersion)
'''


@pytest.fixture
def installed_timm_importer(tmp_path):
    src = tmp_path / "partbench-timm-importer"
    (src / "partbench_timm_importer").mkdir(parents=True)
    (src / "partbench_timm_importer" / "__init__.py").write_text(TIMM_PLUGIN)
    (src / "pyproject.toml").write_text((TEMPLATE / "pyproject.toml").read_text()
                                        .replace("partbench-hello", "partbench-timm-importer")
                                        .replace('hello = "partbench_hello"', 'timm_importer = "partbench_timm_importer"')
                                        .replace('packages = ["partbench_hello"]', 'packages = ["partbench_timm_importer"]'))
    r = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        _pip("uninstall", "-y", "partbench-timm-importer")


def test_an_external_plugin_that_imports_timm_loads(installed_timm_importer):
    """torchvision's compiled ops do not match this torch: the compat fix must reach third-party plugins."""
    ls = _harness("ls", "encoders", env={"HARNESS_STRICT_PLUGINS": "1"})
    assert ls.returncode == 0, ls.stderr
    assert "failed to load" not in ls.stderr
    line = next(l for l in ls.stdout.splitlines() if l.startswith("timm_importer"))
    assert "partbench-timm-importer:timm_importer" in line and "built against timm" in line
