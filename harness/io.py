"""Files the harness writes for users: atomic text and strict JSON, one-line I/O errors.

Strict JSON: ``NaN`` and ``Infinity`` are not JSON (strict parsers reject them), so every JSON file is written
with ``allow_nan=False``. ``jsonable`` turns numpy scalars and arrays, paths and tuples into JSON types and
every non-finite number into ``null``, returning where it did so; the runner records those places as the
result's ``warnings``.
"""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FatalError, HarnessError


class DiskFullError(FatalError):
    """No space left where the harness writes: fatal for the run (every later write would fail too)."""


def io_error(path, exc: OSError, what: str) -> HarnessError:
    """One line for a failed write; ENOSPC / EDQUOT become DiskFullError."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{path}: no space left on device ({what})")
    return HarnessError(f"{path}: {exc.strerror or exc} ({what})")


def write_text_atomic(path: Path, text: str, what: str) -> None:
    """Write to a temporary sibling, then rename into place: a failed or interrupted write leaves neither a
    partial file nor the temporary, and raises one line naming the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise io_error(path, exc, what) from None
    except BaseException:  # interrupted (SIGINT/SIGTERM) mid-write: nothing half-written stays
        tmp.unlink(missing_ok=True)
        raise


def jsonable(obj: Any, where: str = "", nonfinite: list | None = None) -> Any:
    """``obj`` with numpy values, paths and tuples as JSON types and non-finite floats as None; (dotted path,
    value) of every non-finite value is appended to ``nonfinite``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, f"{where}.{k}" if where else str(k), nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]", nonfinite) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), where, nonfinite)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            if nonfinite is not None:
                nonfinite.append((where or "value", value))
            return None
        return value
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(data: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``data`` (non-finite values become null: see ``jsonable``)."""
    return json.dumps(jsonable(data), indent=indent, allow_nan=False)


def write_json_atomic(path: Path, data: Any, what: str = "writing results") -> None:
    write_text_atomic(path, dumps(data), what)
