"""Content-addressed feature cache for frozen encoders.

One ``.npy`` file per (encoder identity, dataset identity, split, item fingerprint, transform,
representation), with a ``.json`` beside it holding what made it and the BLAKE2b checksum of its array
bytes. Files are written with ordinary I/O (never memory-mapped writes, which die with SIGBUS on a full
disk) to a temporary name and renamed into place, so a killed run never leaves a partial entry under a
real key. Every entry is verified against its checksum the first time a process reads it: a corrupted
entry is reported, removed and recomputed, never used. Temporaries of dead processes are swept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import HarnessError
from .interrupts import critical
from .io import io_error

CACHE_VERSION = 2  # 2: checksummed entries
_TMP = ".tmp-"
# a temporary of an entry: ".tmp-<domain>-<pid>-<key>.npy" (a torchrun rank's shard: "...-<key>.rank<r>.npy")
# or "<key>.json.tmp-<domain>-<pid>"
_WRITER = re.compile(r"\.tmp-(?P<domain>[A-Za-z0-9_.]+)-(?P<pid>\d+)(?:-[0-9a-f]{64}(?:\.rank\d+)?\.npy)?$")


def _pid_domain() -> str:
    """Where a pid means one process: this host's name and, where /proc tells it, its PID namespace (a
    container sharing the cache with its host or with other containers has its own pids)."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"
    try:
        return f"{host}.pidns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


PID_DOMAIN = _pid_domain()


def writer_tag() -> str:
    """'<domain>-<pid>' of this process, in the names of the temporaries it writes."""
    return f"{PID_DOMAIN}-{os.getpid()}"
HASH_CHUNK = 1 << 22


def array_checksum(path: Path) -> str:
    """BLAKE2b of an .npy file's array bytes (everything after the header), read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(
            f, max_header_size=1 << 20)  # positions f at the data
        while True:
            chunk = f.read(HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "partbench" / "features"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key(self, **identity) -> str:
        identity = {"cache_version": CACHE_VERSION, **identity}
        return hashlib.sha256(_canonical(identity).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    # entries whose checksum this process has checked, by (path, size, mtime): a file changed since
    # (rewritten, or corrupted between two runs of one process) is checked again
    _verified: set = set()

    def get(self, key: str, mmap: bool = True):
        p = self.path(key)
        try:
            st = p.stat()
        except OSError:
            return None
        token = (str(p), st.st_size, st.st_mtime_ns)
        if token not in self._verified:
            problem = self.check(p)
            if problem:
                warnings.warn(f"feature cache entry {p}: {problem}; removed, it will be recomputed")
                self.remove(p)
                return None
            self._verified.add(token)
            try:  # the metadata's mtime records the entry's last use (harness cache ls / prune)
                os.utime(self.meta_path(p))
            except OSError:
                pass
        try:
            return np.load(p, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError):
            return None  # unreadable entry (e.g. disk trouble): treat as a miss and rewrite

    @staticmethod
    def meta_path(p: Path) -> Path:
        return p.with_suffix(".json")

    def check(self, p: Path) -> str | None:
        """None when the entry's array bytes match the checksum stored with it, else what is wrong."""
        try:
            meta = json.loads(self.meta_path(p).read_text())
        except (OSError, ValueError):
            return "its metadata file is missing or unreadable"
        want = meta.get("blake2b")
        if not want:
            return "no checksum stored (written before checksums: never read, safe to delete)"
        try:
            got = array_checksum(p)
        except (OSError, ValueError, EOFError) as exc:
            return f"unreadable ({exc})"
        return None if got == want else f"checksum mismatch (stored {want[:12]}…, content {got[:12]}…)"

    def remove(self, p: Path) -> None:
        for q in (p, self.meta_path(p)):
            try:
                q.unlink()
            except OSError:
                pass
        self._verified.difference_update({t for t in self._verified if t[0] == str(p)})

    def last_used(self, p: Path) -> float:
        """When the entry was last read by a run (first read per process) or written, as a timestamp."""
        times = []
        for q in (p, self.meta_path(p)):
            try:
                times.append(q.stat().st_mtime)
            except OSError:
                pass
        return max(times, default=0.0)

    def entries(self) -> list[Path]:
        return sorted(self.root.glob("*/*.npy")) if self.root.is_dir() else []

    def open_writer(self, key: str, shape: tuple, dtype, meta: dict) -> "_Writer":
        return _Writer(self, key, shape, dtype, meta)

    def remove_own_temporaries(self) -> int:
        """Remove every temporary this process wrote (an interrupted run cleaning up after itself)."""
        n, tag = 0, writer_tag()
        if not self.root.is_dir():
            return 0
        for p in set(self.root.glob(f"*/{_TMP}{tag}-*")) | set(self.root.glob(f"*/*{_TMP}{tag}")):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        return n

    def sweep_stale(self, older_than_s: float = 3600) -> int:
        """Remove temporaries of killed runs: at once those whose writer process (domain and pid in the
        name) is gone, and any other temporary (written in another host's or container's pid space,
        whose liveness cannot be seen from here) after an hour, so concurrent live runs keep theirs."""
        n, now = 0, time.time()
        if not self.root.is_dir():
            return 0
        for p in set(self.root.glob(f"*/{_TMP}*")) | set(self.root.glob(f"*/*{_TMP}*")):
            m = _WRITER.search(p.name)
            try:
                dead = m is not None and m["domain"] == PID_DOMAIN and not pid_alive(int(m["pid"]))
                if dead or now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    n += 1
            except OSError:
                pass
        return n


