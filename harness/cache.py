"""Content-addressed feature cache for frozen encoders.

One ``.npy`` file per (encoder identity, dataset identity, split, item fingerprint, transform,
representation), with a ``.json`` beside it holding what made it and the BLAKE2b checksum of its array
bytes. Files are written with ordinary I/O (never memory-mapped writes, which die with SIGBUS on a full
disk) to a temporary name and renamed into place, so a killed run never leaves a partial entry under a
real key. Every entry is verified against its checksum the first time a process reads it: a corrupted
entry is reported, removed and recomputed, never used. Temporaries of dead processes are swept.

Cache tools running beside live runs (``harness cache verify --delete``, ``prune``, the sweep at the start
of every run) never remove what a live run needs. They use advisory ``flock`` locks, which the kernel
releases when a process dies and which hold across containers sharing a host's filesystem (and on NFS,
where Linux maps them to the server's byte-range locks): a writer holds an
exclusive lock on its temporary from creation through commit, and keeps it on the committed entry until
this process first reads the entry (at most ``MAX_PINS`` entries); a reader holds a shared lock while it
checks and maps an entry; a tool removes a file only while it holds the exclusive lock itself. A temporary
nobody has locked is still taken as in use while its writer process (domain and pid in its name) is alive,
or, where that cannot be seen (another host or container, a writer that does not lock), while it was
written to within ``STALE_AFTER_S``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import HarnessError
from .interrupts import critical
from .io import io_error

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks; liveness by writer pid and age only
    fcntl = None

CACHE_VERSION = 2  # 2: checksummed entries
_TMP = ".tmp-"
# a temporary of an entry: ".tmp-<domain>-<pid>-<key>.npy" (a torchrun rank's shard: "...-<key>.rank<r>.npy")
# or "<key>.json.tmp-<domain>-<pid>"
_WRITER = re.compile(r"\.tmp-(?P<domain>[A-Za-z0-9_.]+)-(?P<pid>\d+)(?:-[0-9a-f]{64}(?:\.rank\d+)?\.npy)?$")
#: a temporary that no live writer can be seen to own is stale once unwritten for this long
STALE_AFTER_S = 3600.0
#: committed entries a process keeps locked until it first reads them (one open file each)
MAX_PINS = 64


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


def array_checksum(path: Path, f=None) -> str:
    """BLAKE2b of an .npy file's array bytes (everything after the header), read in chunks; from the open
    file ``f`` when given (a writer checksums through its own, locked, descriptor)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") if f is None else contextlib.nullcontext(f) as f:
        f.seek(0)
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


def _lock(f, exclusive: bool, wait: bool = False) -> bool:
    """flock ``f``; False when another open file holds a conflicting lock (only without ``wait``). A
    filesystem without flock support counts as unlocked: pid and age still protect live writers."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK
        pass
    return True


@contextlib.contextmanager
def taking_turns(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (created, and left for the next user) for the block: processes
    writing the same cache entry (torchrun ranks validating one split) take turns, so the second finds the
    first's work. A folder that cannot be written, or a file system without locks, runs the block unlocked."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a")
    except OSError:
        yield
        return
    _lock(f, exclusive=True, wait=True)
    try:
        yield
    finally:
        _release(f)


def _release(f) -> None:
    """Unlock explicitly, then close: the lock belongs to the open file, which a forked child (a
    data-loader worker) may share, so closing our descriptor alone would not release it."""
    if f is None:
        return
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except (OSError, ValueError):
        pass
    try:
        f.close()
    except OSError:
        pass


def _open_locked(p: Path, exclusive: bool):
    """``p`` opened for reading and locked without waiting, or None (missing, or locked by someone else)."""
    try:
        f = open(p, "rb")
    except OSError:
        return None
    if _lock(f, exclusive):
        return f
    f.close()
    return None


def _unlink_locked(p: Path, also=()) -> bool:
    """Remove ``p`` (and the paths in ``also``) while holding its exclusive lock; False, removing nothing,
    when someone holds a lock on it. A path that now names another file (rewritten meanwhile) is kept."""
    f = _open_locked(p, exclusive=True)
    if f is None:
        return not p.exists()
    try:
        if os.fstat(f.fileno()).st_ino != p.stat().st_ino:
            return False
        for q in (p, *also):
            try:
                q.unlink()
            except FileNotFoundError:
                pass
        return True
    except OSError:
        return False
    finally:
        _release(f)


@dataclass
class Temporary:
    """A file being written into the cache: ``in_use`` unless its writer is known to be gone."""
    path: Path
    in_use: bool
    why: str


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


#: the cache folder the current command chose (``--cache-dir``, else the spec's ``cache_dir``), innermost last
_in_use: list[Path] = []


@contextlib.contextmanager
def cache_dir_in_use(path: str | os.PathLike | None, unless_chosen: bool = False):
    """Within the block ``default_cache_dir()`` is ``path`` (nothing changes for None, nor with
    ``unless_chosen`` when a folder was already chosen): what plugins write beside the features (label-map
    verdicts, written label maps) then follows the run's cache folder."""
    if path is None or (unless_chosen and _in_use):
        yield
        return
    _in_use.append(Path(os.path.expanduser(str(path))))
    try:
        yield
    finally:
        _in_use.pop()


