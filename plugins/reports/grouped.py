"""``GroupedReport``: a report that finds groups of results (pairs, rows) and shows them as a table, a JSON file
and a figure; the built-in reports differ only in how they group, tabulate and draw."""
from __future__ import annotations

from pathlib import Path

from harness.api import Report, write_json_atomic


class GroupedReport(Report):
    """Subclasses set ``stem`` (the files are ``<stem>.json`` and ``<stem>.png``) and implement ``groups``,
    ``markdown`` and ``figure``; a run whose results form no group gets nothing."""

    stem = ""

    def groups(self, results: list[dict], out_dir=None) -> list[dict]:
        """The groups; ``out_dir`` (the output folder, when writing) lets them read per-item files (paired
        intervals)."""
        raise NotImplementedError

    def markdown(self, groups: list[dict], fmt: str) -> str:
        raise NotImplementedError

    def figure(self, groups: list[dict], path: Path) -> Path | None:
        raise NotImplementedError

    def render(self, results: list[dict], fmt: str = "github") -> str:
        groups = self.groups(results)
        return self.markdown(groups, fmt) if groups else ""

    def write(self, results: list[dict], out_dir: Path, figures: bool = True) -> dict[str, Path]:
        groups = self.groups(results, out_dir)
        if not groups:
            return {}
        written = {self.stem: Path(out_dir) / f"{self.stem}.json"}
        write_json_atomic(written[self.stem], groups, "writing the report")
        if figures and self.figure(groups, Path(out_dir) / f"{self.stem}.png"):
            written[f"{self.stem}_figure"] = Path(out_dir) / f"{self.stem}.png"
        return written
