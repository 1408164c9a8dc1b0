"""Read a recipe's YAML keeping the line of every key and list item, for errors that point at it.

``load_yaml(path)`` returns the plain data and a map from a key path (``("stages", 1, "prune",
"target")``) to its 1-based line. ``where(lines, loc)`` finds the line of the deepest known prefix
of a pydantic error location.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import ConfigError, path_error

__all__ = ["load_yaml", "where"]

Lines = dict[tuple[Any, ...], int]


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: Lines) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, Lines]:
    """The recipe file's data and the line of every key; YAML errors name the file and line."""
    file = Path(path)
    if not file.is_file():
        raise path_error(file, "a recipe file (YAML)", "Pass the path of a YAML recipe, e.g. "
                                                       "recipes/simple_cnn.yaml.")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise ConfigError(f"recipe '{file}' is a binary file, not a YAML recipe (text). Pass the path of "
                          f"a YAML recipe, e.g. recipes/simple_cnn.yaml.")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}{line}: not valid YAML ({problem}). Fix the syntax at that line.") from None
    if node is None:
        raise ConfigError(f"{file}: the recipe is empty. It needs at least 'model' and 'stages'.")
    lines: Lines = {}
    _walk(node, (), lines)
    return yaml.safe_load(text), lines


def where(lines: Lines, loc: Sequence[Any]) -> int | None:
    """Line of the deepest prefix of ``loc`` that the file has (None if not even the root)."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None
