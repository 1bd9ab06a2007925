"""Any timm architecture with a local checkpoint file (registered as ``timm``; never touches the hub).

Options: ``model`` (a timm name, e.g. ``vit_base_patch16_224``), ``checkpoint`` (local file),
``checkpoint_key`` (entry holding the state dict; default: the first of 'state_dict', 'model', 'module'
that is a state dict, else the file itself), ``strip_prefixes`` (removed from key starts, in order),
``timm_filter`` (apply the architecture's own timm ``checkpoint_filter_fn`` with ``filter_kwargs``: layout
conversion and position-embedding resampling; note timm routes any dict with ``mask_token`` to its DINOv2 converter, so
BEiT/CAE-style files should use the dedicated plugins), ``model_kwargs`` (passed to ``timm.create_model``,
e.g. ``{num_classes: 0}`` for a backbone-only file, ``{img_size: 320}``), ``pretraining`` (recorded).
Representations: cls / mean_patch / tokens (after the model's final norm, register tokens dropped, CLS
first) and ``block.i`` (raw block outputs), all from timm's own ``forward_intermediates``. The model must
have a CLS token. Inputs must match the model's ``img_size`` unless the architecture supports
``dynamic_img_size`` (tried automatically). The checkpoint is read, mapped and checked against the
architecture at spec validation (memory-mapped, nothing loaded), like the paper encoders' files.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Sequence

import torch

from harness.api import HarnessError, Option, hookimpl
from harness.api import import_timm

from .checkpoint_reading import NeedsUnpickling, check_state_dict, guess_layout, is_state_dict, read_checkpoint
from .encoder_bases import FileWeights, TokenEncoder, seeded
from .vit_architecture import drop_tokens, timm_intermediates


class TimmModel(FileWeights, TokenEncoder):
    """A timm architecture loaded from a local checkpoint file (strict)."""

    options = {
        "model": Option(str, help="timm architecture name, e.g. vit_base_patch16_224"),
        "checkpoint": Option(str, help="local checkpoint file", path="file"),
        "checkpoint_key": Option(str, None, "entry of the file holding the state dict (default: auto)",
                                 nullable=True),
        "strip_prefixes": Option(list, [], "key prefixes to remove, e.g. ['module.', 'backbone.']"),
        "timm_filter": Option(bool, True, "apply timm's checkpoint_filter_fn for the architecture"),
        "filter_kwargs": Option(dict, {}, "keyword arguments for that filter, e.g. {adapt_layer_scale: true} for "
                                          "DeiT III files (gamma_1/gamma_2 -> ls1/ls2.gamma, as timm's deit3 models)"),
        "pretraining": Option(str, None, "how the weights were pretrained, recorded in results (e.g. supervised)",
                              nullable=True, choices=["supervised", "contrastive", "masked image modelling",
                                                      "contrastive + masked image modelling", "language-image"]),
        "model_kwargs": Option(dict, {}, "extra timm.create_model arguments"),
        "strict": Option(bool, True, "error on any missing/unexpected key; false reports them instead"),
        "weights_only": Option(bool, True, "torch.load(weights_only=True); false only for trusted files"),
    }

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **opts)
        self.pretraining = self.opts.get("pretraining")
        self.model = None
        self._mapped: tuple[dict, str, list[str]] | None = None

    def _build(self):
        if self.model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            timm = import_timm()
            name = self.opts["model"]
            if not timm.is_model(name):
                from harness.api import did_you_mean
                raise HarnessError(f"encoder '{self.name}': unknown timm model '{name}'"
                                   f"{did_you_mean(name, timm.list_models())}")
            kwargs = dict(self.opts.get("model_kwargs") or {})
            with seeded(0):
                try:
                    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs)
                except TypeError:  # architecture without dynamic_img_size
                    model = timm.create_model(name, pretrained=False, **kwargs)
            if getattr(model, "cls_token", None) is None:
                raise HarnessError(f"encoder '{self.name}': timm model '{name}' has no CLS token")
            if not hasattr(model, "forward_intermediates"):
                raise HarnessError(f"encoder '{self.name}': timm model '{name}' has no forward_intermediates")
            self.model = model.eval()
            self.num_blocks = len(model.blocks) if hasattr(model, "blocks") else None
            self.embed_dim = int(getattr(model, "embed_dim", 0) or getattr(model, "num_features", 0)) or None
            patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
            self.patch_size = int(patch[0]) if isinstance(patch, (tuple, list)) else patch
        return self.model

    def supports(self, rep: str) -> bool:
        self._build()
        if rep.startswith("block.") and self.num_blocks is None:
            return False
        return super().supports(rep)

    def identity(self) -> dict:
        ident = super().identity()
        ident["timm"] = import_timm().__version__
        return ident

    def _state_dict(self, obj) -> tuple[dict, str, list[str]]:
        expected = "a state dict (or a dict holding one under 'state_dict'/'model'/'module')"
        key = self.opts.get("checkpoint_key")
        if key is not None:
            if not (isinstance(obj, dict) and is_state_dict(obj.get(key))):
                raise HarnessError(f"{self.path}: no state dict under checkpoint_key '{key}'; found "
                                   f"{guess_layout(obj)}")
            return obj[key], f"checkpoint['{key}']", [k for k in obj if k != key]
        if is_state_dict(obj):
            return obj, "state dict (raw)", []
        for k in ("state_dict", "model", "module"):
            if isinstance(obj, dict) and is_state_dict(obj.get(k)):
                return obj[k], f"checkpoint['{k}']", [o for o in obj if o != k]
        raise HarnessError(f"{self.path}: expected {expected}; found {guess_layout(obj)} "
                           f"(set checkpoint_key)")

    def _map(self) -> tuple[dict, str, list[str]]:
        """Read the file (memory-mapped), pick the state dict, strip prefixes, apply timm's filter and
        check keys and shapes against the architecture; once."""
        if self._mapped is None:
            model = self._build()
            obj = read_checkpoint(self.path, weights_only=self.opts["weights_only"],
                                  expected=f"a checkpoint for timm model '{self.opts['model']}'",
                                  unpickle=getattr(self, "_unpickle", False))
            sd, source, other = self._state_dict(obj)
            for prefix in self.opts.get("strip_prefixes") or []:
                sd = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
            if self.opts["timm_filter"]:
                fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
                if fn is not None:
                    try:
                        sd = fn(dict(sd), model, **(self.opts.get("filter_kwargs") or {}))
                    except Exception as exc:  # noqa: BLE001 - timm filters assert on foreign layouts
                        raise HarnessError(f"{self.path}: timm's checkpoint filter for '{self.opts['model']}' "
                                           f"failed ({type(exc).__name__}: {exc}); set timm_filter: false or "
                                           f"check the file") from exc
            check_state_dict(model, sd, strict=self.opts["strict"], where=self.path,
                             what=f"timm '{self.opts['model']}'")
            self._mapped = (dict(sd), source, other)
        return self._mapped

    def validate(self) -> None:
        try:
            self._map()  # unreadable, wrong or mismatching files fail at spec validation
        except NeedsUnpickling as exc:  # validation runs nothing from a file: the run will check it
            warnings.warn(f"encoder '{self.name}': {exc}; not opened during validation — 'harness run' will "
                          "unpickle it (weights_only: false), so only run files you trust")

    def load(self, device: str = "cpu") -> None:
        self._unpickle = True  # only the run may unpickle a weights_only: false file
        model = self._build()
        if not self.load_report:
            sd, source, other = self._map()
            own = model.state_dict()
            report = check_state_dict(model, sd, strict=self.opts["strict"], where=self.path,
                                      what=f"timm '{self.opts['model']}'")
            model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
            self.load_report = {"source": source, "missing": report["missing"], "unexpected": report["unexpected"],
                                "ignored": {f"checkpoint['{k}']": 1 for k in other}}
            self._mapped = ({}, source, other)  # drop the memory map
        self.device = device
        model.to(device).eval().requires_grad_(False)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        """timm's own ``forward_intermediates``, register tokens dropped (the CLS token kept first)."""
        tokens, blocks = timm_intermediates(self.model, x, indices, final)
        registers = int(getattr(self.model, "num_prefix_tokens", 1)) - 1
        return (None if tokens is None else drop_tokens(tokens, 1, registers)), \
            {i: drop_tokens(b, 1, registers) for i, b in blocks.items()}


@hookimpl
def register_encoders(register):
    register("timm", TimmModel)
