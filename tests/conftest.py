import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: tiny tensors on 2 cores suffer badly from oversubscription
    import torch

    torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parent
TOY_PLUGINS = TESTS / "toy_plugins"
# the example plugin package's own tests run against it installed (test_external_plugin.py), not from here
collect_ignore = ["external_plugin"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache; nothing touches ~/.cache."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # generated datasets default to $XDG_CACHE_HOME; share one folder per test session, never ~/.cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_STRICT_PLUGINS", raising=False)


@pytest.fixture
def toy_plugins():
    """A plugin manager with only the toy plugins (no built-ins): core tests stay independent of them."""
    from harness.plugins import Plugins

    return Plugins(plugins_dirs=[TOY_PLUGINS], allow=["toy"])


# ---------------------------------------------------------------- skips fail the run unless expected
# A skipped test is a test that did not run: CI (the README's test command) must not pass because of one.
# A test that may legitimately skip somewhere says so: @pytest.mark.allow_skip("why skipping is fine there").
_unexpected_skips: list[tuple[str, str]] = []


def pytest_addoption(parser):
    parser.addoption("--allow-skips", action="store_true",
                     help="partbench: do not fail the run on skips not marked allow_skip (local use only)")


def _note_skip(report):
    # a whole module skipped at collection (pytest.skip(allow_module_level=True), importorskip) has no
    # markers to consult: it is always unexpected; skip inside the tests that need it instead
    if report.skipped and not hasattr(report, "wasxfail") and "allow_skip" not in getattr(report, "keywords", {}):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _unexpected_skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def _fails_on_skips(config) -> bool:
    # under pytest-xdist the controller sees every worker's reports and decides; the workers never do
    return bool(_unexpected_skips) and not config.getoption("allow_skips") and not hasattr(config, "workerinput")


def pytest_sessionfinish(session, exitstatus):
    if _fails_on_skips(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _fails_on_skips(config):
        terminalreporter.section("unexpected skips (the run fails)", red=True)
        for nodeid, reason in _unexpected_skips:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line("a test may skip only where it is marked @pytest.mark.allow_skip(\"reason\"); "
                              "--allow-skips accepts them for a local run")
