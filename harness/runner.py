"""Runs a Plan: unit by unit (encoder x dataset x task), with failure isolation, resume and the feature cache."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
import traceback
from pathlib import Path


from . import distributed
from .api import HarnessError, Task
from .cache import FeatureCache, _canonical, default_cache_dir
from .context import UnitContext
from .features import EncoderFailure, FeatureEngine
from .io import DiskFullError, write_json_atomic
from .spec import Plan, Unit

def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device '{device}' requested but CUDA is not available")
    return device


# -- provenance --------------------------------------------------------------------------------
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("partbench", "torch", "timm", "numpy", "pluggy", "pycocotools", "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:16]


# -- running -------------------------------------------------------------------------------------
class RunSummary(list):
    """The list of result dicts of a run, plus counts; ``main`` is False on torchrun ranks other than 0."""

    skipped = 0
    failed = 0
    forwards = 0
    main = True


def run_plan(plan: Plan, out_dir: str | os.PathLike, force: bool = False, show_progress: bool = True,
             cache_dir: str | os.PathLike | None = None, log=print, workers: int | None = None,
             encoders_per_pass: int | None = None) -> RunSummary:
    """Run every unit of ``plan``; under torchrun every rank calls this and rank 0 writes."""
    dist, device = distributed.from_env(resolve_device(plan.device))
    try:
        return _run(plan, Path(out_dir), force, show_progress, cache_dir, log, workers, encoders_per_pass,
                    dist, device)
    finally:
        dist.barrier()
        dist.shutdown()


def _run(plan, out: Path, force, show_progress, cache_dir, log, workers, encoders_per_pass, dist, device):
    main = dist.is_main
    log = log if main else (lambda *a: None)
    cache = FeatureCache(cache_dir or plan.cache_dir or default_cache_dir())
    if main:
        cache.sweep_stale()
    if workers is None:
        workers = plan.extraction.get("workers")
    if encoders_per_pass is None:
        encoders_per_pass = plan.extraction.get("encoders_per_pass")
    engine = FeatureEngine(cache, device, dist, workers, show_progress, log)
    try:
        return _run_units(plan, out, force, log, engine, dist, main, encoders_per_pass)
    finally:
        engine.close()


def _run_units(plan, out: Path, force, log, engine: FeatureEngine, dist, main: bool,
               encoders_per_pass: int | None) -> "RunSummary":
    versions, rev = _versions(), git_revision()
    results = RunSummary()
    results.main = main
    # resume: rank 0 decides which units are done, every rank skips the same ones
    done = dist.broadcast(_finished_units(plan, out, force) if main else None)
    todo = [u for u in plan.units if u.id not in done]
    groups_touched: set = set()
    for i, unit in enumerate(plan.units, 1):
        if unit.id in done:
            log(f"[{i}/{len(plan.units)}] {unit.id}: done earlier, skipped (use --force to recompute)")
            prev = done[unit.id]
            prev["reference"] = plan.unit_reference(unit)  # reference numbers may be edited freely
            results.append(prev)
            results.skipped += 1
    by_dataset: dict[str, list[Unit]] = {}
    for u in todo:
        by_dataset.setdefault(u.dataset, []).append(u)
    index = {u.id: i for i, u in enumerate(plan.units, 1)}
    for ds_name, units in by_dataset.items():
        prefetched, prefetch_errors = _prefetch(plan, units, engine, encoders_per_pass, log)
        for unit in units:
            log(f"[{index[unit.id]}/{len(plan.units)}] {unit.id}: running")
            result = _run_unit(plan, unit, out, engine, prefetched.get(unit.id, 0), prefetch_errors.get(unit.id),
                               log)
            if result is None:  # another rank's unit (a rank-0 task)
                continue
            result.update(versions=versions, git_revision=rev, spec=str(plan.path),
                          reference=plan.unit_reference(unit), world_size=dist.world_size)
            if main:
                write_json_atomic(out / "results" / f"{unit.id}.json", result)
            results.append(result)
            results.forwards += result["forwards"]
            groups_touched.add((unit.task, unit.dataset))
            if result["status"] != "ok":
                results.failed += 1
                log(f"    FAILED: {result['error']}")
    if main:
        _finalize(plan, results, out, groups_touched, log)
    results.sort(key=lambda r: index.get(r["unit"], 0))
    return results


def _finished_units(plan: Plan, out: Path, force: bool) -> dict:
    """unit id -> previous result, for units whose result exists with the same configuration."""
    if force:
        return {}
    done = {}
    for unit in plan.units:
        res_path = out / "results" / f"{unit.id}.json"
        if not res_path.is_file():
            continue
        try:
            prev = json.loads(res_path.read_text())
        except (OSError, ValueError):
            continue
        if prev and prev.get("status") == "ok" and prev.get("config_hash") == config_hash(plan.unit_config(unit)):
            done[unit.id] = prev
    return done


def _prefetch(plan: Plan, units: list[Unit], engine: FeatureEngine, per_pass: int | None, log):
    """Extract every feature the units' tasks request, before they run: one pass over each (items,
    transform) for all encoders that need it (``per_pass`` at a time), sharded over ranks. Returns
    (forwards attributed to the first unit of each encoder that needed a pass, {unit id: error})."""
    groups: dict[tuple, dict] = {}
    errors: dict[str, str] = {}
    for u in units:
        enc, ds, task = plan.encoders[u.encoder], plan.datasets[u.dataset], plan.tasks[u.task]
        try:
            reqs = task.requests(enc, ds)
            for r in reqs:
                base = engine.samples(ds, r.split)
                source = r.view(base) if r.view is not None else r.split
                label, samples = engine.resolve(ds, source)
                transform = r.transform(samples) if callable(r.transform) else r.transform
                g = groups.setdefault((engine.fingerprint(samples), transform), {
                    "source": source, "transform": transform, "encoders": {}, "units": {}})
                reps = g["encoders"].setdefault(u.encoder, [])
                reps.extend(rep for rep in r.reps if rep not in reps)
                g["units"].setdefault(u.encoder, []).append(u.id)
        except DiskFullError:
            raise
        except Exception as exc:  # noqa: BLE001 - the unit fails, others go on
            errors[u.id] = _error_text(exc)
    forwards: dict[str, int] = {}
    ds = plan.datasets[units[0].dataset]
    for g in groups.values():
        names = list(g["encoders"])
        step = per_pass or len(names)
        for k in range(0, len(names), step):
            batch = [n for n in names[k:k + step] if not any(uid in errors for uid in g["units"][n])]
            while batch:
                wanted = [(plan.encoders[n], g["encoders"][n]) for n in batch]
                try:
                    done = engine.extract(ds, g["source"], g["transform"], wanted, collective=True)
                except EncoderFailure as exc:
                    failed = next(n for n in batch if id(plan.encoders[n]) == exc.encoder_id)
                    for uid in g["units"][failed]:
                        errors[uid] = str(exc)
                    batch.remove(failed)
                    continue
                except DiskFullError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a data problem: every unit of the pass fails alike
                    for n in batch:
                        for uid in g["units"][n]:
                            errors[uid] = _error_text(exc)
                    break
                for n in batch:
                    first = g["units"][n][0]
                    forwards[first] = forwards.get(first, 0) + done[id(plan.encoders[n])]
                break
    return forwards, errors


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EncoderFailure) else f"{type(exc).__name__}: {exc}"


def _run_unit(plan, unit: Unit, out: Path, engine: FeatureEngine, prefetch_forwards: int, prefetch_error,
              log) -> dict | None:
    enc, ds, task = plan.encoders[unit.encoder], plan.datasets[unit.dataset], plan.tasks[unit.task]
    main = engine.dist.is_main
    if not (main or task.distributed):
        return None
    scratch = None if main else tempfile.TemporaryDirectory(prefix=f"harness-rank{engine.dist.rank}-")
    art_dir = out / "artifacts" / unit.id if main else Path(scratch.name)  # other ranks' files are dropped
    art_dir.mkdir(parents=True, exist_ok=True)
    ctx = UnitContext(engine, enc, ds, task, art_dir, plan.seed, log)
    cfg = plan.unit_config(unit)
    result = {"unit": unit.id, "encoder": unit.encoder, "dataset": unit.dataset, "task": unit.task,
              "task_plugin": task.plugin_name, "headline": list(task.headline), "config": cfg,
              "encoder_pretraining": enc.pretraining, "dataset_level": ds.level, "dataset_hierarchy": ds.hierarchy,
              "config_hash": config_hash(cfg), "plugins": _plugin_versions(cfg),
              "status": "ok", "metrics": {}, "details": {}, "artifacts": [],
              "error": None}
    t0 = time.perf_counter()
    try:
        if prefetch_error:
            raise HarnessError(prefetch_error)
        produced = task.run(ctx) or {}
        unknown = set(produced) - {"metrics", "details", "artifacts"}
        if unknown:
            raise HarnessError(f"task '{unit.task}' returned unknown result keys {sorted(unknown)}")
        result["metrics"] = produced.get("metrics", {})
        result["details"] = produced.get("details", {})
        result["artifacts"] = [os.path.relpath(p, out) for p in produced.get("artifacts", [])]
        if enc.load_report:
            result["details"]["checkpoint_load_report"] = enc.load_report
    except DiskFullError:
        raise  # every later unit would fail alike: stop the run with one line
    except Exception as exc:  # noqa: BLE001 - failure isolation: record and go on
        result["status"] = "failed"
        result["error"] = str(exc) if prefetch_error else _error_text(exc)
        result["traceback"] = traceback.format_exc()
    result["forwards"] = ctx.forwards + prefetch_forwards
    result["cache_hits"] = ctx.cache_hits
    result["timings"] = {"total_s": round(time.perf_counter() - t0, 4), "features_s": round(ctx.feature_seconds, 4)}
    if scratch is not None:
        scratch.cleanup()
    return result if main else None


def _plugin_versions(cfg: dict) -> dict:
    """Which distribution (and version) provided each plugin of a unit: results say what code made them."""
    from .plugins import Plugins

    out = {}
    for role in ("encoder", "dataset", "task"):
        origin = cfg[role].get("origin") or ""
        dist = origin.split(":", 1)[0] if ":" in origin and not origin.startswith("file:") else None
        out[role] = {"plugin": cfg[role].get("plugin"), "origin": origin, "distribution": dist,
                     "version": Plugins.version_of(origin)}
    return out


def _finalize(plan: Plan, results: list, out: Path, groups: set, log) -> None:
    """Cross-encoder artifacts (e.g. side-by-side galleries), once per touched (task, dataset)."""
    for task_name, ds_name in sorted(groups):
        task = plan.tasks[task_name]
        if type(task).finalize is Task.finalize:
            continue
        group = [r for r in results if r["task"] == task_name and r["dataset"] == ds_name and r["status"] == "ok"]
        if not group:
            continue
        fin_dir = out / "artifacts" / f"{task_name}__{ds_name}"
        fin_dir.mkdir(parents=True, exist_ok=True)
        try:
            paths = task.finalize(group, fin_dir) or []
            for p in paths:
                log(f"    wrote {os.path.relpath(p, out)}")
        except Exception as exc:  # noqa: BLE001
            log(f"    finalize of {task_name}/{ds_name} failed: {type(exc).__name__}: {exc}")


def output_dir(plan: Plan, override=None) -> Path:
    """--out if given, else the spec's output_dir, else results/<spec file name>."""
    return Path(override or plan.output_dir or Path("results") / plan.path.stem)


def run_spec(path, out_dir=None, overrides=(), force=False, plugins=None, show_progress=False, log=None,
             cache_dir=None) -> RunSummary:
    """Programmatic entry point: validate the spec, run it, write results and the report."""
    from . import report
    from .plugins import Plugins
    from .spec import build_plan

    plugins = plugins or Plugins()
    plan = build_plan(path, plugins, overrides)
    out = output_dir(plan, out_dir)
    results = run_plan(plan, out, force=force, show_progress=show_progress, cache_dir=cache_dir,
                       log=log or (lambda *a: None))
    if results.main:
        report.write_report(out, results)
    return results

