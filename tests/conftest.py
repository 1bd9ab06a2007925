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
