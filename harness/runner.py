"""Runs a Plan: unit by unit (encoder x dataset x task), with failure isolation, resume and the feature cache.

Resume: a unit whose result file exists is skipped only when its result key is unchanged. The key covers
everything the result depends on: the core's version, each plugin's identity (plugin name, declared
``version``, options, and what the plugin adds: a checkpoint's SHA-256, ...), the seed, and the fingerprint of
every dataset split the unit read (its items and the sizes and modification times of its files). The log says
why a unit is recomputed.
""" 
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


from . import bootstrap, distributed
from .api import CORE_VERSION, HarnessError, Task
from .cache import FeatureCache, _canonical, cache_dir_in_use, default_cache_dir
from .context import UnitContext
from .features import EncoderFailure, FeatureEngine
from .interrupts import Interrupted
from .errors import FatalError
from .io import jsonable, write_json_atomic
from .results import SCHEMA_VERSION, read_result
from .spec import Plan, Unit
from .threads import configure as configure_threads

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


def _digest(obj) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:32]


# -- running -------------------------------------------------------------------------------------
class RunSummary(list):
    """The list of result dicts of a run, plus counts; ``main`` is False on torchrun ranks other than 0."""

    skipped = 0
    failed = 0
    forwards = 0
    main = True


def run_plan(plan: Plan, out_dir: str | os.PathLike, force: bool = False, show_progress: bool = True,
             cache_dir: str | os.PathLike | None = None, log=print, workers: int | None = None,
             encoders_per_pass: int | None = None, threads: int | None = None) -> RunSummary:
    """Run every unit of ``plan``; under torchrun every rank calls this and rank 0 writes."""
    dist, device = distributed.from_env(resolve_device(plan.device))
    try:
        with cache_dir_in_use(cache_dir or plan.cache_dir):  # what plugins store beside features goes there too
            return _run(plan, Path(out_dir), force, show_progress, cache_dir, log, workers, encoders_per_pass,
                        threads, dist, device)
    except Interrupted:
        raise
    except BaseException as exc:  # the other ranks learn why this one stops
        dist.report_failure(_error_text(exc) if isinstance(exc, Exception) else type(exc).__name__)
        raise
    finally:
        dist.shutdown()


def _run(plan, out: Path, force, show_progress, cache_dir, log, workers, encoders_per_pass, threads, dist,
         device):
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
    n, why = configure_threads(device, engine.workers,
                               plan.extraction.get("threads") if threads is None else threads)
    log(f"threads: {n} in the main process ({why}); {engine.workers} decode workers of 1 thread each")
    try:
        return _run_units(plan, out, force, log, engine, dist, main, encoders_per_pass)
    except Interrupted:
        cache.remove_own_temporaries()  # whatever a writer had not yet removed itself
        raise
    finally:
        engine.close()


def _run_units(plan, out: Path, force, log, engine: FeatureEngine, dist, main: bool,
               encoders_per_pass: int | None) -> "RunSummary":
    versions, rev = _versions(), git_revision()
    results = RunSummary()
    results.main = main
    index = {u.id: i for i, u in enumerate(plan.units, 1)}
    try:
        # rank 0 prepares (e.g. generates) the datasets first; the other ranks then find them ready
        datasets = [plan.datasets[n] for n in dict.fromkeys(u.dataset for u in plan.units)]
        if main:
            _prepare(engine, datasets)
        dist.sync()
        if not main:
            _prepare(engine, datasets)
        # resume: rank 0 decides which units are done, every rank skips the same ones
        done = dist.broadcast(_finished_units(plan, out, force, engine, index, log) if main else None)
        for unit in plan.units:
            if unit.id in done:
                log(f"[{index[unit.id]}/{len(plan.units)}] {unit.id}: done earlier, skipped (use --force to recompute)")
                prev = done[unit.id]
                prev["reference"] = plan.unit_reference(unit)  # reference numbers may be edited freely
                results.append(prev)
                results.skipped += 1
        by_dataset: dict[str, list[Unit]] = {}
        for u in plan.units:
            if u.id not in done:
                by_dataset.setdefault(u.dataset, []).append(u)
        resampler = bootstrap.Resampler(plan.seed, plan.bootstrap, by=plan.bootstrap_by)
        groups_touched: set = set()
        first_with: dict[str, str] = {}  # error text -> the first unit that failed with it
        for ds_name, units in by_dataset.items():
            dist.sync()  # rank 0 may have trained heads alone until now
            prefetched, prefetch_errors = _prefetch(plan, units, engine, encoders_per_pass, log)
            for unit in units:
                log(f"[{index[unit.id]}/{len(plan.units)}] {unit.id}: running")
                result = _run_unit(plan, unit, out, engine, prefetched.get(unit.id, 0),
                                   prefetch_errors.get(unit.id), log, resampler)
                if result is None:  # another rank's unit (a rank-0 task)
                    continue
                result.update(versions=versions, git_revision=rev, spec=str(plan.path),
                              reference=plan.unit_reference(unit), world_size=dist.world_size)
                result = _strict(result)
                if main:
                    write_json_atomic(out / "results" / f"{unit.id}.json", result)
                results.append(result)
                results.forwards += result["forwards"]
                groups_touched.add((unit.task, unit.dataset))
                if result["status"] != "ok":
                    results.failed += 1
                    first = first_with.setdefault(result["error"], unit.id)
                    # a data problem fails every unit of its dataset alike: its text is printed once
                    log(f"    FAILED: {result['error']}" if first == unit.id else f"    FAILED: same error as {first}")
        if main:
            _finalize(plan, results, out, groups_touched, log)
        dist.sync()
        dist.barrier()
    except Interrupted as exc:
        exc.done, exc.total = sum(r["status"] == "ok" for r in results), len(plan.units)
        raise
    results.sort(key=lambda r: index.get(r["unit"], 0))
    return results