class _Writer:
    """Writes rows at their offsets into a temporary .npy with ordinary file I/O (a full disk is an
    OSError, not a SIGBUS); ``commit`` checksums it and renames it into place; any failure removes it."""

    def __init__(self, cache: FeatureCache, key: str, shape: tuple, dtype, meta: dict):
        self.final = cache.path(key)
        self.tmp = self.final.parent / f"{_TMP}{writer_tag()}-{key}.npy"
        self.meta = meta
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(v) for v in shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._f = None
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.tmp, "wb")
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": self.shape}
            np.lib.format.write_array_header_1_0(self._f, header) if self._header_fits(header) else \
                np.lib.format.write_array_header_2_0(self._f, header)
            self.offset = self._f.tell()
            self._f.truncate(self.offset + self.shape[0] * self.row_bytes)  # sparse: space is used on write
        except OSError as exc:
            self.abort()
            raise io_error(self.tmp, exc, "creating a feature cache entry") from None

    @staticmethod
    def _header_fits(header) -> bool:
        try:
            import io

            np.lib.format.write_array_header_1_0(io.BytesIO(), header)
            return True
        except ValueError:
            return False

    def write(self, start: int, rows: np.ndarray) -> None:
        try:
            self._f.seek(self.offset + int(start) * self.row_bytes)
            self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        except OSError as exc:
            self.abort()
            raise io_error(self.tmp, exc, "writing a feature cache entry") from None

    def commit(self) -> None:
        meta_tmp = self.final.with_suffix(f".json{_TMP}{writer_tag()}")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            self.meta = {**self.meta, "blake2b": array_checksum(self.tmp)}
            meta_tmp.write_text(json.dumps(self.meta, indent=1, default=str))
            with critical():  # a signal waits until both names are in place
                os.replace(meta_tmp, self.final.with_suffix(".json"))
                os.replace(self.tmp, self.final)  # the .npy appearing is what makes the entry exist
        except OSError as exc:
            self.abort()
            try:
                meta_tmp.unlink()
            except OSError:
                pass
            if isinstance(exc, FileNotFoundError) and not self.tmp.exists():
                raise HarnessError(f"{self.tmp}: removed while it was being written (by another process "
                                   "cleaning the cache?); committing a feature cache entry") from None
            raise io_error(exc.filename or self.final.parent, exc, "committing a feature cache entry") from None

    def abort(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        try:
            self.tmp.unlink()
        except OSError:
            pass
