"""Every hookspec is documented with its exact signature in docs/plugins.md and has a test."""
import inspect
import re
from pathlib import Path

import harness.hookspecs as hs

ROOT = Path(__file__).resolve().parents[1]


def _hookspecs():
    return [(n, f) for n, f in vars(hs).items() if callable(f) and hasattr(f, "harness_spec")]


def test_hookspecs_exist():
    assert {n for n, _ in _hookspecs()} == {"register_encoders", "register_datasets", "register_tasks",
                                         "register_reports"}


def test_every_hookspec_documented_with_exact_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for name, fn in _hookspecs():
        sig = f"{name}{inspect.signature(fn)}"
        assert f"### {sig}" in doc, f"docs/plugins.md lacks a '### {sig}' heading"


def test_every_hookspec_has_a_test():
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name, _ in _hookspecs():
        assert re.search(rf"def test_hook_{name}\b", text), f"no test_hook_{name}"
