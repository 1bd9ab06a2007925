"""Progress of long loops: a tqdm bar on a terminal, a periodic one-line report in logs otherwise."""
from __future__ import annotations

import sys
import time
from typing import Iterable

#: seconds between two log lines when stderr is not a terminal
LOG_EVERY_S = 30.0


class LogProgress:
    """Iterates like tqdm (``update``, ``set_postfix``) but prints ``desc: n/total (p%), r/s, ETA`` to
    stderr at most every ``every`` seconds, and a last line when done (if it took that long)."""

    def __init__(self, iterable: Iterable | None, desc: str = "", total: int | None = None, unit: str = "it",
                 every: float = LOG_EVERY_S, stream=None, **_):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix = 0, ""
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.perf_counter()
        self.printed = False

    def _line(self, final: bool = False) -> None:
        now = time.perf_counter()
        rate = self.n / max(now - self.t0, 1e-9)
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts.append(f"({100.0 * self.n / self.total:.0f}%)")
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and not final and rate > 0:
            parts.append(f"ETA {max(self.total - self.n, 0) / rate:.0f} s")
        if final:
            parts.append(f"done in {now - self.t0:.0f} s")
        if self.postfix:
            parts.append(self.postfix)
        print(" ".join(parts), file=self.stream, flush=True)
        self.last, self.printed = now, True

    def update(self, k: int = 1) -> None:
        self.n += k
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if self.printed or time.perf_counter() - self.t0 >= self.every:
            self._line(final=True)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable=None, desc: str = "", total: int | None = None, enabled: bool = True, **kw):
    """tqdm on a terminal; ``LogProgress`` when stderr is not a terminal; nothing when disabled."""
    if not enabled:
        return LogProgress(iterable, desc, total, every=float("inf"), **kw)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)
    return LogProgress(iterable, desc, total, **kw)
