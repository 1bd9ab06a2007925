"""Where a Hugging Face model lives on this machine: a ``save_pretrained`` folder, or a hub id in the local
hub cache (never the network), and what identifies its content.

Hub cache layout (``huggingface_hub``): ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``, ``HF_HOME`` default
``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``) holds ``models--<org>--<name>/refs/<revision>``
(a file holding the 40-hex commit) and ``snapshots/<commit>/<files>``; a 40-hex ``revision`` names the
snapshot directly.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.api import HarnessError, file_sha256

COMMIT = re.compile(r"^[0-9a-f]{40}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def hub_cache() -> Path:
    """The hub cache folder, as ``huggingface_hub`` derives it from the environment."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class Located:
    folder: Path  # the folder holding config.json and the weights
    hub_id: str | None = None  # None for a folder given as a path
    commit: str | None = None  # the snapshot's commit (hub ids)

    def read_json(self, name: str) -> dict | None:
        """``name`` of the folder as a dict; None if absent; one-line error if unreadable."""
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{path}: not readable JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict):
            raise HarnessError(f"{path}: expected a JSON object, found {type(data).__name__}")
        return data

    def weight_files(self) -> list[Path]:
        """The weight files (shards listed by an index file), in a fixed order; one-line error if none."""
        for name in WEIGHTS:
            path = self.folder / name
            if not path.is_file():
                continue
            if name.endswith(".index.json"):
                index = self.read_json(name) or {}
                shards = sorted(set((index.get("weight_map") or {}).values()))
                missing = [s for s in shards if not (self.folder / s).is_file()]
                if not shards or missing:
                    raise HarnessError(f"{path}: shards missing from {self.folder}: {', '.join(missing) or 'none listed'}")
                return [path] + [self.folder / s for s in shards]
            return [path]
        raise HarnessError(f"{self.folder}: no model weights (expected one of {', '.join(WEIGHTS)})")

    def checksum(self) -> str:
        """What identifies a folder's content: SHA-256 over config, preprocessor config and weight files."""
        import hashlib

        h = hashlib.sha256()
        for path in [self.folder / "config.json", self.folder / "preprocessor_config.json", *self.weight_files()]:
            if path.is_file():
                h.update(f"{path.name}\t{file_sha256(path)}\n".encode())
        return h.hexdigest()


def locate(model: str, revision: str | None, where: str) -> Located:
    """``model`` (a folder, or a hub id looked up in the local hub cache at ``revision``, default main)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if revision is not None:
            raise HarnessError(f"{where}: 'revision' applies to hub ids; '{model}' is a folder")
        if not (path / "config.json").is_file():
            raise HarnessError(f"{where}: {path} has no config.json (expected a folder written by save_pretrained)")
        return Located(path)
    if model.startswith((".", "/", "~")) or not HUB_ID.match(model):
        raise HarnessError(f"{where}: model '{model}': no such folder, and not a hub id (org/name)")
    repo = hub_cache() / ("models--" + model.replace("/", "--"))
    rev = revision or "main"
    flag = f" --revision {rev}" if revision else ""
    how = f"download it with `hf download {model}{flag}` (or `huggingface-cli download {model}{flag}`)"
    if COMMIT.match(rev):
        commit = rev
    else:
        ref = repo / "refs" / rev
        if not ref.is_file():
            raise HarnessError(f"{where}: model '{model}' (revision {rev}) is not in the local Hugging Face cache "
                               f"(looked in {repo}); {how}, or set HF_HUB_CACHE/HF_HOME to the cache holding it")
        commit = ref.read_text().strip()
    snap = repo / "snapshots" / commit
    if not (snap / "config.json").is_file():
        raise HarnessError(f"{where}: model '{model}' has no snapshot {commit} with a config.json in the local "
                           f"Hugging Face cache (looked in {snap}); {how}")
    return Located(snap, model, commit)
