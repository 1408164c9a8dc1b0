"""The `prunekit` command: parse arguments, call one library function, print the result.

Every subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``. Errors a user can
fix (:class:`~prunekit.errors.PrunekitError`) are caught here, in one place, and printed as one line;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from prunekit.cli import (
    decompose,
    evaluate,
    export,
    listing,
    options,
    partition,
    profile,
    prune,
    quantize,
    report,
    run,
    search,
    sensitivity,
    sparsify,
    train,
)
from prunekit.errors import PrunekitError

__all__ = ["build_parser", "main"]

COMMANDS = (train, evaluate, profile, prune, sparsify, decompose, partition, sensitivity, search, quantize,
            export, run, report, listing)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-parser per command)."""
    from prunekit import __version__

    parser = argparse.ArgumentParser(
        prog="prunekit",
        description="Make PyTorch models smaller and faster, and measure the result.",
    )
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `prunekit` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    written = _written(args)
    before = _entries(written)
    try:
        out = getattr(args, "out", None) if getattr(args, "claim_out", True) else None
        with warnings.catch_warnings(), options.claimed(args, out):
            if not args.debug:
                warnings.showwarning = _one_line_warning(args.command)
            return int(args.run(args))
    except PrunekitError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"prunekit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        left = sorted(set(_entries(written).items()) - set(before.items()))
        print(f"prunekit {args.command}: interrupted; {_resume_hint(args, argv, [str(p) for p, _ in left])}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        # NOTE: the reader went away (prunekit models | head): stop quietly, as Python's docs advise,
        # sending what is left to /dev/null so that the interpreter's final flush raises nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _one_line_warning(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing ``prunekit COMMAND: warning: MESSAGE`` on one line, without
    the file and source line Python adds (``--debug`` keeps Python's format)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        print(f"prunekit {command}: warning: {text}", file=sys.stderr if file is None else file)

    return show


# NOTE: what each resumable command's --resume continues from (a file or a folder in OUT), named.
_RESUMABLE = {"train": ("checkpoint.safetensors", "a checkpoint"), "run": ("state.json", "a checkpoint"),
              "search": ("search-state", "the search state")}


def _written(args: argparse.Namespace) -> list[Path]:
    """The folders the command writes its files into (--out, and export's --bundle)."""
    return [Path(p) for p in (getattr(args, "out", None), getattr(args, "bundle", None)) if p is not None]


def _entries(folders: list[Path]) -> dict[Path, tuple[int, int]]:
    """Each entry of ``folders`` (not prunekit's lock or temporaries, which a run removes itself)
    with its inode and change time: what a run changed there is what differs afterwards."""
    from prunekit.io.files import TEMP_PREFIX
    from prunekit.workflows.outputs import LOCK_FILE

    found: dict[Path, tuple[int, int]] = {}
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name == LOCK_FILE or entry.name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(OSError):
                stat = entry.lstat()
                found[entry] = (stat.st_ino, stat.st_mtime_ns)
    return found


def _resume_hint(args: argparse.Namespace, argv: list[str], left: list[str]) -> str:
    """Where the checkpoint is and the exact command that resumes, or what the run left (``left``:
    the files it wrote or changed) and the command that replaces it, or that nothing was saved."""
    again = argv + ([] if "--overwrite" in argv else ["--overwrite"])
    shown = ", ".join(left[:3]) + (", ..." if len(left) > 3 else "")
    leftover = f"it left {shown} (perhaps incomplete). Replace them by running: prunekit {shlex.join(again)}"
    if args.command not in _RESUMABLE:
        return leftover if left else "nothing was saved; run the command again."
    name, what = _RESUMABLE[args.command]
    out = args.out if args.command != "run" or args.out else None
    if out is None:
        from prunekit.recipes import load_recipe

        out = load_recipe(args.recipe).out or "runs/recipe"
    checkpoint = Path(out) / name
    if not checkpoint.exists():
        return ("no checkpoint was saved yet (one is written after each epoch or stage); "
                + (leftover if left else "run the command again."))
    again = argv + ([] if "--resume" in argv else ["--resume"])
    return f"{what} was saved in {checkpoint}. Resume with: prunekit {shlex.join(again)}"

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
