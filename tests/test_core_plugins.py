"""Plugin manager: entry points, isolation of broken plugins, strict mode, duplicates, check_pending,
whitelist and --plugins-dir."""
import textwrap

import pytest

from harness import HarnessError
from harness.plugins import PluginLoadWarning, Plugins

from conftest import TOY_PLUGINS


def test_builtins_load_through_entry_points():
    import importlib.metadata

    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="harness")}
    assert "baselines" in eps and eps["baselines"].value.startswith("partbench_plugins.")
    assert all(ep.dist.name == "partbench" for name, ep in eps.items() if ep.value.startswith("partbench_plugins."))
    p = Plugins(allow=["baselines"])
    assert {"random_vit", "pixels"} <= set(p.registry["encoder"])
    assert p.registry["encoder"]["random_vit"].origin == "partbench:baselines"


def test_plugins_folder_is_not_installed_as_generic_plugins_module(tmp_path):
    """The installed distribution provides plugins/ as `partbench_plugins` only. Asked from a folder outside
    the checkout: `python -m pytest` puts the checkout itself first on sys.path, where its plugins/ folder is
    importable as `plugins` whatever the installation does (and the checkout's own partbench.egg-info shadows
    the installed metadata)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import importlib.metadata as m, importlib.util as u, json\n"
             "s = u.find_spec('plugins')\n"
             "d = m.distribution('partbench')\n"
             "print(json.dumps({'origin': s and (s.origin or list(s.submodule_search_locations)[0]),\n"
             "                  'top_level': (d.read_text('top_level.txt') or '').split(),\n"
             "                  'files': [str(d.locate_file(f)) for f in d.files or []]}))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    installed = json.loads(r.stdout)
    assert "partbench_plugins" in installed["top_level"] and "plugins" not in installed["top_level"]
    checkout_plugins = Path(__file__).resolve().parents[1] / "plugins"
    if installed["origin"] is not None:  # another distribution may own a `plugins` module; not this one
        origin = Path(installed["origin"]).resolve()
        assert not origin.is_relative_to(checkout_plugins), origin  # editable install mapping `plugins`
        assert origin not in {Path(f).resolve() for f in installed["files"]}, origin  # wheel install


def test_whitelist_limits_entry_points(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "baselines")
    p = Plugins()
    assert set(p.registry["encoder"]) == {"random_vit", "pixels"}
    assert p.registry["task"] == {}


def test_plugins_dir_loads_loose_files(toy_plugins):
    assert toy_plugins.registry["encoder"]["toy_stats"].origin.startswith("file:")
    assert "toy_colours" in toy_plugins.registry["dataset"]
    assert "toy_centroid" in toy_plugins.registry["task"]


def _write(tmp_path, name, body):
    d = tmp_path / "plugs"
    d.mkdir(exist_ok=True)
    (d / f"{name}.py").write_text(textwrap.dedent(body))
    return d


BROKEN = "raise ImportError('this plugin is broken on purpose')\n"


def test_broken_plugin_is_isolated_with_a_warning(tmp_path):
    d = _write(tmp_path, "broken", BROKEN)
    with pytest.warns(PluginLoadWarning, match=r"broken\.py.*ImportError: this plugin is broken on purpose"):
        p = Plugins(plugins_dirs=[TOY_PLUGINS, d], allow=["toy", "broken"])
    assert "toy_stats" in p.registry["encoder"]  # the others still load


def test_broken_plugin_is_fatal_in_strict_mode(tmp_path, monkeypatch):
    d = _write(tmp_path, "broken", BROKEN)
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    with pytest.raises(HarnessError, match="broken.py failed to load"):
        Plugins(plugins_dirs=[d], allow=["broken"])


def test_duplicate_names_are_rejected(tmp_path):
    d = _write(tmp_path, "dup", """
        from harness import hookimpl
        from harness_local_plugins.toy import ToyStats
        @hookimpl
        def register_encoders(register):
            register("toy_stats", ToyStats)
        """)
    with pytest.raises(HarnessError, match="duplicate encoder name 'toy_stats'"):
        Plugins(plugins_dirs=[TOY_PLUGINS, d], allow=["toy", "dup"])


def test_registering_a_non_encoder_class_is_rejected(tmp_path):
    d = _write(tmp_path, "wrongtype", """
        from harness import hookimpl
        @hookimpl
        def register_encoders(register):
            register("nope", dict)
        """)
    with pytest.raises(HarnessError, match="must be a subclass of harness.Encoder"):
        Plugins(plugins_dirs=[d], allow=["wrongtype"])


TYPO = """
    from harness import hookimpl
    @hookimpl
    def register_encoder(register):  # missing the final 's'
        pass
    """


def test_a_misspelled_hook_is_one_line_with_did_you_mean(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    d = _write(tmp_path, "typo", TYPO)
    with pytest.warns(PluginLoadWarning) as caught:
        p = Plugins(plugins_dirs=[TOY_PLUGINS, d], allow=["toy", "typo"])
    (msg,) = [str(w.message) for w in caught]
    assert "typo.py" in msg and "hook implementation 'register_encoder' matches no harness hook; did you mean " \
        "'register_encoders'?" in msg and "\n" not in msg
    assert "toy_stats" in p.registry["encoder"]  # the other plugins keep working
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    with pytest.raises(HarnessError, match=r"typo\.py' failed to load: HarnessError: hook implementation "
                                           r"'register_encoder' matches no harness hook; did you mean"):
        Plugins(plugins_dirs=[d], allow=["typo"])
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "typo")
    assert main(["ls", "encoders", "--plugins-dir", str(d)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'register_encoders'?" in err


def test_harness_plugins_lists_failed_plugins_with_their_error(tmp_path, monkeypatch, capsys):
    import json

    from harness.cli import main

    d = _write(tmp_path, "broken", BROKEN)
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "toy,broken")
    assert main(["plugins", "--plugins-dir", str(TOY_PLUGINS), "--plugins-dir", str(d)]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    bad = listed[f"file:{d / 'broken.py'}"]
    assert bad["error"] == "ImportError: this plugin is broken on purpose" and bad["hooks"] == []
    assert "error" not in listed[f"file:{TOY_PLUGINS / 'toy.py'}"]


def test_did_you_mean_on_lookup(toy_plugins):
    with pytest.raises(KeyError, match="did you mean 'toy_stats'"):
        toy_plugins.get("encoder", "toy_stat")


def test_describe_lists_hooks_and_versions(toy_plugins):
    p = Plugins(plugins_dirs=[TOY_PLUGINS], allow=["toy", "baselines"])
    desc = {d["name"]: d for d in p.describe()}
    assert desc["partbench:baselines"]["hooks"] == ["register_encoders"]
    assert desc["partbench:baselines"]["version"]
    toy = next(v for k, v in desc.items() if k.startswith("file:"))
    assert toy["hooks"] == ["register_datasets", "register_encoders", "register_tasks"]


# Meta-tests in the datasette style: one test per hook, named test_hook_<hook>. A plugin whose hook records
# every call: the plugin manager calls it once, with the core's register callback, which files the class
# under that hook's kind and refuses another kind's class.
RECORDER = """
    from harness import hookimpl, {base}, {other}

    calls = []
    refusals = []


    class Recorded({base}):
        \"\"\"First docstring line.\"\"\"


    class OtherKind({other}):
        pass


    @hookimpl
    def {hook}(register):
        calls.append(register)
        register("recorded", Recorded, "from the recorder")
        for wrong in (OtherKind, int):
            try:
                register("wrong", wrong)
            except Exception as exc:
                refusals.append(str(exc))
    """


def _check_hook(tmp_path, hook, kind, base, other):
    import sys

    d = _write(tmp_path, "recorder", RECORDER.format(hook=hook, base=base, other=other))
    p = Plugins(plugins_dirs=[d], allow=["recorder"])
    module = sys.modules["harness_local_plugins.recorder"]
    origin = f"file:{d / 'recorder.py'}"
    assert len(module.calls) == 1  # the hook ran once; what its register did is the core's, below
    reg = p.registry[kind]["recorded"]
    assert (reg.kind, reg.name, reg.cls, reg.origin, reg.description) == (
        kind, "recorded", module.Recorded, origin, "from the recorder")
    assert module.refusals == [f"{origin}: {kind} 'wrong' must be a subclass of harness.{base}"] * 2
    assert {k: list(t) for k, t in p.registry.items()} == {k: ["recorded"] if k == kind else [] for k in p.registry}


def test_hook_register_encoders(tmp_path):
    _check_hook(tmp_path, "register_encoders", "encoder", "Encoder", "Task")


def test_hook_register_datasets(tmp_path):
    _check_hook(tmp_path, "register_datasets", "dataset", "Dataset", "Encoder")


def test_hook_register_tasks(tmp_path):
    _check_hook(tmp_path, "register_tasks", "task", "Task", "Dataset")


def _broken_distribution(tmp_path):
    """A distribution whose `harness` entry point raises on import, visible only via PYTHONPATH."""
    site = tmp_path / "site"
    info = site / "partbench_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: partbench-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nbroken_ep = partbench_broken\n")
    (site / "partbench_broken.py").write_text("raise ImportError('no module named torch_magic')\n")
    return site


def test_broken_entry_point_warns_with_distribution_and_rest_load(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    site = _broken_distribution(tmp_path)
    exe = Path(sys.executable).with_name("harness")
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([str(exe), "ls", "encoders"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    assert ("warning: plugin 'broken_ep' (distribution partbench-broken) failed to load: "
            "ImportError: no module named torch_magic") in r.stderr
    assert "random_vit" in r.stdout and "dino" in r.stdout
    strict = subprocess.run([str(exe), "ls", "encoders"], capture_output=True, text=True,
                            env={**env, "HARNESS_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr.strip() == ("error: plugin 'broken_ep' (distribution partbench-broken) failed to load: "
                                     "ImportError: no module named torch_magic")
