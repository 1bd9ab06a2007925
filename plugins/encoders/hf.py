"""Any supported Hugging Face ``transformers`` vision encoder (registered as ``hf``), from a ``save_pretrained``
folder or a hub id in the local hub cache; nothing is downloaded.

Options: ``model`` (a folder, or a hub id resolved in ``$HF_HUB_CACHE`` / ``$HF_HOME/hub`` at ``revision``,
default ``main``; a 40-hex revision names the snapshot), ``mean``/``std`` (default: the snapshot's
``preprocessor_config.json``, else the family's image-processor defaults), ``image_size`` (the input size the
model's processor feeds it, default from the same sources; informational: tasks choose their inputs, and other
sizes go through the family's own position handling). The family comes from ``config.json``'s ``model_type``
(``hf_families``); the model is ``transformers``' own class, loaded in float32 with every backbone weight
required, and run by its own forward with ``output_hidden_states``:

- ``tokens``: the final tokens (``last_hidden_state``; CLIP: its ``post_layernorm`` applied to every token, as
  ``pooler_output`` does to the CLS token), the CLS token first where the family has one, register and
  distillation tokens dropped, then the patch tokens in row-major order; ``cls`` its first token,
  ``mean_patch`` the mean of the patch tokens (the executor derives both).
- ``block.<i>``: ``hidden_states[i + 1]``, the output of layer i (0-based), in the same token layout.
- ``projected``: CLIP's ``image_embeds`` (``visual_projection`` of the normalised CLS token, not L2-normalised),
  SigLIP's attention-pool head (``pooler_output``); ``pooled``: the model's own pooler (ViT/DeiT dense + tanh on
  CLS, BEiT/Data2Vec LayerNorm of the mean patch token, AIMv2's attention-pool head), where its weights exist.

ViT-MAE runs with ``mask_ratio`` 0 and identity noise, so no token is dropped or shuffled. SigLIP 2 (NaFlex)
receives the image as its packed patch sequence (``pixel_values`` [B, h*w, 3*p*p], an all-ones
``pixel_attention_mask`` and ``spatial_shapes`` (h, w)), which is what its image processor builds.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import torch

from harness.api import Encoder, HarnessError, Option, hookimpl, import_transformers

from .encoder_bases import with_defaults
from .hf_families import BY_TYPE, SUPPORTED, Family
from .hf_locate import Located, locate
from .vit_architecture import drop_tokens


def _three(v):
    return None if v is None or (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)) \
        else "must be a list of three numbers"


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def processor_size(proc: dict) -> int | None:
    """The square input size a preprocessor config feeds the model (its crop when it crops), if it says one."""
    size = proc.get("crop_size") if proc.get("do_center_crop") and proc.get("crop_size") else proc.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return int(size) if isinstance(size, (int, float)) and size else None


def weight_names(loc: Located) -> list[str]:
    """The tensor names in the weight files (headers only: safetensors, index files; memory-mapped .bin)."""
    names: list[str] = []
    for path in loc.weight_files():
        if path.name.endswith(".index.json"):
            return list((loc.read_json(path.name) or {}).get("weight_map", {}))
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), "pt") as f:
                    names += list(f.keys())
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
                raise HarnessError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        else:
            try:
                names += list(torch.load(str(path), map_location="cpu", mmap=True, weights_only=True))
            except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
                raise HarnessError(f"{path}: not a readable weight file ({type(exc).__name__}: {exc})") from None
    return names


def has(weight: str, part: str) -> bool:
    """The weight name contains the module path ``part`` (e.g. 'head.') from a name boundary on."""
    return f".{part}" in f".{weight}"


@contextmanager
def quiet(tf):
    """transformers without progress bars and warnings (key tables, unused text-config entries) in run logs;
    the load report lists the keys."""
    log = tf.utils.logging
    bars, level = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()
    log.set_verbosity_error()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def submodule(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """``model.<name>``, or ``model.vision_model.<name>`` (CLIP's towers keep the vision transformer there)."""
    for owner in (model, getattr(model, "vision_model", None)):
        if owner is not None and getattr(owner, name, None) is not None:
            return getattr(owner, name)
    raise HarnessError(f"{type(model).__name__} has no module '{name}'")


class HuggingFace(Encoder):
    """Any supported Hugging Face transformers vision encoder, from a local folder or the local hub cache."""

    options = {
        "model": Option(str, help="a folder written by save_pretrained, or a hub id (org/name) in the local "
                                  "Hugging Face cache (never downloaded)"),
        "revision": Option(str, None, "hub ids: a branch/tag under refs/ or a 40-hex commit (default main)",
                           nullable=True),
        "mean": Option(list, None, "normalisation mean (default: the snapshot's preprocessor_config.json, else the "
                                   "family's image-processor default)", nullable=True, check=_three),
        "std": Option(list, None, "normalisation std (default: as mean)", nullable=True, check=_three),
        "image_size": Option(int, None, "the input size the model's processor uses (default: preprocessor_config."
                                        "json, else the family's); reported, tasks choose their own input sizes",
                             nullable=True, check=lambda v: None if v is None or v > 0 else "must be > 0"),
    }
    version = "1"

    def __init__(self, name: str, **opts: Any):
        super().__init__(name, **with_defaults(type(self), opts))
        self.located: Located | None = None
        self.family: Family | None = None
        self.config = None
        self.model = None
        self.image_size: int | None = None
        self._sha: str | None = None
        self.representations = ()

    # -- validation: locate, read the config and the weight names, fix the preprocessing --------------------
    def _setup(self) -> None:
        if self.located is not None:
            return
        where = f"encoder '{self.name}'"
        loc = locate(str(self.opts["model"]), self.opts.get("revision"), where)
        raw = loc.read_json("config.json") or {}
        model_type = raw.get("model_type")
        fam = BY_TYPE.get(model_type)
        if fam is None:
            raise HarnessError(f"{loc.folder / 'config.json'}: model_type {model_type!r} is not a supported vision "
                               f"encoder; supported model_types: {', '.join(SUPPORTED)}")
        names = weight_names(loc)
        tf = import_transformers()
        overrides = dict(fam.load_kwargs)
        if fam.projection == "clip" and isinstance(raw.get("vision_config"), dict) and "projection_dim" in raw:
            overrides["projection_dim"] = raw["projection_dim"]  # a full CLIP config keeps it at the top level
        with quiet(tf):
            cfg = getattr(tf, fam.model_class).config_class.from_pretrained(str(loc.folder), **overrides)
        self.family, self.config = fam, cfg
        self.num_blocks, self.embed_dim = int(cfg.num_hidden_layers), int(cfg.hidden_size)
        self.patch_size = _pair(cfg.patch_size)[0]
        self.prefix_tokens = 1 if fam.cls else 0
        self.pretraining = fam.pretraining
        heads = [rep for rep, part in fam.head_keys.items()
                 if fam.uses_head(cfg) and any(has(n, part) for n in names)]
        self.representations = ("cls",) * fam.cls + ("mean_patch", "tokens", "blocks") + tuple(heads)
        proc = loc.read_json("preprocessor_config.json") or {}
        for key, default in (("mean", fam.mean_std[0]), ("std", fam.mean_std[1])):
            if self.opts.get(key) is None:
                value = proc.get(f"image_{key}", default)
                if _three(list(value) if isinstance(value, (list, tuple)) else value):
                    raise HarnessError(f"{loc.folder / 'preprocessor_config.json'}: image_{key} is {value!r}; "
                                       f"expected three numbers")
                self.opts[key] = [float(v) for v in value]
        self.image_size = self.opts.get("image_size") or processor_size(proc) or fam.size
        self.located = loc

    def validate(self) -> None:
        self._setup()

    def supports(self, rep: str) -> bool:
        self._setup()
        return super().supports(rep)

    def identity(self) -> dict:
        self._setup()  # fills mean/std before the options enter the key
        ident = super().identity()
        ident["transformers"] = import_transformers().__version__
        if self.located.commit:
            ident["commit"] = self.located.commit
        else:
            if self._sha is None:
                self._sha = self.located.checksum()
            ident["weights_sha256"] = self._sha
        return ident

    # -- loading and the forward ---------------------------------------------------------------------------
    def load(self, device: str = "cpu") -> None:
        self._setup()
        if self.model is None:
            fam, loc = self.family, self.located
            tf = import_transformers()
            try:
                with quiet(tf):
                    model, info = getattr(tf, fam.model_class).from_pretrained(
                        str(loc.folder), config=self.config, local_files_only=True, dtype=torch.float32,
                        output_loading_info=True)
            except (RuntimeError, OSError, ValueError) as exc:  # e.g. weights of another shape than the config's
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise HarnessError(f"{loc.folder}: transformers could not load {fam.model_class}: {first}") from None
            optional = [part for rep, part in fam.head_keys.items() if rep not in self.representations]
            missing = [k for k in info.get("missing_keys", ()) if not any(has(k, p) for p in optional)]
            bad = missing + [str(m) for m in info.get("mismatched_keys", ())]
            if bad:
                raise HarnessError(f"{loc.folder}: {fam.model_class} weights missing or of the wrong shape: "
                                   f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}")
            self.model = model
            self.load_report = {"source": f"{fam.model_class} from {loc.hub_id or loc.folder}"
                                          + (f" @ {loc.commit}" if loc.commit else ""),
                                "family": fam.name, "image_size": self.image_size,
                                "unexpected": sorted(info.get("unexpected_keys", ())),
                                "missing": sorted(info.get("missing_keys", ()))}
        self.model.to(device).eval().requires_grad_(False)

    def _inputs(self, x: torch.Tensor) -> dict:
        """The forward's keyword arguments for a normalised batch (size handling per family)."""
        fam, cfg, p = self.family, self.config, self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        native = None if fam.sizes == "naflex" else _pair(cfg.image_size)
        if fam.sizes == "naflex":  # the processor's packing: patches row-major, each (p, p, channels) flattened
            b = x.shape[0]
            patches = x.reshape(b, 3, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * 3)
            return {"pixel_values": patches, "pixel_attention_mask": torch.ones(b, h * w, dtype=torch.int32,
                                                                                device=x.device),
                    "spatial_shapes": torch.tensor([[h, w]] * b, dtype=torch.long, device=x.device)}
        if fam.sizes == "native" and not cfg.is_native and tuple(x.shape[-2:]) != native:
            raise HarnessError(f"encoder '{self.name}': {fam.name} with is_native false has a position table for "
                               f"{native[0]}x{native[1]} inputs only; got {x.shape[-2]}x{x.shape[-1]} (use a "
                               f"transform of that size, or an is_native checkpoint)")
        kwargs = {"pixel_values": x}
        if fam.sizes == "flag" and tuple(x.shape[-2:]) != native:
            kwargs["interpolate_pos_encoding"] = True
        if "mask_ratio" in fam.load_kwargs:  # ViT-MAE: identity noise keeps every patch in image order
            kwargs["noise"] = torch.arange(h * w, device=x.device, dtype=torch.float32).expand(x.shape[0], -1)
        return kwargs

    def _strip(self, t: torch.Tensor) -> torch.Tensor:
        """Register / distillation tokens dropped (they sit right after the CLS token)."""
        return drop_tokens(t, 1, self.family.extra_tokens(self.config)) if self.family.cls else t

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], final: bool = True):
        out = self.model(**self._inputs(x), output_hidden_states=True, return_dict=True)
        blocks = {i: self._strip(out.hidden_states[i + 1]) for i in indices}
        if not final:
            return None, blocks
        t = out.last_hidden_state
        if self.family.final_norm:
            t = submodule(self.model, self.family.final_norm)(t)
        return self._strip(t), blocks

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.family.projection == "clip":
            return submodule(self.model, "visual_projection")(tokens[:, 0])
        return submodule(self.model, "head")(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return submodule(self.model, self.family.pooler)(tokens)


@hookimpl
def register_encoders(register):
    register("hf", HuggingFace)
