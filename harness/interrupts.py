"""SIGTERM and Ctrl-C during a run: stop, leave nothing half-written, say how to resume.

``install()`` (the CLI's ``run``) turns SIGINT and SIGTERM into ``Interrupted``, an exception that ordinary
``except Exception`` failure isolation does not catch, so it unwinds the run through its ``finally`` blocks
(writers abort and remove their temporaries, data-loader workers stop). Inside ``critical()`` — a commit
that renames files into place — the signal waits until the block ends, so an entry is never left half
committed. The runner then removes what is left of this process's temporaries and the CLI prints one line
and exits 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(BaseException):
    """The run was stopped by a signal. ``done``/``total``: units with a result when it stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
        self.done: int | None = None
        self.total: int | None = None


_state = {"depth": 0, "pending": None}


def _handler(signum, frame):
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def install() -> None:
    """Turn SIGINT/SIGTERM into ``Interrupted`` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def critical():
    """A block that a signal does not cut in two: ``Interrupted`` is raised when it ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Interrupted(signum)
