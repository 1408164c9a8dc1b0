"""`--help` works for the top-level command and for every sub-command the parser holds."""

from __future__ import annotations

import argparse

import pytest

from prunekit.cli import build_parser, main


def _commands() -> list[str]:
    """Every sub-command name, read from the real parser (a new command is covered without edits)."""
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return list(actions[0].choices)


def test_the_command_list_is_read_from_the_parser() -> None:
    assert {"prune", "eval", "models", "search", "quantize"} <= set(_commands())


@pytest.mark.parametrize("command", [[], *([c] for c in _commands())], ids=lambda c: c[0] if c else "prunekit")
def test_help_prints_usage_and_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert captured.out.startswith(f"usage: {' '.join(['prunekit', *command])}")
    assert "options:" in captured.out and captured.err == ""


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``prunekit models | head -1``: the closed pipe ends the command quietly."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "prunekit", "models"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # NOTE: before the listing is printed: every write meets a closed pipe
    errors = child.stderr.read().decode()
    child.wait(timeout=120)
    assert "Traceback" not in errors and "BrokenPipeError" not in errors
