"""The `prunekit` command: parse arguments, call one library function, print the result.

Every subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``. Errors a user can
fix (:class:`~prunekit.errors.PrunekitError`) are caught here, in one place, and printed as one line;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prunekit.cli import (
    decompose,
    evaluate,
    export,
    listing,
    partition,
    profile,
    prune,
    run,
    search,
    sensitivity,
    sparsify,
    train,
)
from prunekit.errors import PrunekitError

__all__ = ["build_parser", "main"]

COMMANDS = (train, evaluate, profile, prune, sparsify, decompose, partition, sensitivity, search, export, run, listing)


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
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except PrunekitError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"prunekit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prunekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
