"""A user's own attention module: head counts and split sizes kept as plain module attributes.

Library classes (timm, transformers, torchvision) have refreshes that rewrite their sizes after a
cut. A user's class has none, but its forward usually reads ``self.n_head`` (nanoGPT's
``view(B, T, self.n_head, C // self.n_head)``) or ``self.n_embd`` (``split(self.n_embd, dim=2)``).
When exactly one int attribute holds such a size, it joins the group of the channels it counts and
``apply`` rewrites it (see ``ChannelGroup.attrs``), so the module is cut like a library one. A size
no attribute holds, or several hold, stays a constant and freezes the channels, with the reason.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.call_source import call_attributes, read_first, view_sizes
from prunekit.graph.handlers.common import slice_layout
from prunekit.graph.handlers.shape import HEAD_COUNT_FOLLOWS, SIZE_TIES_KEPT, calling_module, size_attribute, unrepeat
from prunekit.graph.registry import refresh_for

__all__ = ["user_module", "head_count_attribute", "join_head_count", "split_size_attribute", "queries_per_key",
           "is_head_count"]

_LIBRARY_PACKAGES = ("torch.", "torchvision.", "timm.", "transformers.", "prunekit.")
_NOT_COUNTS = ("dim", "size", "width", "channel", "embd", "embed", "hidden")  # words that say "not a head count"


def user_module(ctx: Any) -> tuple[nn.Module, str] | None:
    """The module whose code runs the current op and its name, if it is a user's class (no refresh
    of its own, not from a library whose classes prunekit handles)."""
    module, scope = calling_module(ctx)
    if module is None or refresh_for(module) is not None or type(module).__module__.startswith(_LIBRARY_PACKAGES):
        return None
    return module, scope


def _ints(module: nn.Module, value: int) -> list[str]:
    return [n for n, v in vars(module).items() if type(v) is int and v == value]


def _head_counts(module: nn.Module) -> list[str]:
    return [n for n, v in vars(module).items()
            if type(v) is int and v > 1 and "head" in n.lower() and not any(w in n.lower() for w in _NOT_COUNTS)]


def head_count_attribute(ctx: Any, count: Any, count_at: tuple[int, int] | None = None) -> str | None:
    """The size attribute of a user module's stored head count ``count`` (an int the view was given
    as is): the one int attribute that holds it; of several, the one the view's source writes (Meta's
    Llama with as many key/value heads as heads keeps ``n_heads`` and ``n_kv_heads`` both 8, and each
    view reads one), else the one named for heads (``n_kv_heads`` and ``n_rep`` both 2). None: not a
    user module, or no such attribute."""
    found = user_module(ctx)
    if found is None or type(count) is not int or count <= 1:
        return None
    module, scope = found
    names = [n for n in _ints(module, count) if not any(w in n.lower() for w in _NOT_COUNTS)]
    if len(names) > 1 and count_at is not None:  # NOTE: the one written at the count's place (``self.h``)
        sizes = view_sizes(module, count_at[1])
        if sizes is not None and sizes[count_at[0]].attribute in names:
            names = [sizes[count_at[0]].attribute]  # type: ignore[list-item]
    if len(names) > 1:
        written = [n for n in names if n in call_attributes(module)]
        names = written if len(written) == 1 else names
    if len(names) > 1:
        names = [n for n in names if "head" in n.lower()]
    return size_attribute(scope, names[0], None) if len(names) == 1 else None


def join_head_count(ctx: Any, heads: Tracked, sizes: list[int], raw: list[Any] | None, inside: bool,
                    copies: int = 1, count_at: tuple[int, int] | None = None) -> bool:
    """A view splits channels into ``heads`` at a constant count (``sizes``; ``raw`` as asked for;
    ``inside``: the count comes before the part dim, ``[H, 3, d]``). In a user's module the attribute
    holding that count joins the heads (of one chunk: q of a fused q|k|v), so ``apply`` rewrites it;
    where no one attribute holds it the heads are frozen and False returned. True: not a user module.
    ``copies``: ``heads`` is that many copies of the heads (fairseq's ``view(T, B * self.num_heads,
    d)``): the count asked for is ``copies`` times the stored one, which counts one copy. ``count_at``:
    the count's position among the view's sizes, and their number (to read the source there)."""
    found = user_module(ctx)
    if found is None:
        return True
    at = -3 if inside else -2
    count = raw[at] if raw is not None else None
    if copies > 1 and type(count) is int and count % copies == 0:
        count //= copies
        heads = unrepeat(heads, copies) or heads
    if sizes[at] == 1 and sum(s.length for s in heads.segments) == 1:
        return True  # NOTE: one head (multi-query attention's key/value head): no count to rewrite, never cut below one
    attr = head_count_attribute(ctx, count, count_at)
    if attr is None:
        ctx.store.freeze(heads, f"channels split into several dims (heads) by {ctx.where} with a constant head "
                                f"count that no one attribute of the module holds (write -1 for it, or keep it "
                                f"in one attribute)")
        return False
    chunk = heads if inside or math.prod(sizes[:at]) == 1 else slice_layout(heads, 0, sizes[at])
    if chunk is None:
        ctx.store.freeze(heads, f"slice cuts through a channel in {ctx.where}")
        chunk = heads
    ctx.store.use(chunk, attr, 0, "passive")
    # NOTE: a count named otherwise (``self.h``) is a head count from now on
    ctx.head_count_names.setdefault(id(found[0]), set()).add(attr.split("|")[1])
    return True


def split_size_attribute(ctx: Any, size: Any) -> str | None:
    """The size attribute of a user module's stored split size (nanoGPT's ``split(self.n_embd, 2)``,
    YOLOv8's ``split((self.c, self.c), 1)``): the one int attribute (not a head count) that holds
    ``size``; None otherwise."""
    if isinstance(size, (list, tuple)) and size and all(type(s) is int and s == size[0] for s in size):
        size = size[0]
    found = user_module(ctx)
    if found is None or type(size) is not int or size <= 1:
        return None
    module, scope = found
    heads = set(_head_counts(module))
    names = [n for n in _ints(module, size) if n not in heads]
    names = read_first(module, names)  # NOTE: of several holding it, the one the call reads (``self.n_embd``)
    return size_attribute(scope, names[0], None) if len(names) == 1 else None


def _keeps_head_count(ctx: Any) -> bool:
    """A user module holding a head count attribute (named for heads, or one a view at that count
    joined already: ``self.h``): its views at that count follow the cut (``shape._split_outer`` joins
    the attribute to the heads, or freezes a count it does not hold)."""
    found = user_module(ctx)
    return found is not None and (bool(_head_counts(found[0])) or id(found[0]) in ctx.head_count_names)


HEAD_COUNT_FOLLOWS.append(_keeps_head_count)
SIZE_TIES_KEPT.append(_keeps_head_count)


def queries_per_key(ctx: Any, count: int, written: tuple[bool, str | None]) -> str | None:
    """Multi-query attention in a user's module: its one key/value head repeated ``count`` times, once
    per query head (``repeat_interleave(k, self.n_rep, dim=2)``, or ``expand(b, 1, rep, s, d)`` with
    ``rep = self.n_heads // self.n_kv_heads``). The size attribute that holds that count and follows
    the query heads: the one the call writes there (``written``: whether the source was read, and
    the attribute written, if one), else the module's head count (with one key/value head it equals
    the count). None: not a user module with such an attribute, or the source names another."""
    found = user_module(ctx)
    if found is None or type(count) is not int or count <= 1:
        return None
    module, scope = found
    read, name = written
    if name is not None:
        return size_attribute(scope, name, None) if vars(module).get(name) == count else None
    if not read:
        return None  # NOTE: the count's origin is unknown (no source): a literal would not follow
    names = [n for n in _head_counts(module) if vars(module)[n] == count]
    return size_attribute(scope, names[0], None) if len(names) == 1 else None


def is_head_count(ctx: Any, module: nn.Module, count: Any) -> bool:
    """Whether ``count`` is a head count of the user's ``module``: held by an attribute named for
    heads, or the module's views joined a count as one already (``self.h``)."""
    if id(module) in ctx.head_count_names:
        return True
    return type(count) is int and any(vars(module)[n] == count for n in _head_counts(module))