def _prepare(engine: FeatureEngine, datasets) -> None:
    for ds in datasets:
        try:
            engine.prepare(ds)
        except Exception:  # noqa: BLE001 - the units that read it fail with the message when they load it
            pass


def _strict(result: dict) -> dict:
    """The result as strict JSON types; every non-finite number becomes null with a warning naming it."""
    nonfinite: list = []
    clean = jsonable(result, "", nonfinite)
    clean["warnings"] += [f"{where}: {value} is not a finite number, written as null" for where, value in nonfinite]
    return clean


# -- result keys -----------------------------------------------------------------------------------------
def _identities(plan: Plan, unit: Unit) -> dict:
    return {"encoder": plan.encoders[unit.encoder].identity(), "dataset": plan.datasets[unit.dataset].identity(),
            "task": plan.tasks[unit.task].identity()}


def _inputs(engine: FeatureEngine, dataset, splits) -> dict[str, str]:
    """{split: fingerprint} of the splits a unit read (a split that does not load is left out)."""
    out = {}
    for split in sorted(splits):
        try:
            out[split] = engine.fingerprint(engine.samples(dataset, split))
        except Exception:  # noqa: BLE001 - the unit reports it
            pass
    return out


def _result_key(plan: Plan, unit: Unit, inputs: dict) -> str:
    return _digest({"core": CORE_VERSION, "identity": _identities(plan, unit), "seed": plan.seed, "inputs": inputs,
                    "bootstrap": plan.bootstrap, **plan.bootstrap_identity()})


def _finished_units(plan: Plan, out: Path, force: bool, engine: FeatureEngine, index: dict, log) -> dict:
    """unit id -> previous result, for units whose result exists with an unchanged result key."""
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
            prev = None
        if not isinstance(prev, dict) or prev.get("status") != "ok":
            continue
        where = f"[{index[unit.id]}/{len(plan.units)}] {unit.id}: recomputed"
        if "key" not in prev or prev.get("schema") != SCHEMA_VERSION:
            log(f"{where}: its result was written by an older partbench")
            continue
        try:
            read_result(res_path)
        except HarnessError as exc:
            log(f"{where}: {exc}")
            continue
        inputs = _inputs(engine, plan.dataset_of(unit), prev["inputs"])
        if _result_key(plan, unit, inputs) == prev["key"]:
            done[unit.id] = prev
        else:
            log(f"{where}: {_what_changed(plan, unit, prev, inputs)}")
    return done


