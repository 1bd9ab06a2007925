"""Plugin loading (entry points, --plugins-dir) and the registries the hooks fill."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import pluggy

from . import hookspecs
from .api import Dataset, Encoder, HarnessError, Registration, Report, Task
from .errors import did_you_mean  # noqa: F401 - also imported from here by spec.py

GROUP = "harness"
KINDS = {"encoder": Encoder, "dataset": Dataset, "task": Task, "report": Report}
_HOOKS = {"encoder": "register_encoders", "dataset": "register_datasets", "task": "register_tasks",
          "report": "register_reports"}


class PluginLoadWarning(UserWarning):
    pass


def _import_with_compat(load):
    """Import a plugin; if it failed on this platform's torchvision packaging (a plugin that imports timm
    or torchvision at import time), apply the fix in harness.compat and import it once more, after
    dropping the modules the failed attempt left half-imported. Costs nothing for plugins that load."""
    before = set(sys.modules)
    try:
        return load()
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in set(sys.modules) - before:  # pure-Python leftovers only: torch and C extensions stay
        file = getattr(sys.modules[name], "__file__", None) or ""
        if name.split(".")[0] != "torch" and not file.endswith((".so", ".pyd")):
            del sys.modules[name]
    from .compat import prepare_torchvision

    prepare_torchvision()
    return load()


class Plugins:
    """A plugin manager plus the name -> Registration tables for each kind."""

    def __init__(self, plugins_dirs=(), strict: bool | None = None, allow: list[str] | None = None):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.strict = os.environ.get("HARNESS_STRICT_PLUGINS") == "1" if strict is None else strict
        env_allow = os.environ.get("HARNESS_LOAD_PLUGINS")
        self.allow = allow if allow is not None else (
            [a.strip() for a in env_allow.split(",") if a.strip()] if env_allow else None)
        self.origins: dict[object, str] = {}
        self.errors: list[str] = []
        self.failed: list[dict] = []  # plugins that failed to load: {"name", "error"}
        self._load_entry_points()
        for d in plugins_dirs:
            self._load_dir(Path(d))
        self._check_hook_names()
        self.pm.check_pending()
        self.registry: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        self._collect()

    # -- loading -----------------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException, origin: str | None = None) -> None:
        msg = f"plugin {what} failed to load: {type(exc).__name__}: {exc}"
        if self.strict:
            raise HarnessError(msg) from exc
        self.errors.append(msg)
        self.failed.append({"name": origin or what, "error": f"{type(exc).__name__}: {exc}"})
        warnings.warn(msg, PluginLoadWarning, stacklevel=3)

    def _check_hook_names(self) -> None:
        """A hook implementation whose name matches no harness hook (``register_encoder`` for
        ``register_encoders``) is that plugin's load failure, in one line with a did-you-mean, instead of
        pluggy's traceback; the plugin is unregistered so the others keep working."""
        known = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
        for module, origin in list(self.origins.items()):
            for caller in self.pm.get_hookcallers(module) or []:
                if caller.spec is None and caller.name not in known:
                    self.pm.unregister(module)
                    del self.origins[module]
                    hint = did_you_mean(caller.name, known) or f" (hooks: {', '.join(known)})"
                    self._fail(f"'{origin}'", HarnessError(
                        f"hook implementation '{caller.name}' matches no harness hook{hint}"), origin)
                    break

    def _register(self, module, origin: str) -> None:
        if self.pm.is_registered(module):
            return
        self.pm.register(module, name=origin)
        self.origins[module] = origin

    def _load_entry_points(self) -> None:
        # One entry point at a time, so one broken third-party plugin cannot take the CLI down.
        for ep in importlib.metadata.entry_points(group=GROUP):
            if self.allow is not None and ep.name not in self.allow:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            what = f"'{ep.name}' (distribution {dist})"
            try:
                module = _import_with_compat(ep.load)
            except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
                self._fail(what, exc, f"{dist}:{ep.name}")
                continue
            self._register(module, f"{dist}:{ep.name}")

    def _load_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise HarnessError(f"--plugins-dir {folder}: not a directory")
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            if self.allow is not None and path.stem not in self.allow:
                continue
            mod_name = f"harness_local_plugins.{path.stem}"
            def load(path=path, mod_name=mod_name):
                spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
                return module

            try:
                module = _import_with_compat(load)
            except Exception as exc:  # noqa: BLE001
                sys.modules.pop(mod_name, None)
                self._fail(f"file {path}", exc, f"file:{path}")
                continue
            self._register(module, f"file:{path}")

    # -- registration ------------------------------------------------------------------------
    def _collect(self) -> None:
        for kind, hook_name in _HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in reversed(hook.get_hookimpls()):  # registration order
                origin = self.pm.get_name(impl.plugin) or "?"
                impl.function(register=self._make_register(kind, origin))

    def _make_register(self, kind: str, origin: str):
        base = KINDS[kind]
        table = None

        def register(name: str, cls: type, description: str | None = None) -> None:
            nonlocal table
            table = self.registry[kind]
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                raise HarnessError(f"{origin}: invalid {kind} name {name!r} (letters, digits, _ and - only)")
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise HarnessError(f"{origin}: {kind} '{name}' must be a subclass of harness.{base.__name__}")
            if name in table:
                raise HarnessError(
                    f"{origin}: duplicate {kind} name '{name}' (already registered by {table[name].origin})")
            desc = description or (cls.description or (cls.__doc__ or "").strip().split("\n")[0])
            table[name] = Registration(kind, name, cls, origin, desc)

        return register

    # -- lookup --------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Registration:
        table = self.registry[kind]
        if name not in table:
            raise KeyError(f"unknown {kind} '{name}'{did_you_mean(name, table)}")
        return table[name]

    def describe(self) -> list[dict]:
        """For `harness plugins`: each loaded plugin module with its hooks and version."""
        out = []
        for module, origin in self.origins.items():
            version = self.version_of(origin)
            hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
            out.append({"name": origin, "hooks": hooks, "version": version})
        return out + [{"name": f["name"], "hooks": [], "version": self.version_of(f["name"]), "error": f["error"]}
                      for f in self.failed]

    @staticmethod
    def version_of(origin: str) -> str | None:
        """The distribution version behind an origin (``dist:entry-point``); None for loose files."""
        if origin.startswith("file:") or ":" not in origin:
            return None
        try:
            return importlib.metadata.version(origin.split(":", 1)[0])
        except importlib.metadata.PackageNotFoundError:
            return None
