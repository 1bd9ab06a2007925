"""The declared result: one JSON file per unit (``results/<task>__<dataset>__<encoder>.json``).

``RESULT_SCHEMA`` is a JSON Schema (draft 2020-12) of every field; docs/results.md documents each one, and the
test suite validates every file the demo writes against it with the ``jsonschema`` package. ``check`` is the
small validator the harness itself uses when it reads results back (``harness report``, resume): enough of
JSON Schema for this schema (type, properties, required, additionalProperties, items, enum), one line per
problem naming the file and the field.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import HarnessError

SCHEMA_VERSION = 1

_NAME = {"type": "string", "minLength": 1}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_ENTRY = {"type": "object", "required": ["name", "plugin", "origin", "options"],
          "properties": {"name": _NAME, "plugin": _NAME, "origin": {"type": "string"}, "options": {"type": "object"}}}
_PLUGIN = {"type": "object", "required": ["plugin", "origin", "distribution", "distribution_version", "version"],
           "properties": {"plugin": _NAME, "origin": {"type": "string"}, "distribution": _STR_OR_NULL,
                          "distribution_version": _STR_OR_NULL, "version": {"type": "string"}}}

RESULT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "partbench unit result",
    "type": "object",
    "required": ["schema", "unit", "encoder", "dataset", "task", "task_plugin", "status", "headline", "metrics",
                 "details", "artifacts", "error", "warnings", "config", "identity", "key", "inputs", "plugins",
                 "core_version", "encoder_pretraining", "dataset_level", "dataset_hierarchy", "forwards",
                 "cache_hits", "timings", "versions", "git_revision", "spec", "reference", "world_size"],
    "additionalProperties": False,
    "properties": {
        "schema": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "unit": _NAME,
        "encoder": _NAME,
        "dataset": _NAME,
        "task": _NAME,
        "task_plugin": _NAME,
        "status": {"type": "string", "enum": ["ok", "failed"]},
        "headline": {"type": "array", "items": {"type": "string"}},
        "metrics": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
        "details": {"type": "object"},
        "artifacts": {"type": "array", "items": {"type": "string"}},
        "per_item": {"type": "object", "required": ["file", "arrays"],
                     "properties": {"file": _NAME, "arrays": {"type": "object", "additionalProperties": {
                         "type": "object", "required": ["shape", "dtype"],
                         "properties": {"shape": {"type": "array", "items": {"type": "integer"}},
                                        "dtype": {"type": "string"}}}}}},
        "intervals": {"type": "object", "required": ["method", "level", "resamples", "items", "resample_key", "ci95"],
                      "properties": {"method": {"type": "string"}, "level": {"type": "number"},
                                     "resamples": {"type": "integer"}, "items": {"type": "integer"},
                                     "by": {"type": "string", "enum": ["item", "image"]},
                                     "clusters": {"type": "integer"},
                                     "resample_key": {"type": "string"},
                                     "ci95": {"type": "object", "additionalProperties": {
                                         "type": ["array", "null"], "items": {"type": "number"}}}}},
        "seeds": {"type": "object", "required": ["seeds", "values", "std"],
                  "properties": {"seeds": {"type": "array", "items": {"type": "integer"}},
                                 "values": {"type": "object", "additionalProperties": {
                                     "type": "array", "items": _NUMBER_OR_NULL}},
                                 "std": {"type": "object", "additionalProperties": _NUMBER_OR_NULL}}},
        "error": _STR_OR_NULL,
        "traceback": {"type": "string"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "config": {"type": "object", "required": ["encoder", "dataset", "task", "seed"],
                   "properties": {"encoder": _ENTRY, "dataset": _ENTRY, "task": _ENTRY, "seed": {"type": "integer"},
                                  "bootstrap": {"type": "integer"},
                                  "bootstrap_by": {"type": "string", "enum": ["item", "image"]}}},
        "key": {"type": "string", "minLength": 16},
        "inputs": {"type": "object", "additionalProperties": {"type": "string"}},
        "plugins": {"type": "object", "required": ["encoder", "dataset", "task"],
                    "properties": {"encoder": _PLUGIN, "dataset": _PLUGIN, "task": _PLUGIN}},
        "identity": {"type": "object", "required": ["encoder", "dataset", "task"],
                     "properties": {role: {"type": "object", "required": ["plugin", "version", "options"]}
                                    for role in ("encoder", "dataset", "task")}},
        "core_version": {"type": "string"},
        "encoder_pretraining": _STR_OR_NULL,
        "dataset_level": _STR_OR_NULL,
        "dataset_levels": {"type": "array", "items": _NAME},
        "dataset_hierarchy": _STR_OR_NULL,
        "forwards": {"type": "integer"},
        "cache_hits": {"type": "integer"},
        "timings": {"type": "object", "required": ["total_s", "features_s"],
                    "properties": {"total_s": {"type": "number"}, "features_s": {"type": "number"},
                                   "intervals_s": {"type": "number"}}},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "git_revision": _STR_OR_NULL,
        "spec": {"type": "string"},
        "reference": {"type": "object", "additionalProperties": {"type": "number"}},
        "world_size": {"type": "integer"},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def problems(value: Any, schema: dict, where: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema`` (the subset of JSON Schema used here), as 'field: problem'."""
    out: list[str] = []
    field = where or "(top level)"
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in names):
            return [f"{field}: expected {' or '.join(names)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{field}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        out.append(f"{field}: empty")
    if isinstance(value, dict):
        for k in schema.get("required", []):
            if k not in value:
                out.append(f"{where + '.' if where else ''}{k}: missing")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            sub = f"{where}.{k}" if where else str(k)
            if k in props:
                out += problems(v, props[k], sub)
            elif extra is False:
                out.append(f"{sub}: unknown field")
            elif isinstance(extra, dict):
                out += problems(v, extra, sub)
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += problems(v, schema["items"], f"{where}[{i}]")
    return out


def check(result: Any, where: str) -> dict:
    """``result`` if it is a valid result, else a HarnessError naming ``where`` and the first problems."""
    found = problems(result, RESULT_SCHEMA)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise HarnessError(f"{where}: not a partbench result (schema {SCHEMA_VERSION}): {'; '.join(found[:3])}{more}")
    return result


def read_result(path: Path) -> dict:
    """One result file, parsed and checked against the schema."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise HarnessError(f"{path}: not valid JSON ({exc})") from None
    return check(data, str(path))


def load_results(out_dir: str | os.PathLike) -> list[dict]:
    """Every result of an output folder (``harness run --out``), checked against the schema."""
    folder = Path(out_dir) / "results"
    if not folder.is_dir():
        raise HarnessError(f"{out_dir}: no results/ folder (expected the --out directory of a 'harness run')")
    results = [read_result(p) for p in sorted(folder.glob("*.json"))]
    if not results:
        raise HarnessError(f"{folder}: no result files")
    return results


def ci95(result: dict, metric: str) -> list[float] | None:
    """A result's 95 % bootstrap interval of ``metric`` (``intervals.ci95``), or None."""
    return ((result.get("intervals") or {}).get("ci95") or {}).get(metric)


def headline_value(result: dict) -> tuple[str, float] | None:
    """(name, value) of a result's first headline metric that has a number, or None."""
    names = result.get("headline") or list(result.get("metrics") or {})
    for name in names:
        value = (result.get("metrics") or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, float(value)
    return None
