"""Every `prunekit ...` command line in the README parses: no renamed or missing flag."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from prunekit.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "prunekit" in words and "make" not in words[:1]:
                lines.append(" ".join(words[words.index("prunekit") + 1:]))
    return lines


def test_the_readme_shows_commands() -> None:
    assert len(_command_lines()) >= 10


@pytest.mark.parametrize("line", _command_lines())
def test_readme_command_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line))
    assert callable(args.run)
