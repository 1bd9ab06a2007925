"""Runs a Plan: unit by unit (encoder x dataset x task), with failure isolation, resume and the feature cache."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .api import Encoder, HarnessError
from .cache import FeatureCache, _canonical, default_cache_dir
from .execution import Executor
from .spec import Plan, Unit

VECTOR_DTYPE = np.float32
TOKEN_DTYPE = np.float16  # token maps are large; fp16 halves disk and memory traffic


def _is_token_rep(rep: str) -> bool:
    return rep == "tokens" or rep.startswith("block.")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device '{device}' requested but CUDA is not available")
    return device


class _LoadedEncoders:
    """One executor per encoder per run: loaded lazily, once, shared by all units that use it."""

    def __init__(self, device: str):
        self.device = device
        self.executors: dict[int, Executor] = {}

    def get(self, enc: Encoder) -> Executor:
        if id(enc) not in self.executors:
            self.executors[id(enc)] = Executor(enc, self.device)
        return self.executors[id(enc)]


class Context:
    """What a task sees: its encoder, dataset, output folder, and cached features."""

    def __init__(self, encoder, dataset, task, out_dir: Path, device: str, seed: int, cache: FeatureCache,
                 loaded: _LoadedEncoders, show_progress: bool = True):
        self.encoder, self.dataset, self.task = encoder, dataset, task
        self.out_dir = out_dir
        self.device = device
        self.seed = seed
        self.cache = cache
        self.forwards = 0
        self.feature_seconds = 0.0
        self.cache_hits = 0
        self._loaded = loaded
        self._samples: dict = {}
        self._show_progress = show_progress

    # -- data --------------------------------------------------------------------------------
    def samples(self, split: str):
        if split not in self._samples:
            if split not in self.dataset.splits:
                raise HarnessError(f"dataset '{self.dataset.name}' has no split '{split}' "
                                   f"(available: {', '.join(self.dataset.splits)})")
            self._samples[split] = self.dataset.load(split)
        return self._samples[split]

    def progress(self, iterable, desc: str = "", total: int | None = None, **kw):
        from tqdm.auto import tqdm

        # disable=None: tqdm draws only on a terminal, so logs and CI output stay readable
        return tqdm(iterable, desc=desc, total=total, disable=None if self._show_progress else True, leave=False,
                    dynamic_ncols=True, **kw)

    def _normalise(self, batch):
        import torch

        mean = torch.tensor(self.encoder.opts["mean"], dtype=batch.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.encoder.opts["std"], dtype=batch.dtype).view(1, 3, 1, 1)
        return (batch - mean) / std

    def images(self, split: str, indices: Sequence[int], transform: str = "resize:224"):
        """A normalised batch [B,3,S,S] for the encoder (for code that must re-encode)."""
        import torch

        from . import transforms

        s = self.samples(split)
        return self._normalise(torch.stack([transforms.apply(transform, s.image(int(i))) for i in indices]))

    # -- features ----------------------------------------------------------------------------
    def feature_key(self, split: str, rep: str, transform: str) -> str:
        s = self.samples(split)
        return self.cache.key(encoder=self.encoder.identity(), dataset=self.dataset.identity(), split=split,
                              items=s.fingerprint(), transform=transform, representation=rep,
                              precision=self.encoder.opts.get("precision", "fp32"))

    def features(self, split: str, reps: Sequence[str], transform: str = "resize:224") -> dict:
        for rep in reps:
            if not self.encoder.supports(rep):
                raise HarnessError(f"encoder '{self.encoder.name}' has no representation '{rep}' "
                                   f"(has: {', '.join(self.encoder.representations)})")
        keys = {rep: self.feature_key(split, rep, transform) for rep in reps}
        out, missing = {}, []
        for rep, key in keys.items():
            arr = self.cache.get(key, mmap=_is_token_rep(rep))
            if arr is None:
                missing.append(rep)
            else:
                out[rep] = arr
                self.cache_hits += 1
        if missing:
            t0 = time.perf_counter()
            self._compute(split, missing, transform, keys)
            self.feature_seconds += time.perf_counter() - t0
            for rep in missing:
                out[rep] = self.cache.get(keys[rep], mmap=_is_token_rep(rep))
        return out

    def encode(self, x, reps: Sequence[str]) -> dict:
        """One frozen forward of a normalised batch: loads the encoder once per run, applies its
        precision (autocast) and counts ``forwards``."""
        out = self._loaded.get(self.encoder)(x, reps)
        self.forwards += x.shape[0]
        return out

    def _compute(self, split: str, reps: list[str], transform: str, keys: dict) -> None:
        enc = self.encoder
        n, bs = len(self.samples(split)), int(enc.opts.get("batch_size", 64))
        writers: dict = {}

        def load_batch(start: int):
            return self.images(split, range(start, min(start + bs, n)), transform)

        starts = list(range(0, n, bs))
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                nxt = pool.submit(load_batch, starts[0]) if starts else None
                bar = self.progress(starts, desc=f"features {enc.name}/{self.dataset.name}:{split}", unit="batch")
                for j, start in enumerate(bar):
                    batch = nxt.result()
                    if j + 1 < len(starts):  # decode the next batch while this one runs
                        nxt = pool.submit(load_batch, starts[j + 1])
                    feats = self.encode(batch, reps)
                    for rep in reps:
                        if rep not in feats:
                            raise HarnessError(f"encoder '{enc.name}' did not return representation '{rep}'")
                        arr = feats[rep].float().cpu().numpy()
                        if rep not in writers:
                            dtype = TOKEN_DTYPE if _is_token_rep(rep) else VECTOR_DTYPE
                            meta = {"encoder": enc.identity(), "dataset": self.dataset.identity(), "split": split,
                                    "transform": transform, "representation": rep, "n": n}
                            writers[rep] = self.cache.open_writer(keys[rep], (n,) + arr.shape[1:], dtype, meta)
                        writers[rep].write(start, arr)
            for w in writers.values():
                w.commit()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise


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


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:16]


# -- running -------------------------------------------------------------------------------------
class RunSummary(list):
    """The list of result dicts of a run, plus counts."""

    skipped = 0
    failed = 0
    forwards = 0


def run_plan(plan: Plan, out_dir: str | os.PathLike, force: bool = False, show_progress: bool = True,
             cache_dir: str | os.PathLike | None = None, log=print) -> RunSummary:
    out = Path(out_dir)
    cache = FeatureCache(cache_dir or plan.cache_dir or default_cache_dir())
    cache.sweep_stale()
    device = resolve_device(plan.device)
    loaded = _LoadedEncoders(device)
    versions, rev = _versions(), git_revision()
    results = RunSummary()
    groups_touched: set = set()
    prepared: set = set()
    for i, unit in enumerate(plan.units, 1):
        cfg = plan.unit_config(unit)
        chash = config_hash(cfg)
        res_path = out / "results" / f"{unit.id}.json"
        if not force and res_path.is_file():
            try:
                prev = json.loads(res_path.read_text())
            except (OSError, ValueError):
                prev = None
            if prev and prev.get("status") == "ok" and prev.get("config_hash") == chash:
                log(f"[{i}/{len(plan.units)}] {unit.id}: done earlier, skipped (use --force to recompute)")
                prev["reference"] = plan.unit_reference(unit)  # reference numbers may be edited freely
                results.append(prev)
                results.skipped += 1
                continue
        log(f"[{i}/{len(plan.units)}] {unit.id}: running")
        result = _run_unit(plan, unit, cfg, chash, out, device, cache, loaded, prepared, show_progress)
        result.update(versions=versions, git_revision=rev, spec=str(plan.path), reference=plan.unit_reference(unit))
        write_json_atomic(res_path, result)
        results.append(result)
        results.forwards += result["forwards"]
        groups_touched.add((unit.task, unit.dataset))
        if result["status"] != "ok":
            results.failed += 1
            log(f"    FAILED: {result['error']}")
    _finalize(plan, results, out, groups_touched, log)
    return results


def _run_unit(plan, unit: Unit, cfg, chash, out: Path, device, cache, loaded, prepared, show_progress) -> dict:
    enc, ds, task = plan.encoders[unit.encoder], plan.datasets[unit.dataset], plan.tasks[unit.task]
    art_dir = out / "artifacts" / unit.id
    art_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(enc, ds, task, art_dir, device, plan.seed, cache, loaded, show_progress)
    result = {"unit": unit.id, "encoder": unit.encoder, "dataset": unit.dataset, "task": unit.task,
              "task_plugin": task.plugin_name, "headline": list(task.headline), "config": cfg,
              "config_hash": chash, "status": "ok", "metrics": {}, "details": {}, "artifacts": [], "error": None}
    t0 = time.perf_counter()
    try:
        if id(ds) not in prepared:
            ds.prepare()
            prepared.add(id(ds))
        produced = task.run(ctx) or {}
        unknown = set(produced) - {"metrics", "details", "artifacts"}
        if unknown:
            raise HarnessError(f"task '{unit.task}' returned unknown result keys {sorted(unknown)}")
        result["metrics"] = produced.get("metrics", {})
        result["details"] = produced.get("details", {})
        result["artifacts"] = [os.path.relpath(p, out) for p in produced.get("artifacts", [])]
        load_report = getattr(enc, "load_report", None)
        if load_report:
            result["details"]["checkpoint_load_report"] = load_report
    except Exception as exc:  # noqa: BLE001 - failure isolation: record and go on
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result["forwards"] = ctx.forwards
    result["cache_hits"] = ctx.cache_hits
    result["timings"] = {"total_s": round(time.perf_counter() - t0, 4), "features_s": round(ctx.feature_seconds, 4)}
    return result


def _finalize(plan: Plan, results: list, out: Path, groups: set, log) -> None:
    """Cross-encoder artifacts (e.g. side-by-side galleries), once per touched (task, dataset)."""
    for task_name, ds_name in sorted(groups):
        task = plan.tasks[task_name]
        if getattr(type(task), "finalize", None) is None:
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
    report.write_report(out, results)
    return results

