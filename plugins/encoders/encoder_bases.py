"""Encoder base classes of the ViT-family plugins.

``TokenEncoder``: an encoder whose model returns a CLS-first token sequence; ``forward`` is a pure function
of the batch (the core's executor does loading, device, inference mode and autocast) that asks the model's
``forward_intermediates`` for the final-norm tokens and the raw block outputs it needs.
``CheckpointEncoder``: an official checkpoint read with a method-specific key mapping (``split``), its
architecture read off the tensors, loaded strictly; the method plugins subclass it.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from harness import Encoder, HarnessError, Option, file_sha256

from .checkpoint_reading import NeedsUnpickling, guess_layout, load_strict, read_checkpoint
from .vit_architecture import Arch, Backbone, LayoutError, build_model, infer_arch


def with_defaults(cls: type, opts: dict) -> dict:
    """Options with the schema's defaults filled in (the core does this too; direct construction in
    tests and notebooks then behaves the same)."""
    full = {k: o.default for k, o in cls.option_schema().items() if not o.required}
    full.update(opts)
    return full


def select_representations(reps, tokens: torch.Tensor, block, project=None) -> dict:
    """The named representations from final-norm ``tokens`` [B,1+N,D] (CLS first); ``block(i)`` returns
    the raw output of block i, ``project(tokens)`` the projection head's output."""
    out = {}
    for r in reps:
        if r == "cls":
            out[r] = tokens[:, 0]
        elif r == "mean_patch":
            out[r] = tokens[:, 1:].mean(dim=1)  # CLS excluded, as the official extract()
        elif r == "tokens":
            out[r] = tokens
        elif r == "projected" and project is not None:
            out[r] = project(tokens)
        elif r.startswith("block."):
            out[r] = block(int(r.split(".", 1)[1]))
        else:
            raise HarnessError(f"unsupported representation '{r}'")
    return out


class TokenEncoder(Encoder):
    """An encoder whose model yields a token sequence with the CLS token first.

    Subclasses set ``self.backbone`` in ``load``: a module with ``forward_intermediates(x, block_ids,
    final=True)`` returning (tokens after the final norm [B,1+N,D] or None when ``final`` is False,
    {i: raw output of block i [B,1+N,D]}), e.g. a ``Backbone``. With a projection head they implement
    ``project(tokens)`` (tokens after the final norm -> [B, P]).
    """

    representations = ("cls", "mean_patch", "tokens", "blocks")

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **with_defaults(type(self), opts))
        self.backbone: Backbone | None = None
        self.device = "cpu"

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        raise HarnessError(f"encoder '{self.name}' has no projection head")

    def _check_reps(self, reps: Sequence[str]) -> None:
        bad = [r for r in reps if not self.supports(r)]
        if bad:
            n = f" ({self.num_blocks} blocks)" if self.num_blocks is not None else ""
            raise HarnessError(f"encoder '{self.name}': unsupported representation(s) {', '.join(bad)}; "
                               f"available: {', '.join(self.representations)}{n}")

    def forward(self, x: torch.Tensor, reps: Sequence[str]) -> dict:
        if self.backbone is None:
            raise HarnessError(f"encoder '{self.name}' is not loaded: call load(device) first "
                               "(harness.execution.Executor does it)")
        self._check_reps(reps)
        block_ids = sorted(int(r.split(".", 1)[1]) for r in reps if r.startswith("block."))
        final = any(not r.startswith("block.") for r in reps)
        tokens, blocks = self.backbone.forward_intermediates(x, block_ids, final=final)
        return select_representations(reps, tokens, blocks.__getitem__, self.project)

    def _place(self, device: str) -> None:
        self.device = device
        self.backbone.to(device).eval().requires_grad_(False)


@dataclass
class Split:
    """A checkpoint after a method's key mapping."""

    backbone: dict
    head: dict | None = None  # projection-head state dict (prefix stripped), None if the file has none
    ignored: dict[str, int] = field(default_factory=dict)  # deliberately unused entries, by prefix
    source: str = ""  # which part of the file was read, e.g. "checkpoint['teacher']"


