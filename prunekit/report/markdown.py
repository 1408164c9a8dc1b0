"""The report's Markdown summary: the before/after table with results.json's own numbers (written
exactly, so a diff or a script can check them), and each figure's caption."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prunekit.report.plots import Figure
from prunekit.report.results import Row

__all__ = ["summary"]


def _raw(value: float | None) -> str:
    """The number as results.json holds it (shortest round-trip form), or "-"."""
    return "-" if value is None else repr(value)


def _text(text: str) -> str:
    """Plain text (a caption, a note) as Markdown shows it: ``<`` and an entity's ``&`` backslash-escaped,
    so a name like ``<img src=...>`` reads as written instead of becoming HTML in a Markdown viewer."""
    return re.sub(r"(<|&(?=#?\w+;))", r"\\\1", text)


def summary(title: str, line: str, rows: Sequence[Row], names: tuple[str, str], figures: Sequence[Figure],
            notes: Sequence[str], html_name: str) -> str:
    """Markdown: title, one-line summary, the table (units in the first column), figure captions, notes."""
    out = [f"# {title}", "", *([line, ""] if line else [])]
    if rows:
        out += [f"| | {names[0]} | {names[1]} |", "|:---|---:|---:|"]
        out += [f"| {r.label}{f' ({r.unit})' if r.unit else ''} | {_raw(r.before)} | {_raw(r.after)} |" for r in rows]
        out.append("")
    if figures:
        out += [f"Figures (in {html_name}):", ""] + [f"- **{f.title}**: {_text(f.caption)}" for f in figures] + [""]
    if notes:
        out += ["Notes:", ""] + [f"- {_text(n)}" for n in notes] + [""]
    return "\n".join(out)
