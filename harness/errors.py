"""The errors a user sees: one line each, with the exit code the CLI returns."""
from __future__ import annotations

import difflib


class HarnessError(Exception):
    """An error the user can fix; the CLI prints it as one line (exit code 1)."""

    exit_code = 1


class SpecError(HarnessError):
    """Bad spec / bad input found before any computation (exit code 2)."""

    exit_code = 2


def did_you_mean(word: str, choices) -> str:
    """'; did you mean 'x'?' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class FatalError(HarnessError):
    """An error that stops the whole run, not only the unit it happened in (a full disk, a lost rank)."""
