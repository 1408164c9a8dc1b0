"""The layering contract: faces over workflows over feature packages over the base (DESIGN.md).

``.importlinter`` states it and ``lint-imports`` checks it; these tests run that check, make sure
every package of prunekit has a place in it, and check with ``ast`` what import-linter cannot:
no module imports another package's private (``_name``) names.
"""

from __future__ import annotations

import ast
import configparser
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import prunekit

PACKAGE = Path(prunekit.__file__).resolve().parent
CONFIG = PACKAGE.parent / ".importlinter"
# NOTE: prunekit/_clone.py and _gc.py are the base's own helpers (the root package's private
# modules); every layer may use them.
ROOT_PRIVATE = "prunekit._"


def _layers() -> list[list[str]]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    text = parser["importlinter:contract:layers"]["layers"]
    return [[name.strip(" ()") for name in line.split(":")] for line in text.split("\n") if line.strip()]


def test_lint_imports_keeps_every_contract() -> None:
    pytest.importorskip("importlinter")
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", script, "--config", str(CONFIG), "--no-cache"],
                          cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_package_has_a_layer() -> None:
    placed = {name for layer in _layers() for name in layer}
    modules = {m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.name != "__main__"}
    assert modules - placed == set(), f"add these to a layer of {CONFIG.name}"
    assert _layers()[:3] == [["cli"], ["recipes"], ["workflows"]]


def _module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of a ``from X import ...`` (resolving relative imports)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(file: Path) -> list[str]:
    """``file:line: from prunekit.x import _y`` for each private name it takes from another package."""
    module = _module_name(file)
    own = module.split(".")[:2]
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _imported(node, module, file.name == "__init__.py")
        if not source.startswith("prunekit") or source.split(".")[:2] == own or source.startswith(ROOT_PRIVATE):
            continue
        path_private = [p for p in source.split(".")[2:] if _private(p)]
        names = [a.name for a in node.names if _private(a.name)]
        if path_private or names:
            found.append(f"{file.relative_to(PACKAGE.parent)}:{node.lineno}: from {source} import "
                         f"{', '.join(a.name for a in node.names)}")
    return found


def test_no_module_imports_another_packages_private_names() -> None:
    found = [line for file in sorted(PACKAGE.rglob("*.py")) for line in private_imports(file)]
    assert found == [], "private names crossing packages:\n" + "\n".join(found)


def test_the_private_name_check_finds_what_it_should(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "prunekit"
    (fake / "structured").mkdir(parents=True)
    bad = fake / "structured" / "x.py"
    bad.write_text("from prunekit.measure.macs import _counting, batch_of\n"
                   "from prunekit.structured.apply import _helper\n"
                   "from prunekit.measure._impl import thing\n"
                   "from prunekit import __version__\n"
                   "from prunekit._clone import clone_module\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = private_imports(bad)
    assert [re.sub(r":\d+:", ":", line).split(": ", 1)[1] for line in found] == [
        "from prunekit.measure.macs import _counting, batch_of",
        "from prunekit.measure._impl import thing",
    ]