class CheckpointEncoder(TokenEncoder):
    """An official ViT checkpoint read with a method-specific key mapping, loaded strictly.

    Subclasses set ``method`` (display name), ``expected`` (what its files look like, for errors),
    ``family``/``ln_eps``, implement ``split(obj)`` and, if they have a head, ``build_head`` + ``project``.
    """

    method = "?"
    expected = "?"
    family = "vit"
    ln_eps = 1e-6
    pos_resample = "size"  # the position-table resampling of the method's own code (vit_architecture.Arch)
    has_head = False  # the method defines a projection head (the file may still lack it)

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
        self._peeked: tuple[Split, Arch] | None = None
        self.head: nn.Module | None = None
        self.arch: Arch | None = None
        self.load_report: dict = {}
        self._sha: str | None = None
        self._unpickle = False  # only load() may unpickle a weights_only: false file (it runs the file's code)
        self._deferred_warned = False

    # -- subclass API ---------------------------------------------------------------------------
    def split(self, obj: Any) -> Split:
        raise NotImplementedError

    def build_head(self, sd: dict) -> nn.Module:
        raise NotImplementedError

    def wants_head(self) -> bool:
        return self.has_head

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return str(self.opts["checkpoint"])

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

    def _peek(self) -> tuple[Split, Arch]:
        """Read and map the file once (memory-mapped where possible); validation errors surface here."""
        if self._peeked is None:
            obj = read_checkpoint(self.path, weights_only=self.opts.get("weights_only", True),
                                  expected=self.expected, unpickle=self._unpickle)
            sp = self.split(obj)
            try:
                arch = infer_arch(sp.backbone, self.family, num_heads=self.opts.get("num_heads"),
                                  ln_eps=self.ln_eps, where=self.path)
                arch = dataclasses.replace(arch, pos_resample=self.pos_resample)
            except LayoutError as exc:
                raise self.wrong_layout(obj, str(exc)) from None
            self._peeked = (sp, arch)
            self.num_blocks = arch.depth
            self.embed_dim, self.patch_size = arch.embed_dim, arch.patch_size
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
        if rep == "projected":
            return self.has_head and self._peeked[0].head is not None and self.wants_head()
        return super().supports(rep)

    def identity(self) -> dict:
        ident = super().identity()
        if self._sha is None:
            self._sha = file_sha256(self.path)
        ident["checkpoint_sha256"] = self._sha
        if self.pos_resample != "size":  # features at other sizes depend on it (DINO/iBOT since 2026-11)
            ident["pos_resample"] = self.pos_resample
        return ident

    def load(self, device: str = "cpu") -> None:
        if self.backbone is not None:
            self._place(device)
            return
        self._unpickle = True
        sp, arch = self._peek()
        strict = self.opts.get("strict", True)
        with seeded(0):  # non-strict loads leave missing weights at a reproducible random init
            model = build_model(arch)
        report = {"source": sp.source, "architecture": arch.describe(),
                  "ignored": dict(sp.ignored)}
        bb = load_strict(model, sp.backbone, strict=strict, where=self.path,
                         what=f"{self.method} backbone ({arch.describe()})")
        report.update(missing=bb["missing"], unexpected=bb["unexpected"])
        if sp.head is not None and self.wants_head():
            with seeded(0):
                head = self.build_head(sp.head)
            hd = load_strict(head, sp.head, strict=strict, where=self.path, what=f"{self.method} projection head")
            report["missing"] += [f"head: {k}" for k in hd["missing"]]
            report["unexpected"] += [f"head: {k}" for k in hd["unexpected"]]
            self.head = head.eval().requires_grad_(False)
        self.arch = arch
        self.backbone = Backbone(model, arch)
        self.load_report = report
        self._peeked = (Split(backbone={}, head=None if sp.head is None else {}, ignored=sp.ignored,
                              source=sp.source), arch)  # drop the tensors (memory map) but keep the facts
        self._place(device)

    def _place(self, device: str) -> None:
        super()._place(device)
        if self.head is not None:
            self.head.to(device)


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
