"""`prunekit report RUN_DIR`: write (again) a run folder's self-contained report.html and report.md."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write a run folder's HTML report and Markdown summary",
        description="Read a folder a command wrote with --out (results.json, evidence.json, and "
                    "sensitivity.json / pareto.json when present) and write report.html (one "
                    "self-contained page: every image and all data inline, it opens offline) and "
                    "report.md (the before/after numbers exactly as results.json holds them). "
                    "prune, sparsify, decompose, partition and run write it themselves.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder a command wrote with --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.report import write_report

    page = write_report(args.run_dir)
    print(f"report: {page}  summary: {page.with_name('report.md')}")
    return 0
