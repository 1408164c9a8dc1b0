"""Shared by the benchmark scripts: replace one ``## section`` of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_section(title: str, rows: list[str], *, script: str) -> Path:
    """Replace (or append) the section ``## title`` of RESULTS.md, naming the script that wrote it.

    The file is rewritten atomically so two benchmarks finishing at once cannot interleave lines.
    """
    out = HERE / "RESULTS.md"
    text = out.read_text() if out.exists() else "# Benchmark results\n\nEach section is written by the script it names.\n"
    head = f"## {title}"
    body = "\n".join([head, "", f"Written by `{script}` at commit {_commit()} on {time.strftime('%Y-%m-%d')}.", ""]
                     + rows) + "\n"
    if head in text:
        start = text.index(head)
        end = text.find("\n## ", start + len(head))
        text = text[:start] + body + ("\n" + text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + body
    text = re.sub(r"([^\n])\n(## )", r"\1\n\n\2", text).rstrip() + "\n"  # a blank line before every section
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def _commit() -> str:
    """The checkout's short commit, with ``+changes`` when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "?"
    return sha + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