def _what_changed(plan: Plan, unit: Unit, prev: dict, inputs: dict) -> str:
    """Why a previous result's key differs from the current one, in words."""
    if prev.get("core_version") != CORE_VERSION:
        return f"the harness core changed (version {prev.get('core_version')} -> {CORE_VERSION})"
    now, then = _identities(plan, unit), prev.get("identity") or {}
    for role in ("encoder", "dataset", "task"):
        a, b = then.get(role) or {}, now[role]
        name = getattr(unit, role)
        if str(a.get("version")) != str(b.get("version")):
            return f"{role} plugin '{b.get('plugin')}' changed (version {a.get('version')} -> {b.get('version')})"
        if _canonical(a.get("options")) != _canonical(b.get("options")):
            return f"{role} '{name}' options changed"
        diff = sorted(k for k in set(a) | set(b) if _canonical(a.get(k)) != _canonical(b.get(k)))
        if diff:
            return f"{role} '{name}' changed ({', '.join(diff)})"
    for split in sorted(set(prev["inputs"]) | set(inputs)):
        if prev["inputs"].get(split) != inputs.get(split):
            return (f"dataset '{unit.dataset}' split '{split}' changed since the result was written (files edited, "
                    "added or removed)" if split in inputs else
                    f"dataset '{unit.dataset}' split '{split}' cannot be loaded now")
    if prev.get("config", {}).get("seed") != plan.seed:
        return "the seed changed"
    if prev.get("config", {}).get("bootstrap") != plan.bootstrap:
        return "the number of bootstrap resamples changed"
    if prev.get("config", {}).get("bootstrap_by", "item") != plan.bootstrap_by:
        return f"the bootstrap now draws by {plan.bootstrap_by}"
    return "its configuration changed"


def _prefetch(plan: Plan, units: list[Unit], engine: FeatureEngine, per_pass: int | None, log):
    """Extract every feature the units' tasks request, before they run: one pass over each (items,
    transform) for all encoders that need it (``per_pass`` at a time), sharded over ranks. Returns
    (forwards attributed to the first unit of each encoder that needed a pass, {unit id: error})."""
    groups: dict[tuple, dict] = {}
    errors: dict[str, str] = {}
    for u in units:
        enc, task = plan.encoders[u.encoder], plan.tasks[u.task]
        try:
            ds = plan.dataset_of(u)
            reqs = task.requests(enc, ds)
            for r in reqs:
                base = engine.samples(ds, r.split)
                source = r.view(base) if r.view is not None else r.split
                label, samples = engine.resolve(ds, source)
                transform = r.transform(samples) if callable(r.transform) else r.transform
                g = groups.setdefault((engine.fingerprint(samples), transform), {
                    "source": source, "transform": transform, "dataset": ds, "encoders": {}, "units": {}})
                reps = g["encoders"].setdefault(u.encoder, [])
                reps.extend(rep for rep in r.reps if rep not in reps)
                g["units"].setdefault(u.encoder, []).append(u.id)
        except FatalError:
            raise
        except Exception as exc:  # noqa: BLE001 - the unit fails, others go on
            errors[u.id] = _error_text(exc)
    forwards: dict[str, int] = {}
    for g in groups.values():
        names = list(g["encoders"])
        step = per_pass or len(names)
        for k in range(0, len(names), step):
            batch = [n for n in names[k:k + step] if not any(uid in errors for uid in g["units"][n])]
            while batch:
                wanted = [(plan.encoders[n], g["encoders"][n]) for n in batch]
                try:
                    done = engine.extract(g["dataset"], g["source"], g["transform"], wanted, collective=True)
                except EncoderFailure as exc:
                    failed = next(n for n in batch if id(plan.encoders[n]) == exc.encoder_id)
                    for uid in g["units"][failed]:
                        errors[uid] = str(exc)
                    batch.remove(failed)
                    continue
                except FatalError:
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
    """One line for a failure: a HarnessError's own message (written for the user), else 'Type: message'."""
    return str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"


