"""Every `prunekit ...` command line in the README and the documentation pages parses: no renamed
or missing flag."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from prunekit.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _command_lines(page: Path) -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", page.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "prunekit" in words and "make" not in words[:1] and "pip" not in words[:1]:
                lines.append(" ".join(words[words.index("prunekit") + 1:]))
    return lines


def _all_lines() -> list[tuple[str, str]]:
    return [(str(page.relative_to(ROOT)), line) for page in PAGES for line in _command_lines(page)]


def test_the_readme_shows_commands() -> None:
    assert len(_command_lines(ROOT / "README.md")) >= 10


def test_the_docs_show_commands() -> None:
    assert len({page for page, _ in _all_lines() if page.startswith("docs")}) >= 6


@pytest.mark.parametrize(("page", "line"), _all_lines())
def test_command_line_parses(page: str, line: str) -> None:
    args = build_parser().parse_args(shlex.split(line))
    assert callable(args.run), f"{page}: prunekit {line}"
