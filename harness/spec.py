"""YAML experiment specs: include/merge, ${ENV} references, -o overrides, validation into a Plan.

Merge semantics of ``include:`` (a path or a list of paths, relative to the including file):
included files are merged first, in order, then the including file on top. Mappings merge key by key,
recursively; lists and scalars replace. A key set to ``null`` in the including file removes it.
Everything is validated before any computation; every problem is one ``SpecError`` line naming the
spec file and the key.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .api import REQUIRED, HarnessError, Option, SpecError
from .cache import cache_dir_in_use
from .plugins import Plugins, did_you_mean

TOP_KEYS = {"include", "description", "encoders", "datasets", "tasks", "run", "seed", "device",
            "output_dir", "cache_dir", "reference", "extraction", "bootstrap", "bootstrap_by"}
BOOTSTRAP_BY = ("item", "image")
#: ``extraction:`` keys -> (smallest value, meaning); each is an integer
EXTRACTION_KEYS = {"workers": (0, "data-loader worker processes (0: decode in the main process)"),
                   "encoders_per_pass": (1, "encoders fed by one pass over the data"),
                   "threads": (1, "torch threads of the main process (default: from the cores; harness.threads)")}
ENTRY_KEYS = {"plugin", "options"}
SECTIONS = {"encoders": "encoder", "datasets": "dataset", "tasks": "task"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(node: Any, where: str, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _substitute_env(v, where, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, where, f"{key}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        def repl(m: re.Match) -> str:
            val = os.environ.get(m.group(1))
            if val is None:
                if m.group(2) is None:
                    raise SpecError(f"{where}: {key}: environment variable {m.group(1)} is not set "
                                    f"(set it, or write ${{{m.group(1)}:-default}})")
                return os.path.expanduser(m.group(2))
            return val

        return _ENV.sub(repl, node)
    return node


def merge(base: Any, top: Any) -> Any:
    """Recursive mapping merge; lists and scalars in ``top`` replace; ``None`` deletes."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for k, v in top.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(out.get(k), v)
        return out
    return copy.deepcopy(top)


#: nodes a spec document may hold with its aliases expanded (specs/paper.yaml has about 1,400); a
#: "billion laughs" document is refused before anything walks the expanded tree
MAX_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YAMLProblem(yaml.YAMLError):
    """A spec-specific YAML problem at a line (1-based)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (YAML says keys are unique; PyYAML keeps the
    last silently) and documents whose aliases expand past ``MAX_EXPANDED_NODES`` nodes or into themselves.
    Merge keys (``<<: *base``) still work: the keys they bring in may be set again beside them."""

    def flatten_mapping(self, node):
        # before merging (which rewrites node.value): only the keys written in this mapping
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in first:
                    raise _YAMLProblem(line, f"duplicate key '{key}' (first at line {first[key]})")
                first[key] = line
        super().flatten_mapping(node)

    def construct_document(self, node):
        self._checked = set()
        self._check_expansion(node)
        return super().construct_document(node)

    @staticmethod
    def _check_expansion(root) -> None:
        """Count the nodes of the document with every alias expanded, each distinct node once (linear
        in the written document), and stop at the limit or at an alias inside itself."""
        size: dict = {}
        on_path: set = set()

        def count(node) -> int:
            if id(node) in size:
                return size[id(node)]
            if id(node) in on_path:
                raise _YAMLProblem(node.start_mark.line + 1, "an alias refers to a node that contains it "
                                   "(a recursive structure cannot be a spec)")
            on_path.add(id(node))
            n = 1
            if isinstance(node, yaml.SequenceNode):
                n += sum(count(v) for v in node.value)
            elif isinstance(node, yaml.MappingNode):
                n += sum(count(k) + count(v) for k, v in node.value)
            on_path.discard(id(node))
            if n > MAX_EXPANDED_NODES:
                raise _YAMLProblem(node.start_mark.line + 1, f"aliases expand this document past "
                                   f"{MAX_EXPANDED_NODES:,} nodes (a 'billion laughs' document?)")
            size[id(node)] = n
            return n

        count(root)