def _run_unit(plan, unit: Unit, out: Path, engine: FeatureEngine, prefetch_forwards: int, prefetch_error,
              log, resampler: "bootstrap.Resampler") -> dict | None:
    enc, ds, task = plan.encoders[unit.encoder], plan.dataset_of(unit), plan.tasks[unit.task]
    main = engine.dist.is_main
    if not (main or task.distributed):
        return None
    scratch = None if main else tempfile.TemporaryDirectory(prefix=f"harness-rank{engine.dist.rank}-")
    art_dir = out / "artifacts" / unit.id if main else Path(scratch.name)  # other ranks' files are dropped
    art_dir.mkdir(parents=True, exist_ok=True)
    ctx = UnitContext(engine, enc, ds, task, art_dir, plan.seed, log)
    cfg = plan.unit_config(unit)
    result = {"schema": SCHEMA_VERSION, "unit": unit.id, "encoder": unit.encoder, "dataset": unit.dataset,
              "task": unit.task, "task_plugin": task.plugin_name, "headline": list(task.headline),
              "status": "ok", "metrics": {}, "details": {}, "artifacts": [], "error": None, "warnings": [],
              "config": cfg, "identity": _identities(plan, unit), "core_version": CORE_VERSION,
              "plugins": _plugins_of(plan, unit, cfg), "encoder_pretraining": enc.pretraining,
              "dataset_level": ds.level, "dataset_levels": [str(v) for v in ds.levels],
              "dataset_hierarchy": ds.hierarchy}
    t0 = time.perf_counter()
    intervals_s = 0.0
    try:
        if prefetch_error:
            raise HarnessError(prefetch_error)
        seeds = task.opts.get("seeds") if task.seeded else None
        runs = []
        for s in seeds or [plan.seed]:
            if seeds:  # one training per seed, each with its own artifact folder
                ctx.seed, ctx.out_dir = s, art_dir / f"seed{s}"
                ctx.out_dir.mkdir(parents=True, exist_ok=True)
            runs.append(_checked(task.run(ctx) or {}, unit))
        produced = combine_seeds(runs, seeds) if seeds else runs[0]
        result["metrics"] = produced.get("metrics", {})
        result["details"] = produced.get("details", {})
        result["artifacts"] = [os.path.relpath(p, out) for p in produced.get("artifacts", [])]
        result["warnings"] += [str(w) for w in produced.get("warnings", [])]
        if seeds:
            result["seeds"] = produced["seeds"]
        per_seed = [r["per_item"] for r in runs if r.get("per_item")]
        if per_seed and len(per_seed) == len(runs) and main:
            t1 = time.perf_counter()
            arrays, intervals, problems = _intervals(task, per_seed, result["metrics"], seeds, resampler)
            result["warnings"] += problems
            result["per_item"] = _write_per_item(out, unit, arrays)
            if intervals:
                result["intervals"] = intervals
            intervals_s = time.perf_counter() - t1
        if enc.load_report:
            result["details"]["checkpoint_load_report"] = enc.load_report
    except FatalError:
        raise  # every later unit would fail alike: stop the run with one line
    except Exception as exc:  # noqa: BLE001 - failure isolation: record and go on
        result["status"] = "failed"
        result["error"] = str(exc) if prefetch_error else _error_text(exc)
        result["traceback"] = traceback.format_exc()
    splits = ctx.splits_read
    try:
        splits = splits | {r.split for r in task.requests(enc, ds)}
    except Exception:  # noqa: BLE001 - already reported by the prefetch
        pass
    result["inputs"] = _inputs(engine, ds, splits)
    result["key"] = _result_key(plan, unit, result["inputs"])
    result["forwards"] = ctx.forwards + prefetch_forwards
    result["cache_hits"] = ctx.cache_hits
    result["timings"] = {"total_s": round(time.perf_counter() - t0, 4), "features_s": round(ctx.feature_seconds, 4),
                         "intervals_s": round(intervals_s, 4)}
    if scratch is not None:
        scratch.cleanup()
    return result if main else None


def _checked(produced: dict, unit: Unit) -> dict:
    unknown = set(produced) - {"metrics", "details", "artifacts", "per_item", "warnings"}
    if unknown:
        raise HarnessError(f"task '{unit.task}' returned unknown result keys {sorted(unknown)} (expected "
                           "metrics, details, artifacts, per_item, warnings)")
    return produced


