"""Test helpers for partbench and plugin authors: a real TaskContext over given samples or features, and the
encoder conformance kit (``check_encoder``).

    from harness.testing import FakeContext
    ctx = FakeContext(encoder, samples={"train": s_tr, "test": s_te}, out_dir=tmp_path)
    result = MyTask("t", **opts).run(ctx)

Features are computed by the real executor and feature cache (a private temporary cache unless
``cache_dir`` is given), or taken from ``arrays={split: {rep: array}}``; ``requested`` lists every
``features`` call as (split or view label, reps, transform).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from .api import Dataset, Encoder, HarnessError, Samples, SpecError
from .cache import FeatureCache
from .context import UnitContext
from .features import FeatureEngine


class StubEncoder(Encoder):
    """An encoder without a model, for contexts whose features are given as arrays."""

    def __init__(self, name: str = "enc", representations: Sequence[str] = ("cls", "mean_patch"), **opts):
        super().__init__(name, **{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "batch_size": 64, "precision": "fp32", **opts})
        self.representations = tuple(representations)

    def load(self, device: str = "cpu") -> None:
        pass

    def forward(self, x, reps):
        raise HarnessError(f"encoder '{self.name}' is a stub: give its features as arrays")


class StubDataset(Dataset):
    """A dataset whose splits are given Samples."""

    def __init__(self, name: str = "toy", samples: dict | None = None, **opts):
        super().__init__(name, **opts)
        self.given = dict(samples or {})
        self.splits = tuple(self.given) or ("all",)

    def load(self, split: str) -> Samples:
        if split not in self.given:
            raise HarnessError(f"dataset '{self.name}' has no split '{split}' (has: {', '.join(self.given)})")
        return self.given[split]


class FakeContext(UnitContext):
    def __init__(self, encoder: Encoder | None = None, dataset: Dataset | None = None, *,
                 samples: dict | None = None, arrays: dict | None = None, out_dir=None, task=None,
                 device: str = "cpu", seed: int = 0, cache_dir=None, workers: int = 0):
        if encoder is None:
            reps = sorted({r for by_rep in (arrays or {}).values() for r in by_rep}) or ["cls", "mean_patch"]
            encoder = StubEncoder("enc", reps)
        if dataset is None:
            dataset = StubDataset("toy", samples)
        self._tmp = None
        if cache_dir is None or out_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="harness-fake-")
        root = Path(self._tmp.name) if self._tmp else None
        cache = FeatureCache(cache_dir or root / "cache")
        engine = FeatureEngine(cache, device, workers=workers, show_progress=False)
        for split, s in (samples or {}).items():
            engine._samples[(id(dataset), split)] = s
        out = Path(out_dir) if out_dir is not None else root / "out"
        if out_dir is None:
            out.mkdir(parents=True)
        super().__init__(engine, encoder, dataset, task, out, seed)
        self.arrays = arrays
        self.requested: list[tuple] = []

    def features(self, source, reps: Sequence[str], transform: str = "resize:224") -> dict:
        label = source if isinstance(source, str) else (source.view or type(source).__name__)
        self.requested.append((label, tuple(reps), transform))
        if self.arrays is not None and label in self.arrays:
            missing = [r for r in reps if r not in self.arrays[label]]
            if missing:
                raise HarnessError(f"FakeContext: no arrays for {missing} of '{label}'")
            return {r: self.arrays[label][r] for r in reps}
        return super().features(source, reps, transform)


KNOWN_REPRESENTATIONS = ("cls", "mean_patch", "tokens", "blocks", "projected", "pooled")
WRONG_FILE = b"this is not a model file\n"


def _encoder_class(plugin) -> tuple[type, str]:
    if isinstance(plugin, str):
        from .plugins import Plugins

        reg = Plugins().get("encoder", plugin)
        return reg.cls, reg.name
    if isinstance(plugin, type) and issubclass(plugin, Encoder):
        return plugin, plugin.__name__
    raise TypeError(f"check_encoder: expected an Encoder subclass or a registered encoder name, got {plugin!r}")


def _build(cls: type, name: str, options: dict) -> Encoder:
    """An instance as a spec builds it: options validated (defaults filled in), ``validate()`` called."""
    from .spec import validate_options

    enc = cls("conformance", **validate_options(cls.option_schema(), dict(options), f"check_encoder {name}"))
    enc.validate()
    enc.plugin_name = name
    return enc


def _all_reps(enc: Encoder) -> list[str]:
    reps = [r for r in enc.representations if r != "blocks"]
    return reps + [f"block.{i}" for i in range(enc.num_blocks or 0)] * ("blocks" in enc.representations)


def check_encoder(plugin, options: dict | None = None, *, sizes: Sequence[tuple[int, int]] | None = None,
                  wrong: dict | None = None, batch: int = 3, device: str = "cpu") -> dict[str, Any]:
    """The encoder conformance kit: what every encoder plugin must do for the tasks and the cache to work.

    ``plugin``: an Encoder subclass or a registered encoder name; ``options``: a spec's options for it (small
    weights: the checks run a few forwards). Checked, through the core's one forward (``Executor``):

    - every declared representation (``representations``; ``blocks`` as ``block.<i>`` for each of ``num_blocks``)
      is returned as float32, finite, of the declared shape: ``cls``/``mean_patch`` [B, embed_dim], ``tokens`` and
      ``block.<i>`` [B, prefix_tokens + (H/p)(W/p), embed_dim], ``projected``/``pooled`` [B, P];
    - the token grid follows the input size, for the two ``sizes`` (default 4p x 4p and 6p x 5p);
    - outputs are deterministic (the same batch twice: equal bits) and independent of the batch composition
      (each item alone and in a reversed batch: equal within float noise);
    - ``validate()`` rejects a wrong file with one line naming it: ``wrong`` gives the options that point at a
      wrong file (default: each ``path="file"`` option replaced by a file of text).

    Raises AssertionError listing every failed check; returns what was checked."""
    import numpy as np
    import torch

    from .execution import Executor

    cls, name = _encoder_class(plugin)
    options = dict(options or {})
    enc = _build(cls, name, options)
    fails: list[str] = []
    unknown = [r for r in enc.representations if r not in KNOWN_REPRESENTATIONS]
    if unknown or not enc.representations:
        fails.append(f"representations {tuple(enc.representations)}: expected names among {KNOWN_REPRESENTATIONS}")
    run = Executor(enc, device)
    run.ensure_loaded()
    if "blocks" in enc.representations and not (isinstance(enc.num_blocks, int) and enc.num_blocks > 0):
        fails.append(f"advertises blocks but num_blocks is {enc.num_blocks!r}")
    p = int(enc.patch_size or 16)
    sizes = list(sizes or [(4 * p, 4 * p), (6 * p, 5 * p)])
    reps = _all_reps(enc)
    rng = np.random.default_rng(0)
    checked: dict[str, Any] = {"plugin": name, "representations": reps, "sizes": sizes}
    widths: dict[str, int] = {}
    for h, w in sizes:
        x = torch.from_numpy(rng.integers(0, 256, (batch, 3, h, w), dtype=np.uint8))
        out = run(x, reps)
        grid = (h // p) * (w // p)
        for r in reps:
            t = out.get(r)
            where = f"{r} at {h}x{w}"
            if not isinstance(t, torch.Tensor):
                fails.append(f"{where}: not returned")
                continue
            if t.dtype != torch.float32 or not bool(torch.isfinite(t).all()):
                fails.append(f"{where}: dtype {t.dtype}, finite {bool(torch.isfinite(t).all())}; expected finite float32")
            # the width: embed_dim for the token views; without embed_dim (the pixels baseline pools at another
            # resolution than its tokens) and for heads, the same width at every size
            kind = "vector" if r in ("cls", "mean_patch") else "grid" if r == "tokens" or r.startswith("block.") \
                else r
            width = enc.embed_dim if enc.embed_dim and kind in ("vector", "grid") else \
                widths.setdefault(kind, t.shape[-1])
            want = (batch, int(enc.prefix_tokens) + grid, width) if kind == "grid" else (batch, width)
            if tuple(t.shape) != want:
                fails.append(f"{where}: shape {tuple(t.shape)}, expected {want} (embed_dim {enc.embed_dim}, "
                             f"prefix_tokens {enc.prefix_tokens}, patch {p})")
        again = run(x, reps)
        varied = [r for r in reps if r in out and not torch.equal(out[r], again[r])]
        if varied:
            fails.append(f"{h}x{w}: not deterministic (the same batch twice differs in {', '.join(varied)})")
        flipped = run(x.flip(0), reps)
        alone = run(x[1:2], reps)
        for r in reps:
            if r not in out:
                continue
            scale = float(out[r].abs().max()) or 1.0
            for label, got, ref in (("reversed batch", flipped[r].flip(0), out[r]), ("alone", alone[r], out[r][1:2])):
                if not torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale):
                    fails.append(f"{r} at {h}x{w}: item differs when run {label} (max abs difference "
                                 f"{float((got - ref).abs().max()):.3g}): outputs depend on the batch")
                    break
    checked["wrong_file"] = _check_wrong_file(cls, name, options, wrong, fails)
    if fails:
        raise AssertionError(f"encoder plugin '{name}' fails the conformance kit:\n  " + "\n  ".join(fails))
    return checked


def _check_wrong_file(cls: type, name: str, options: dict, wrong: dict | None, fails: list[str]) -> list[str]:
    """validate() of the plugin with ``wrong`` options (default: each file option pointing at a text file)."""
    with tempfile.TemporaryDirectory(prefix="harness-kit-") as tmp:
        if wrong is None:
            bad = Path(tmp) / "wrong.pth"
            bad.write_bytes(WRONG_FILE)
            wrong = {k: str(bad) for k, o in cls.option_schema().items() if o.path == "file"}
        for key, value in wrong.items():
            try:
                enc = _build(cls, name, {**options, key: value})
                enc.supports("tokens")
            except (HarnessError, SpecError, ValueError) as exc:
                msg = str(exc)
                if "\n" in msg.strip() or str(value) not in msg:
                    fails.append(f"option {key} = wrong file {value}: the error should be one line naming it; got {msg!r}")
                continue
            fails.append(f"option {key} = wrong file {value}: validate() accepted it")
    return sorted(wrong)


def check_resample(task, produced: dict, metrics=None) -> dict:
    """Check a task's bootstrap contract on what its ``run`` returned: ``per_item`` holds ``items``,
    ``task.resample`` on the identity resample (one row of ones) gives exactly the reported value of every
    metric it returns, and of every one of ``metrics`` (default: the task's headline metrics), and drawing every
    item twice gives the same values (resamples by image hold more or fewer than n items). Returns the values;
    raises AssertionError naming each mismatch."""
    import numpy as np

    from .bootstrap import same_value

    per_item = {k: np.asarray(v) for k, v in (produced.get("per_item") or {}).items()}
    assert "items" in per_item, "per_item has no 'items' (the keys of the resampled items)"
    values = task.resample(per_item, np.ones((1, len(per_item["items"])), np.int32))
    wanted = list(task.headline if metrics is None else metrics)
    missing = [m for m in wanted if m in produced["metrics"] and m not in values]
    assert not missing, f"resample does not recompute {missing}"
    bad = {m: (float(v[0]), produced["metrics"][m]) for m, v in values.items()
           if m in produced["metrics"] and not same_value(float(v[0]), produced["metrics"][m])}
    assert not bad, f"identity resample differs from the metrics (statistic, metric): {bad}"
    # every item drawn twice is the same data: a statistic that divides by n instead of the items drawn (wrong
    # when a resample draws whole images, bootstrap_by: image) gives twice the value here
    doubled = task.resample(per_item, np.full((1, len(per_item["items"])), 2, np.int32))
    off = {m: (float(doubled[m][0]), float(v[0])) for m, v in values.items() if m in doubled
           and not same_value(float(v[0]), None) and not np.isclose(float(doubled[m][0]), float(v[0]), rtol=1e-9)}
    assert not off, ("drawing every item twice changes the statistic (doubled, identity): "
                     f"{off}; divide by the items drawn (counts.sum(1)), not by n")
    return {m: float(v[0]) for m, v in values.items()}
