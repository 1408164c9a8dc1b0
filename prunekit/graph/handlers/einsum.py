"""``torch.einsum``: the equation says which dims of the operands are the same positions.

Every subscript letter is one index. A letter kept in the output carries the channels of the
operand dims it labels (unified, as an elementwise op would: ``"bhwc,hkc->bhwk"`` keeps the heads
on ``b``). A contracted letter ties the operand dims it labels as a matmul does: two activations
are the same channels (summed, so exact on zeroed channels), a parameter axis reads them (a
consumer), a fixed-size activation freezes them. A letter kept from a parameter alone (``"bnc,oc->bno"``)
is new channels that parameter produces. Ellipsis dims broadcast from the right like any batch dims.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from prunekit.graph.constraints import Dim, ParamDim, Tracked
from prunekit.graph.registry import register_rule, resolve

Label = str | tuple[str, int]  # a letter, or ("...", k) for the k-th broadcast dim


def _letters(sublist: Any) -> str | None:
    """A sublist (``[0, 1, Ellipsis]``) as subscripts (``"ab..."``)."""
    out = []
    for item in sublist:
        if item is Ellipsis:
            out.append("...")
        elif isinstance(item, int) and 0 <= item < 52:
            out.append("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[item])
        else:
            return None
    return "".join(out)


def _operands(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, list[torch.Tensor]] | None:
    """The equation and operands of any calling form: ``(eq, a, b)``, ``(eq, [a, b])``, or
    the sublist form ``(a, [0, 1], b, [1, 2], [0, 2])``."""
    if isinstance(args[0], str):
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return args[0], operands
    items, operands, subscripts = list(args), [], []
    while len(items) >= 2 and isinstance(items[0], torch.Tensor):
        letters = _letters(items[1])
        if letters is None:
            return None
        operands.append(items[0])
        subscripts.append(letters)
        items = items[2:]
    output = _letters(items[0]) if items else None
    if items and output is None:
        return None
    return ",".join(subscripts) + ("" if output is None else f"->{output}"), operands


def _labels(subscripts: str, ndim: int, width: int) -> list[Label] | None:
    """One label per dim; the ``...`` dims are numbered right-aligned within ``width`` broadcast dims."""
    if "..." not in subscripts:
        return list(subscripts) if len(subscripts) == ndim else None
    head, _, tail = subscripts.partition("...")
    n = ndim - len(head) - len(tail)
    if n < 0 or "." in head + tail:
        return None
    return [*head, *(("...", width - n + k) for k in range(n)), *tail]


def parse(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[list[Label]], list[Label]] | None:
    """Labels of every operand dim and of the output dims, or None if the equation is not understood."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(shapes) or not all(s.replace("...", "").isalpha() or s in ("", "...")
                                             for s in inputs):
        return None
    if not arrow:  # NOTE: implicit output: the letters used once, in alphabetical order, after the broadcast dims
        counts = Counter(c for s in inputs for c in s.replace("...", ""))
        once = "".join(sorted(c for c, k in counts.items() if k == 1))
        rhs = ("..." if any("..." in s for s in inputs) else "") + once
    width = max((len(shape) - len(s.replace("...", "")) for s, shape in zip(inputs, shapes) if "..." in s), default=0)
    labels = [_labels(s, len(shape), width) for s, shape in zip(inputs, shapes)]
    output = _labels(rhs, width + len(rhs.replace("...", "")), width)
    if output is None or any(ls is None for ls in labels):
        return None
    return labels, output  # type: ignore[return-value]


@register_rule(*resolve("einsum"))
def einsum(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Dims labelled by one letter are one index: kept letters carry channels, contracted ones tie them."""
    found = _operands(args, kwargs)
    parsed = parse(found[0], [tuple(t.shape) for t in found[1]]) if found is not None else None
    if found is None or parsed is None or not isinstance(out, torch.Tensor):
        return ctx.opaque(args, kwargs, out, "einsum equation not understood")
    operands, (labels, output) = found[1], parsed
    if any(len(set(ls)) != len(ls) for ls in labels) or len(set(output)) != len(output):
        return ctx.opaque(args, kwargs, out, "einsum takes a diagonal (a letter twice in one operand)")
    seen: dict[Label, list[tuple[Dim, int]]] = {}
    for t, ls in zip(operands, labels):
        for d, n, label in zip(ctx.dims(t), t.shape, ls):
            seen.setdefault(label, []).append((d, n))
    result: list[Dim] = []
    for label in output:
        result.append(_kept(ctx, seen.get(label, []), out.shape[len(result)]))
    for label, dims in seen.items():
        if label not in output:
            _contracted(ctx, dims)
    ctx.set(out, result)


def _present(dims: list[tuple[Dim, int]]) -> list[Dim]:
    """The dims that hold the index (a size-1 dim broadcast against larger ones holds none)."""
    size = max((n for _, n in dims), default=1)
    return [d for d, n in dims if n == size]


def _kept(ctx, dims: list[tuple[Dim, int]], size: int) -> Dim:  # type: ignore[no-untyped-def]
    """An output letter: the operand dims it labels are the same positions (as in ``a * b``)."""
    present = _present(dims)
    if not present:
        return None
    merged = present[0]
    for d in present[1:]:
        merged = ctx.store.unify(merged, d, ctx.where)
    if isinstance(merged, ParamDim):  # NOTE: a parameter axis alone in the output: channels it produces
        new = ctx.store.new_source(size, merged.tensor)
        ctx.store.use(new, merged.tensor, merged.axis, "producer", offset=merged.start)
        return new
    return merged


def _contracted(ctx, dims: list[tuple[Dim, int]]) -> None:  # type: ignore[no-untyped-def]
    """A letter summed over: its dims are one index (matmul's ``a[-1]`` meeting ``b[-2]``)."""
    present = _present(dims)
    tracked = [d for d in present if isinstance(d, Tracked)]
    params = [d for d in present if isinstance(d, ParamDim)]
    if not tracked:
        if len(params) >= 2 and params[0].size and all(p.size == params[0].size for p in params):
            layout = ctx.store.param_source(*params[:-1])  # NOTE: parameters multiplied together (as in matmul)
            ctx.store.use(layout, params[-1].tensor, params[-1].axis, "consumer", offset=params[-1].start)
        return
    first = tracked[0]
    for d in tracked[1:]:
        ctx.store.unify(first, d, ctx.where)
    if len(present) == 1:
        ctx.store.inexact(first, f"summed over by {ctx.where}", zero_safe=True)
    elif len(tracked) > 1:
        ctx.store.inexact(first, f"activations contracted over channels in {ctx.where}", zero_safe=True)
    for p in params:
        ctx.store.use(first, p.tensor, p.axis, "consumer", offset=p.start)
    if any(d is None for d in present):
        ctx.store.freeze(first, f"summed against a fixed-size tensor in {ctx.where}")