def combine_seeds(runs: list[dict], seeds: list[int]) -> dict:
    """One result from a task run once per seed: each metric's mean over the seeds (``bootstrap.seed_mean``,
    the operations its replicates are averaged with), the seeds' values and standard deviations (ddof 1),
    the first seed's details with every seed's metrics, all artifacts and warnings."""
    import numpy as np

    names = [m for m in runs[0].get("metrics", {}) if all(m in r.get("metrics", {}) for r in runs)]
    values = {m: [_number(r["metrics"][m]) for r in runs] for m in names}
    metrics = {m: float(bootstrap.seed_mean(v)) for m, v in values.items()}
    std = {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
    details = dict(runs[0].get("details", {}))
    details["per_seed"] = {str(s): r.get("metrics", {}) for s, r in zip(seeds, runs)}
    return {"metrics": metrics, "details": details,
            "artifacts": [p for r in runs for p in r.get("artifacts", [])],
            "warnings": [f"seed {s}: {w}" for s, r in zip(seeds, runs) for w in r.get("warnings", [])],
            "seeds": {"seeds": list(seeds), "values": values, "std": std}}


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def _intervals(task: Task, per_seed: list[dict], metrics: dict, seeds, resampler):
    """(npz arrays, the result's ``intervals`` or None, warnings): the per-item arrays (each seed's under
    ``seed<s>/``) and the bootstrap replicates of every metric the task resamples (``bootstrap/<metric>``)."""
    import numpy as np

    per_seed = [{k: np.asarray(v) for k, v in arrays.items()} for arrays in per_seed]
    if seeds:
        arrays = {f"seed{s}/{k}": v for s, a in zip(seeds, per_seed) for k, v in a.items() if k != "items"}
        if "items" in per_seed[0]:
            arrays["items"] = per_seed[0]["items"]
    else:
        arrays = dict(per_seed[0])
    if type(task).resample is Task.resample or resampler.resamples == 0 or "items" not in per_seed[0]:
        return arrays, None, []
    n = len(per_seed[0]["items"])
    if any(not np.array_equal(a.get("items"), per_seed[0]["items"]) for a in per_seed):
        return arrays, None, ["no intervals: the seeds' runs scored different items"]
    try:
        return _resampled(task, per_seed, metrics, resampler, arrays, n)
    except Exception as exc:  # noqa: BLE001 - the metrics stand without their intervals
        return arrays, None, [f"no intervals: the task's resample failed ({type(exc).__name__}: {exc})"]


def _resampled(task: Task, per_seed: list[dict], metrics: dict, resampler, arrays: dict, n: int):
    warnings = []
    at_identity = bootstrap.identity(task.resample, per_seed, n)
    kept = [m for m, v in at_identity.items() if m in metrics and bootstrap.same_value(v, metrics[m])
            and not bootstrap.same_value(v, None)]  # a metric without a value has no interval
    for m in sorted(m for m in set(at_identity) - set(kept) if not bootstrap.same_value(metrics.get(m), None)):
        warnings.append(f"no interval for {m}: its bootstrap statistic gives {at_identity[m]!r} on the data "
                        f"itself, the metric is {metrics.get(m)!r}")
    if not kept:
        return arrays, None, warnings
    by_image = resampler.by == "image" and per_seed[0].get("clusters") is not None
    clusters = bootstrap.cluster_index(per_seed[0]["clusters"]) if by_image else None
    key = resampler.key(per_seed[0]["items"].tolist(), clusters)
    reps = bootstrap.replicates(task.resample, per_seed, resampler.blocks(key, n, clusters))
    ci = {}
    for m in kept:
        arrays[bootstrap.PREFIX + m] = reps[m]
        ci[m] = bootstrap.interval(reps[m])
    drawn = {"by": "image", "clusters": int(clusters.max()) + 1} if by_image else {"by": "item"}
    return arrays, {"method": bootstrap.METHOD, "level": bootstrap.LEVEL, "resamples": resampler.resamples,
                    "items": n, **drawn, "resample_key": key, "ci95": ci}, warnings


def _write_per_item(out: Path, unit: Unit, arrays: dict) -> dict:
    """Per-item arrays as results/<unit>.npz (written atomically); the result's ``per_item`` entry."""
    import numpy as np

    from .io import io_error

    path = out / "results" / f"{unit.id}.npz"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise io_error(path, exc, "writing per-item results") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"file": os.path.relpath(path, out),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}}


def _plugins_of(plan: Plan, unit: Unit, cfg: dict) -> dict:
    """Which distribution (and version) provided each plugin of a unit, and the plugin's declared version:
    results say what code made them."""
    from .plugins import Plugins

    out = {}
    for role, obj in (("encoder", plan.encoders[unit.encoder]), ("dataset", plan.datasets[unit.dataset]),
                      ("task", plan.tasks[unit.task])):
        origin = cfg[role].get("origin") or ""
        dist = origin.split(":", 1)[0] if ":" in origin and not origin.startswith("file:") else None
        out[role] = {"plugin": cfg[role].get("plugin"), "origin": origin, "distribution": dist,
                     "distribution_version": Plugins.version_of(origin), "version": str(obj.version)}
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
        report.write_report(out, results, plugins=plugins)
    return results