def default_cache_dir() -> Path:
    if _in_use:
        return _in_use[-1]
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

    # committed entries this process holds locked until it first reads them, by path (see _Writer.commit)
    _pins: dict = {}

    def get(self, key: str, mmap: bool = True):
        p = self.path(key)
        # an entry this process just wrote is still locked by us; any other is locked shared while it is
        # checked and mapped, so a prune beside us keeps it (a mapped file stays readable once removed)
        lock = self._pins.pop(str(p), None) or self._read_lock(p)
        try:
            return self._get(p, mmap)
        finally:
            _release(lock)

    @staticmethod
    def _read_lock(p: Path):
        """A shared lock on ``p``, or None when it is missing or stays locked exclusively: for microseconds
        by a tool removing it (then it is gone: a miss), or by another process that wrote it and has not
        read it yet (e.g. torchrun's rank 0; then it is protected already, and is read without our lock)."""
        for wait in (0.01, None):
            f = _open_locked(p, exclusive=False)
            if f is not None or not p.exists() or wait is None:
                return f
            time.sleep(wait)

    @classmethod
    def _pin(cls, p: Path, f) -> None:
        _release(cls._pins.pop(str(p), None))  # the entry rewritten: its former file is gone
        cls._pins[str(p)] = f
        while len(cls._pins) > MAX_PINS:  # the oldest first: an entry written but not read soon after
            _release(cls._pins.pop(next(iter(cls._pins))))

    def _get(self, p: Path, mmap: bool):
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
        """Remove an entry this process found bad (see ``remove_unused`` for tools beside live runs)."""
        _release(self._pins.pop(str(p), None))
        for q in (p, self.meta_path(p)):
            try:
                q.unlink()
            except OSError:
                pass
        self._forget(p)

    def _forget(self, p: Path) -> None:
        self._verified.difference_update({t for t in self._verified if t[0] == str(p)})

    def in_use(self, p: Path) -> bool:
        """Whether another process holds a lock on the entry: reading it now, or wrote it and has not read
        it yet. (A tool called in the process that wrote it runs after that work: this process's lock on
        the entry is dropped.)"""
        _release(self._pins.pop(str(p), None))
        f = _open_locked(p, exclusive=True)
        _release(f)
        return f is None and p.exists()

    def remove_unused(self, p: Path) -> bool:
        """Remove the entry unless another process holds a lock on it (False then, nothing removed)."""
        _release(self._pins.pop(str(p), None))
        done = _unlink_locked(p, also=(self.meta_path(p),))
        if done:
            self._forget(p)
        return done

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
        """The committed entries (not the temporaries of runs writing: see ``temporaries``)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*.npy") if not p.name.startswith("."))

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

    def temporaries(self, older_than_s: float = STALE_AFTER_S) -> list[Temporary]:
        """Every temporary in the cache, in use or stale. In use: locked by its writer; or its writer process
        (domain and pid in the name) is alive here; or, where the writer's liveness cannot be seen from here
        (another host or container, or a name without a writer), written to within ``older_than_s``."""
        if not self.root.is_dir():
            return []
        out, now = [], time.time()
        for p in sorted(set(self.root.glob(f"*/{_TMP}*")) | set(self.root.glob(f"*/*{_TMP}*"))):
            f = _open_locked(p, exclusive=False)
            _release(f)
            try:
                age = now - p.stat().st_mtime
            except OSError:
                continue  # committed or removed meanwhile
            if f is None:
                out.append(Temporary(p, True, "locked by the run writing it"))
                continue
            m = _WRITER.search(p.name)
            if m and m["domain"] == PID_DOMAIN:
                pid = int(m["pid"])
                alive = pid_alive(pid)
                out.append(Temporary(p, alive, f"its writer, pid {pid}, is {'running' if alive else 'gone'}"))
            else:
                who = f"pid {m['pid']} on {m['domain']}" if m else "a run"
                out.append(Temporary(p, age < older_than_s, f"last written {_ago(age)} ago by {who}, which "
                                     "cannot be seen from here"))
        return out

    def remove_stale(self, t: Temporary) -> bool:
        """Remove a stale temporary unless its writer has locked it meanwhile."""
        return not t.in_use and _unlink_locked(t.path)

    def sweep_stale(self, older_than_s: float = STALE_AFTER_S) -> int:
        """Remove temporaries of killed runs (see ``temporaries``: what a live run writes is kept)."""
        return sum(self.remove_stale(t) for t in self.temporaries(older_than_s))


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
            try:  # a stale namesake (a dead writer whose pid this process reuses): a new file, not its inode
                self.tmp.unlink()
            except FileNotFoundError:
                pass
            self._f = open(self.tmp, "w+b")  # read back through this descriptor for the checksum
            # held through commit, so cache tools beside this run see the temporary as in use (waits only
            # for such a tool's momentary probe)
            _lock(self._f, exclusive=True, wait=True)
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
            if os.fstat(self._f.fileno()).st_nlink == 0:
                raise FileNotFoundError(errno.ENOENT, "removed", str(self.tmp))
            self.meta = {**self.meta, "blake2b": array_checksum(self.tmp, self._f)}
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
        # the entry stays locked until this process first reads it, so that a prune beside this run cannot
        # remove it in between (the run would find its own features gone)
        FeatureCache._pin(self.final, self._f)
        self._f = None

    def abort(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass
        _release(self._f)
        self._f = None
