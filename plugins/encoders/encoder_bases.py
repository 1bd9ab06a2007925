"""Encoder base classes of the ViT-family plugins.

``TokenEncoder``: an encoder whose model (``self.backbone``, set in ``load``) yields the CLS-first token
sequence through ``forward_intermediates`` (the core's one forward, ``harness.execution.Executor``, derives
the named representations from it and does loading, device, inference mode and autocast).
``FileWeights``: the weights' file SHA-256 in the identity (cache keys).
``CheckpointEncoder``: an official checkpoint read with a method-specific key mapping (``split``), its
architecture read off the tensors (``infer``), the module built (``build``) and loaded strictly; the paper's
seven methods subclass it directly, the later families through ``weight_files.ReleasedWeightsEncoder``.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness.api import Encoder, HarnessError, Option, file_sha256

from .checkpoint_reading import NeedsUnpickling, count_by_prefix, guess_layout, load_strict, read_checkpoint
from .vit_architecture import Backbone, LayoutError, build_model, infer_arch


def with_defaults(cls: type, opts: dict) -> dict:
    """Options with the schema's defaults filled in (the core does this too; direct construction in
    tests and notebooks then behaves the same)."""
    full = {k: o.default for k, o in cls.option_schema().items() if not o.required}
    full.update(opts)
    return full


class TokenEncoder(Encoder):
    """An encoder whose model yields a token sequence with the CLS token first.

    Subclasses set ``self.backbone`` in ``load``: a module with ``forward_intermediates(x, indices,
    final=True)`` in the contract of ``harness.api.Encoder.forward_intermediates``, e.g. a ``Backbone``
    (or override ``forward_intermediates``). With a projection head they implement ``project(tokens)``.
    """

    representations = ("cls", "mean_patch", "tokens", "blocks")

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **with_defaults(type(self), opts))
        self.backbone: nn.Module | None = None
        self.device = "cpu"

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        return self.backbone.forward_intermediates(x, indices, final=final)

    def _place(self, device: str) -> None:
        self.device = device
        self.backbone.to(device).eval().requires_grad_(False)


class FileWeights:
    """Mixin (before the Encoder base) for an encoder whose weights are one file, ``path`` (default: the
    ``checkpoint`` option): the file's SHA-256 is part of its identity, so other weights never share a cache."""

    _sha: str | None = None

    @property
    def path(self) -> str:
        return str(self.opts["checkpoint"])

    def identity(self) -> dict:
        ident = super().identity()
        if self._sha is None:
            self._sha = file_sha256(str(self.path))
        ident["checkpoint_sha256"] = self._sha
        return ident


@dataclass
class Split:
    """A checkpoint after a method's key mapping."""

    backbone: dict
    head: dict | None = None  # projection-head state dict (prefix stripped), None if the file has none
    ignored: dict[str, int] = field(default_factory=dict)  # deliberately unused entries, by prefix
    source: str = ""  # which part of the file was read, e.g. "checkpoint['teacher']"