def _load_yaml(text: str, path: Path):
    """The YAML document in ``text`` (from ``path``), or one SpecError line naming the file and line."""
    try:
        return yaml.load(text, Loader=_SpecLoader)
    except _YAMLProblem as exc:
        raise SpecError(f"{path}: line {exc.line}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def _read_yaml(path: Path, stack: tuple = ()) -> dict:
    if path.resolve() in stack:
        raise SpecError(f"{path}: include cycle: {' -> '.join(str(p) for p in stack + (path.resolve(),))}")
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    data = _load_yaml(path.read_text(), path) or {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping, got {type(data).__name__}")
    data = _substitute_env(data, str(path))
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError(f"{path}: include: expected a path or a list of paths")
    merged: dict = {}
    for inc in includes:
        target = path.parent / inc
        if not target.is_file():
            raise SpecError(f"{path}: include: {inc}: spec file not found (looked for {target})")
        merged = merge(merged, _read_yaml(target, stack + (path.resolve(),)))
    return merge(merged, data)


def apply_override(data: dict, assignment: str, where: str) -> None:
    """``-o encoders.vit.options.depth=4``: the value is parsed as YAML."""
    if "=" not in assignment:
        raise SpecError(f"{where}: override '{assignment}': expected path.to.key=value")
    path, raw = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise SpecError(f"{where}: override '{assignment}': empty key path")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


ENTRY_SECTIONS = ("encoders", "datasets", "tasks")


def _check_override_target(data: dict, assignment: str, where: str) -> None:
    """An override must land on something the spec defines: ``tasks.no_such_task.options.x=3`` would
    otherwise create an entry nobody runs and the typo would go unnoticed."""
    keys = [k for k in assignment.split("=", 1)[0].strip().split(".") if k]
    if len(keys) >= 2 and keys[0] in ENTRY_SECTIONS:
        section = data.get(keys[0]) if isinstance(data.get(keys[0]), dict) else {}
        if keys[1] not in section:
            raise SpecError(f"{where}: override '{assignment}': {keys[0]}.{keys[1]} is not defined by the spec"
                            + (did_you_mean(keys[1], list(section)) or
                               f" (it defines: {', '.join(section) or 'none'})"))
    elif keys and keys[0] not in TOP_KEYS:
        raise SpecError(f"{where}: override '{assignment}': unknown top-level key '{keys[0]}'"
                        + did_you_mean(keys[0], sorted(TOP_KEYS)))


def load_raw(path: str | os.PathLike, overrides=()) -> dict:
    path = Path(path)
    data = _read_yaml(path)
    for o in overrides:
        _check_override_target(data, o, f"{path} (-o)")
        apply_override(data, o, f"{path} (-o)")
    return data


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            list: "a list", dict: "a mapping"}.get(t, t.__name__)


def check_option(opt: Option, value: Any, where: str, disk: bool = True) -> Any:
    """The option's value checked (type, choices, ``check``) and normalised; ``disk``: also that a
    ``must_exist`` path exists."""
    if value is None and opt.nullable:
        return None
    t = opt.type
    ok = isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise SpecError(f"{where}: expected {_type_name(t)}, got {type(value).__name__} {value!r}")
    if opt.choices is not None and value not in opt.choices:
        raise SpecError(f"{where}: {value!r} is not one of {list(opt.choices)}"
                        + (did_you_mean(value, [str(c) for c in opt.choices]) if isinstance(value, str) else ""))
    if opt.path is not None:
        value = os.path.expanduser(str(value))
        p = Path(value)
        if opt.must_exist and disk:
            if not p.exists():
                raise SpecError(f"{where}: {opt.path if opt.path != 'any' else 'path'} not found: {value}")
            if opt.path == "file" and not p.is_file():
                raise SpecError(f"{where}: expected a file, got a directory: {value}")
            if opt.path == "dir" and not p.is_dir():
                raise SpecError(f"{where}: expected a directory: {value}")
    if opt.check is not None:
        msg = opt.check(value)
        if msg:
            raise SpecError(f"{where}: {msg} (got {value!r})")
    return value


def validate_options(schema: dict[str, Option], given: Any, where: str, disk: bool = True) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SpecError(f"{where}: expected a mapping of options, got {type(given).__name__}")
    for k in given:
        if k not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise SpecError(f"{where}.{k}: unknown option{did_you_mean(k, schema)} (known: {known})")
    out = {}
    for k, opt in schema.items():
        if k in given:
            out[k] = check_option(opt, given[k], f"{where}.{k}", disk)
        elif opt.default is REQUIRED:
            raise SpecError(f"{where}.{k}: missing required option ({opt.help or _type_name(opt.type)})")
        else:
            out[k] = copy.deepcopy(opt.default)
    return out


@dataclass
class Unit:
    encoder: str
    dataset: str
    task: str

    @property
    def id(self) -> str:
        return f"{self.task}__{self.dataset}__{self.encoder}"


@dataclass
class Plan:
    path: Path
    raw: dict
    encoders: dict
    datasets: dict
    tasks: dict
    units: list[Unit]
    seed: int = 0
    device: str = "auto"
    output_dir: str | None = None
    cache_dir: str | None = None
    config: dict = field(default_factory=dict)
    #: published numbers to show beside ours: {task: {dataset: {encoder: {metric: value}}}}
    reference: dict = field(default_factory=dict)
    #: feature extraction settings: workers, encoders_per_pass, threads (absent = automatic)
    extraction: dict = field(default_factory=dict)
    #: bootstrap resamples per unit for the confidence intervals (0: none)
    bootstrap: int = 1000
    #: what a resample draws: "item" (queries, test items, images) or "image" (the items of one source image
    #: together, where the task gives its items' images: part and object crops)
    bootstrap_by: str = "item"

    def bootstrap_identity(self) -> dict:
        """What enters result keys and configs beside B: nothing for the default, so older results stay valid."""
        return {} if self.bootstrap_by == "item" else {"bootstrap_by": self.bootstrap_by}

    def unit_reference(self, unit: Unit) -> dict:
        return self.reference.get(unit.task, {}).get(unit.dataset, {}).get(unit.encoder, {})

    def dataset_of(self, unit: Unit):
        """The unit's dataset as its task sees it (``Dataset.serve`` of the task's ``samples_type``)."""
        return self.datasets[unit.dataset].serve(self.tasks[unit.task].samples_type)

    def unit_config(self, unit: Unit) -> dict:
        c = self.config
        return {"encoder": {"name": unit.encoder, **c["encoders"][unit.encoder]},
                "dataset": {"name": unit.dataset, **c["datasets"][unit.dataset]},
                "task": {"name": unit.task, **c["tasks"][unit.task]},
                "seed": self.seed, "bootstrap": self.bootstrap, **self.bootstrap_identity()}


def _check_device_available(device: str, where: str) -> None:
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise SpecError(f"{where}: device: '{device}' requested but CUDA is not available on this machine "
                        "(use auto or cpu)")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise SpecError(f"{where}: device: '{device}' requested but this machine has "
                        f"{torch.cuda.device_count()} CUDA device(s)")


def build_plan(path: str | os.PathLike, plugins: Plugins, overrides=()) -> Plan:
    path = Path(path)
    where = str(path)
    raw = load_raw(path, overrides)
    for k in raw:
        if k not in TOP_KEYS:
            raise SpecError(f"{where}: {k}: unknown top-level key{did_you_mean(k, TOP_KEYS)}")
    entries: dict = {}
    for section in SECTIONS:
        entries[section] = raw.get(section) or {}
        if not isinstance(entries[section], dict) or not entries[section]:
            raise SpecError(f"{where}: {section}: expected a non-empty mapping of name -> {{plugin, options}}")
    units = _expand_runs(raw.get("run"), entries, where)
    used = {"encoders": {u.encoder for u in units}, "datasets": {u.dataset for u in units},
            "tasks": {u.task for u in units}}
    config: dict = {}
    instances: dict = {}
    for section, kind in SECTIONS.items():
        config[section], instances[section] = {}, {}
        # every entry is checked in shape (plugin, option names, types, choices, checks), so a typo in one
        # the run does not use is reported too; only those it uses are checked against the disk (paths,
        # the plugin's validate()) and built: a spec that narrows `run` need not have every other dataset
        # or checkpoint of an included spec on disk
        failed: list[str] = []
        for name, entry in entries[section].items():
            key = f"{section}.{name}"
            entry = {} if entry is None else entry
            if not isinstance(entry, dict):
                raise SpecError(f"{where}: {key}: expected a mapping with 'plugin' and 'options'")
            for k in entry:
                if k not in ENTRY_KEYS:
                    raise SpecError(f"{where}: {key}.{k}: unknown key{did_you_mean(k, ENTRY_KEYS)} "
                                    "(an entry has 'plugin' and 'options')")
            plugin_name = entry.get("plugin", name)
            try:
                reg = plugins.get(kind, str(plugin_name))
            except KeyError as exc:
                raise SpecError(f"{where}: {key}.plugin: {exc.args[0]}") from None
            opts = validate_options(reg.cls.option_schema(), entry.get("options"), f"{where}: {key}.options",
                                    disk=name in used[section])
            if name not in used[section]:
                continue
            try:
                obj = reg.cls(str(name), **opts)
                obj.validate()
            except (ValueError, TypeError, HarnessError) as exc:
                failed.append(f"{where}: {key}.options: {exc}")  # every entry's, one line each (e.g. each
                continue  # hub model missing from the local cache), raised after the section
            obj.plugin_name = reg.name
            instances[section][name] = obj
            config[section][name] = {"plugin": reg.name, "origin": reg.origin, "options": opts}
        if failed:
            raise SpecError("\n".join(failed))
    cache_dir = raw.get("cache_dir") if isinstance(raw.get("cache_dir"), str) else None
    with cache_dir_in_use(cache_dir, unless_chosen=True):  # what the checks store follows the spec's cache
        _check_units(units, instances, where)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"{where}: seed: expected an integer, got {seed!r}")
    device = raw.get("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise SpecError(f"{where}: device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    _check_device_available(str(device), where)
    for k in ("output_dir", "cache_dir"):
        if k in raw and not isinstance(raw[k], str):
            raise SpecError(f"{where}: {k}: expected a path string")
    reference = _check_reference(raw.get("reference"), entries, where)
    extraction = raw.get("extraction") or {}
    if not isinstance(extraction, dict):
        raise SpecError(f"{where}: extraction: expected a mapping with {', '.join(EXTRACTION_KEYS)}")
    for k, v in extraction.items():
        if k not in EXTRACTION_KEYS:
            raise SpecError(f"{where}: extraction.{k}: unknown key{did_you_mean(k, EXTRACTION_KEYS)}")
        least, meaning = EXTRACTION_KEYS[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise SpecError(f"{where}: extraction.{k}: expected an integer >= {least} ({meaning}), got {v!r}")
    resamples = raw.get("bootstrap", 1000)
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 0 or 0 < resamples < 100:
        raise SpecError(f"{where}: bootstrap: expected the number of bootstrap resamples, 0 (no intervals) or "
                        f"at least 100 (default 1000), got {resamples!r}")
    by = raw.get("bootstrap_by", "item")
    if by not in BOOTSTRAP_BY:
        raise SpecError(f"{where}: bootstrap_by: expected {' or '.join(BOOTSTRAP_BY)} (what one resample draws), got "
                        f"{by!r}{did_you_mean(str(by), BOOTSTRAP_BY)}")
    return Plan(path, raw, instances["encoders"], instances["datasets"], instances["tasks"], units, seed,
                device, raw.get("output_dir"), raw.get("cache_dir"), config, reference, dict(extraction), resamples,
                by)


def _check_units(units, instances: dict, where: str) -> None:
    """Every unit's task accepts its encoder and dataset, and every split it reads passes the dataset's cheap
    data checks (once per dataset entry and split)."""
    checked: set = set()
    for u in units:
        enc, task = instances["encoders"][u.encoder], instances["tasks"][u.task]
        try:
            ds = instances["datasets"][u.dataset].serve(task.samples_type)
            task.check(enc, ds)
        except (ValueError, HarnessError) as exc:  # HarnessError: e.g. a checkpoint read to check support
            raise SpecError(f"{where}: tasks.{u.task} on encoder '{u.encoder}', dataset '{u.dataset}': {exc}") from None
        # cheap data checks of every split the unit will read (annotation files exist, ...), once each
        try:
            splits = {r.split for r in task.requests(enc, ds)}
        except (ValueError, HarnessError) as exc:
            raise SpecError(f"{where}: tasks.{u.task} on encoder '{u.encoder}', dataset '{u.dataset}': {exc}") from None
        splits |= {task.opts[k] for k in ("split", "train_split", "test_split") if isinstance(task.opts.get(k), str)}
        for split in sorted(splits - {s for d, s in checked if d == id(ds)}):
            checked.add((id(ds), split))
            try:
                ds.check_split(split)
            except (ValueError, HarnessError) as exc:
                raise SpecError(f"{where}: datasets.{u.dataset} (split '{split}', read by tasks.{u.task}): {exc}") from None


def _check_reference(ref: Any, entries: dict, where: str) -> dict:
    """``reference: {task: {dataset: {encoder: {metric: number}}}}`` with names defined in the spec."""
    if ref is None:
        return {}
    levels = [("tasks", "task"), ("datasets", "dataset"), ("encoders", "encoder")]

    def walk(node, depth, key):
        if not isinstance(node, dict):
            raise SpecError(f"{where}: {key}: expected a mapping")
        for name, sub in node.items():
            k = f"{key}.{name}"
            if depth < 3:
                section = levels[depth][0]
                if name not in entries[section]:
                    raise SpecError(f"{where}: {k}: '{name}' is not defined in {section}"
                                    f"{did_you_mean(str(name), entries[section])}")
                walk(sub, depth + 1, k)
            elif not isinstance(sub, (int, float)) or isinstance(sub, bool):
                raise SpecError(f"{where}: {k}: expected a number, got {sub!r}")

    walk(ref, 0, "reference")
    return ref


def _expand_runs(runs: Any, entries: dict, where: str) -> list[Unit]:
    if runs is None:
        runs = [{}]
    if isinstance(runs, dict):
        runs = [runs]
    if not isinstance(runs, list):
        raise SpecError(f"{where}: run: expected a list of {{encoders, datasets, tasks}} blocks")
    units, seen = [], set()
    for i, block in enumerate(runs):
        if not isinstance(block, dict):
            raise SpecError(f"{where}: run[{i}]: expected a mapping with encoders/datasets/tasks lists")
        picked = {}
        for section in SECTIONS:
            names = block.get(section, list(entries[section]))
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list):
                raise SpecError(f"{where}: run[{i}].{section}: expected a list of names")
            for n in names:
                if n not in entries[section]:
                    raise SpecError(f"{where}: run[{i}].{section}: '{n}' is not defined in {section}"
                                    f"{did_you_mean(str(n), entries[section])}")
            picked[section] = names
        for k in block:
            if k not in SECTIONS:
                raise SpecError(f"{where}: run[{i}].{k}: unknown key{did_you_mean(k, SECTIONS)}")
        # dataset-major, then encoder: each encoder loads once per dataset, features are reused by tasks
        for d in picked["datasets"]:
            for e in picked["encoders"]:
                for t in picked["tasks"]:
                    u = Unit(e, d, t)
                    if u.id not in seen:
                        seen.add(u.id)
                        units.append(u)
    if not units:
        raise SpecError(f"{where}: run: the plan has no units")
    return units
