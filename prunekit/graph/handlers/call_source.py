"""Which attribute a size argument of the running view came from, read from the caller's source.

A traced view sees only numbers: ``view(b, s, self.n_heads, self.head_dim)`` with 8 heads of 8
gives ``(b, s, 8, 8)``, and two attributes of the module hold 8. Python 3.11 records where in the
source each instruction is (``co_positions``), so the call expression the user's frame is running
can be parsed and its ``j``-th size argument read as written. Only the sizes rules ask, and only
when the numbers alone are ambiguous.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple, TypeVar

import torch

_PRUNEKIT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LIBRARIES = (os.path.dirname(torch.__file__), _PRUNEKIT)
_VIEWS = ("view", "reshape")


def user_frame() -> FrameType | None:
    """The innermost frame outside torch and prunekit: the code that called the op being traced."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        frame = frame.f_back  # type: ignore[assignment]
    return frame


def _expression(frame: FrameType) -> ast.expr | None:
    """The expression the frame is running (a call, a comparison), parsed from its source (None: no
    source, or it does not parse on its own)."""
    positions = inspect.getframeinfo(frame, context=0).positions
    if positions is None or None in (positions.lineno, positions.end_lineno, positions.col_offset,
                                     positions.end_col_offset):
        return None
    lines = linecache.getlines(frame.f_code.co_filename)
    first, last = positions.lineno - 1, positions.end_lineno - 1  # type: ignore[operator]
    if not lines or last >= len(lines):
        return None
    chunk = [line.encode() for line in lines[first:last + 1]]  # NOTE: the offsets count UTF-8 bytes
    chunk[-1] = chunk[-1][:positions.end_col_offset]
    chunk[0] = chunk[0][positions.col_offset:]
    try:
        node = ast.parse(b"".join(chunk).decode(), mode="eval").body
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return node


def _size_arguments(call: ast.Call, ops: tuple[str, ...]) -> list[ast.expr] | None:
    """The size arguments of ``x.view(a, b)``, ``x.view((a, b))`` or ``torch.reshape(x, (a, b))``
    (any method of ``ops`` called so)."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in ops or call.keywords:
        return None
    args = list(call.args)
    if isinstance(func.value, ast.Name) and func.value.id == "torch":
        args = args[1:]  # NOTE: the function form takes the tensor first
    if len(args) == 1 and isinstance(args[0], (ast.Tuple, ast.List)):
        args = list(args[0].elts)
    return None if any(isinstance(a, ast.Starred) for a in args) else args


def _self_attribute(node: ast.AST | None) -> str | None:
    """``name`` for ``self.name``; None for any other expression."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _reads(node: ast.AST) -> frozenset[str]:
    """The names of every ``self.<name>`` read inside ``node``."""
    return frozenset(name for child in ast.walk(node) if (name := _self_attribute(child)) is not None)


def _running(module: Any) -> ast.expr | None:
    """The expression the code of ``module`` (its frame's ``self``) is running, parsed; None otherwise."""
    frame = user_frame()
    if frame is None or frame.f_locals.get("self") is not module:
        return None
    return _expression(frame)


def _running_call(module: Any) -> ast.Call | None:
    """The call the code of ``module`` is running, parsed; None otherwise."""
    node = _running(module)
    return node if isinstance(node, ast.Call) else None


class Size(NamedTuple):
    """One size argument as written: the attribute it is (``self.head_dim`` -> ``"head_dim"``; None
    for any other expression) and the attributes its expression reads (``B * self.cout`` -> ``{"cout"}``)."""

    attribute: str | None
    reads: frozenset[str]


def view_sizes(module: Any, count: int | None = None, ops: tuple[str, ...] = _VIEWS) -> list[Size] | None:
    """The sizes of the view or reshape (or another of ``ops``: ``("expand",)``) that the code of
    ``module`` is running, as written. None when the source is not at hand, the call is not such a
    call (of ``count`` sizes, when given), or the frame's ``self`` is not ``module``."""
    call = _running_call(module)
    sizes = _size_arguments(call, ops) if call is not None else None
    if sizes is None or (count is not None and len(sizes) != count):
        return None
    return [Size(_self_attribute(node), _reads(node)) for node in sizes]


def repeats_attribute(module: Any) -> tuple[bool, str | None]:
    """The count of the ``repeat_interleave`` the calling code of ``module`` is running
    (``torch.repeat_interleave(x, self.n_rep, dim=2)``, ``x.repeat_interleave(self.n_rep, 2)``):
    (True, the attribute written there, or None for another expression), or (False, None) when the
    source does not say."""
    call = _running_call(module)
    if call is None or not isinstance(call.func, ast.Attribute) or call.func.attr != "repeat_interleave":
        return False, None
    keyword = next((k.value for k in call.keywords if k.arg == "repeats"), None)
    if keyword is not None:
        return True, _self_attribute(keyword)
    args = call.args[1:] if isinstance(call.func.value, ast.Name) and call.func.value.id == "torch" else call.args
    return (True, _self_attribute(args[0])) if args else (False, None)


def expand_attribute(module: Any, j: int, count: int) -> tuple[bool, str | None]:
    """Size ``j`` (of ``count``) of the ``x.expand(...)`` the calling code of ``module`` is running,
    as :func:`repeats_attribute` answers."""
    sizes = view_sizes(module, count, ("expand",))
    return (True, sizes[j].attribute) if sizes is not None else (False, None)


def call_attributes(module: Any) -> frozenset[str]:
    """The names of ``module``'s attributes (``self.<name>``) that the expression the calling code
    is running reads (``x.split(self.n_embd, dim=2)`` -> ``{"n_embd"}``, ``c != self.num_channels``
    -> ``{"num_channels"}``); empty when the source is not at hand or the frame's ``self`` is not
    ``module``."""
    node = _running(module)
    return _reads(node) if node is not None else frozenset()


Item = TypeVar("Item")


def read_first(module: Any, items: list[Item], name: Callable[[Item], str] = str) -> list[Item]:
    """Of several ``items`` (attributes holding one number, by ``name``), those the expression the
    calling code of ``module`` is running reads; all of them when it reads none (or the source is
    not at hand). One item alone is returned as it is, without reading any source."""
    if len(items) < 2:
        return items
    read = call_attributes(module)
    return [item for item in items if name(item) in read] or items
