"""MkDocs hook: one API reference page per public package of prunekit, found on disk.

A package added to ``prunekit/`` (a folder with an ``__init__.py`` whose name does not start with
``_``) gets its page and its nav entry without editing ``mkdocs.yml``; public top-level modules
(``prunekit/hf.py``, ...) get one too. mkdocstrings reads the docstrings statically (griffe), so
building the docs imports nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "prunekit"
SKIP = {"cli", "__main__"}  # the command line is documented in the guides, not as an API


def _names() -> list[str]:
    """Public sub-packages and top-level modules of prunekit, sorted by name."""
    names = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    names |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return sorted(n for n in names if not n.startswith("_") and n not in SKIP)


def _page(name: str) -> str:
    return f"# prunekit.{name}\n\n::: prunekit.{name}\n"


def on_config(config: Any) -> Any:
    """Append the "API reference" section to the nav."""
    pages: list[Any] = [{"prunekit": "api/index.md"}]
    pages += [{f"prunekit.{n}": f"api/{n}.md"} for n in _names()]
    config["nav"] = [*(config["nav"] or []), {"API reference": pages}]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Generate the pages the nav names (``api/index.md`` documents the top-level package)."""
    files.append(File.generated(config, "api/index.md", content="# prunekit\n\n::: prunekit\n"))
    for name in _names():
        files.append(File.generated(config, f"api/{name}.md", content=_page(name)))
    return files