class CheckpointEncoder(FileWeights, TokenEncoder):
    """An official ViT checkpoint read with a method-specific key mapping, loaded strictly.

    Subclasses set ``method`` (display name), ``expected`` (what its files look like, for errors),
    ``family``/``ln_eps``, implement ``split(obj)`` and, if they have a head, ``build_head`` + ``project``.
    Families with their own module override ``read``, ``infer``, ``build``, ``wrap`` and
    ``forward_intermediates`` (``weight_files.ReleasedWeightsEncoder``).
    """

    method = "?"
    expected = "?"
    family = "vit"
    ln_eps = 1e-6
    pos_resample = "size"  # the position-table resampling of the method's own code (vit_architecture.Arch)
    has_head = False  # the method defines a projection head in the file (Split.head; the file may still lack it)

    options = {
        "checkpoint": Option(str, help="path of the official checkpoint file", path="file"),
        "strict": Option(bool, True, "error on any missing/unexpected key after the key mapping; with false "
                                     "the keys are reported in the result instead"),
        "weights_only": Option(bool, True, "torch.load(weights_only=True); set false only for trusted files "
                                           "that pickle other Python objects"),
        "num_heads": Option(int, None, "attention heads (not visible in the weights); default width // 64",
                            nullable=True, check=lambda v: None if v is None or v > 0 else "must be > 0"),
    }

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self._peeked: tuple[Split, Any] | None = None
        self.model: nn.Module | None = None  # the loaded module (the paper's seven: wrapped in ``backbone``)
        self.head: nn.Module | None = None
        self.arch = None
        self.load_report: dict = {}
        self._cache: dict[tuple, torch.Tensor] = {}
        self._unpickle = False  # only load() may unpickle a weights_only: false file (it runs the file's code)
        self._deferred_warned = False

    # -- subclass API ---------------------------------------------------------------------------
    def split(self, obj: Any) -> Split:
        raise NotImplementedError

    def read(self) -> Any:
        """The object the file holds (memory-mapped where possible)."""
        return read_checkpoint(self.path, weights_only=self.opts.get("weights_only", True), expected=self.expected,
                               unpickle=self._unpickle)

    def infer(self, sd: dict):
        """The architecture read off the mapped backbone tensors; LayoutError (the reason) when they are not
        this family's."""
        arch = infer_arch(sd, self.family, num_heads=self.opts.get("num_heads"), ln_eps=self.ln_eps, where=self.path)
        return dataclasses.replace(arch, pos_resample=self.pos_resample)

    def build(self, arch) -> nn.Module:
        """The module the mapped backbone state dict loads into (weights randomly initialised)."""
        return build_model(arch)

    def wrap(self, model: nn.Module, arch) -> nn.Module | None:
        """``self.backbone`` for the loaded module: our forward over timm's ViT/Beit modules."""
        return Backbone(model, arch)

    def build_head(self, sd: dict) -> nn.Module:
        raise NotImplementedError

    def wants_head(self) -> bool:
        return self.has_head

    # -- helpers ---------------------------------------------------------------------------------
    def wrong_layout(self, obj: Any, why: str = "") -> HarnessError:
        extra = f" ({why})" if why else ""
        article = "an" if self.method[:1].lower() in "aeiou" or self.method.startswith(("MAE", "iBOT")) else "a"
        found = guess_layout(obj)
        if re.search(rf"(?<!\w){re.escape(self.method)}(?!\w)", found):  # this method's layout, but entries
            # are missing: truncated or edited (a whole-word match: "DINO" is not found in "DINOv2")
            return HarnessError(f"{self.path}: incomplete {self.method} checkpoint{extra}: expected {self.expected}")
        return HarnessError(f"{self.path}: not {article} {self.method} checkpoint{extra}: expected {self.expected}; "
                            f"found {found}")

    def require_dict(self, obj: Any, key: str) -> dict:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            raise self.wrong_layout(obj, f"no '{key}' entry")
        return obj[key]

    def pretrain_state_dict(self, obj: Any, why: str) -> dict:
        """``obj['model']`` of a pretrain-only file (BEiT, MAE), refused when its keys carry the ``encoder.``
        prefix (CAE's layout) or a classifier ``head.*``/``fc_norm.*`` (a fine-tuned or supervised model: ``why``)."""
        sd = self.require_dict(obj, "model")
        if any(k.startswith("encoder.") for k in sd):
            raise self.wrong_layout(obj, "keys start with 'encoder.'")
        if any(k.startswith(("head.", "fc_norm.")) for k in sd):
            raise self.wrong_layout(obj, why)
        return sd

    def split_off(self, obj: dict, sd: dict, ignore, *, key: str, depth: int = 1) -> Split:
        """The Split of state dict ``sd`` = ``obj[key]``: the keys for which ``ignore(k)`` holds are left out
        (counted by prefix, ``depth`` levels), and so are the other top-level entries of ``obj``."""
        ignored_keys = [k for k in sd if ignore(k)]
        ignored = count_by_prefix(ignored_keys, depth=depth)
        ignored.update({f"checkpoint['{k}']": 1 for k in obj if k != key})
        dropped = set(ignored_keys)
        return Split(backbone={k: v for k, v in sd.items() if k not in dropped}, ignored=ignored,
                     source=f"checkpoint['{key}']")

    def _peek(self) -> tuple[Split, Any]:
        """Read and map the file once (memory-mapped where possible); validation errors surface here."""
        if self._peeked is None:
            obj = self.read()
            sp = self.split(obj)
            try:
                arch = self.infer(sp.backbone)
            except LayoutError as exc:
                raise self.wrong_layout(obj, str(exc)) from None
            self._peeked = (sp, arch)
            self.num_blocks, self.embed_dim, self.patch_size = arch.depth, arch.embed_dim, arch.patch_size
        return self._peeked

    def peek_or_defer(self) -> bool:
        """Read the file's layout, unless that needs unpickling (``weights_only: false`` on a file that
        pickles Python objects) outside ``load()``: validation promises to run nothing from a file, so
        the checks wait for the run, with one loud warning. True when the layout was read."""
        try:
            self._peek()
            return True
        except NeedsUnpickling as exc:
            if not self._deferred_warned:
                warnings.warn(f"encoder '{self.name}': {exc}; not opened during validation — 'harness run' "
                              "will unpickle it (weights_only: false), so only run files you trust")
                self._deferred_warned = True
            return False

    def validate(self) -> None:
        self.peek_or_defer()  # a wrong, truncated or unreadable file fails at spec validation, naming the option

    def supports(self, rep: str) -> bool:
        if not self.peek_or_defer():
            return super().supports(rep)
        if rep == "projected" and self.has_head:
            return self._peeked[0].head is not None and self.wants_head()
        return super().supports(rep)

    def identity(self) -> dict:
        ident = super().identity()
        if self.pos_resample != "size":  # features at other sizes depend on it (DINO/iBOT since 2026-11)
            ident["pos_resample"] = self.pos_resample
        return ident

    def load(self, device: str = "cpu") -> None:
        if self.model is None:
            self._unpickle = True
            sp, arch = self._peek()
            strict = self.opts.get("strict", True)
            with seeded(0):  # non-strict loads leave missing weights at a reproducible random init
                model = self.build(arch)
            bb = load_strict(model, sp.backbone, strict=strict, where=self.path,
                             what=f"{self.method} backbone ({arch.describe()})")
            report = {"source": sp.source, "architecture": arch.describe(), "ignored": dict(sp.ignored),
                      "missing": bb["missing"], "unexpected": bb["unexpected"]}
            if sp.head is not None and self.wants_head():
                with seeded(0):
                    head = self.build_head(sp.head)
                hd = load_strict(head, sp.head, strict=strict, where=self.path, what=f"{self.method} projection head")
                report["missing"] += [f"head: {k}" for k in hd["missing"]]
                report["unexpected"] += [f"head: {k}" for k in hd["unexpected"]]
                self.head = head.eval().requires_grad_(False)
            self.model = model.float()  # released fp16 tensors (OpenAI CLIP) run in float32, autocast aside
            self.arch = arch
            self.backbone = self.wrap(self.model, arch)
            self.load_report = report
            self._peeked = (Split(backbone={}, head=None if sp.head is None else {}, ignored=sp.ignored,
                                  source=sp.source), arch)  # drop the tensors (memory map) but keep the facts
        self._place(device)

    def _place(self, device: str) -> None:
        self.device = device
        self._cache.clear()
        self.model.to(device).eval().requires_grad_(False)
        if self.head is not None:
            self.head.to(device)

    def cached(self, key: tuple, make) -> torch.Tensor:
        """A per-input-size tensor (resampled position table) computed once per device."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


class seeded:
    """``with seeded(s):`` seeds torch's global RNG and restores it on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._ctx = torch.random.fork_rng(devices=[])
        self._ctx.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
