"""Ops that move positions around: reshape/flatten, permute, cat/stack, chunk, getitem, expand.

Constant sizes in user code do not follow a pruned width, so any op that would cut a channel run
at a fixed position (``x[:, :64]``, ``split(x, [64, 32])``, ``repeat``) freezes those channels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from prunekit._settings import dotted_holder, settings_object
from prunekit.graph.constraints import FIXED, Dim, ParamDim, Segment, Tracked
from prunekit.graph.handlers.call_source import expand_attribute, read_first, repeats_attribute, user_frame, view_sizes
from prunekit.graph.handlers.common import arg, slice_layout
from prunekit.graph.registry import register_rule, resolve


def _groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of non-1 dims of ``src`` and ``dst`` with equal products (None if impossible)."""
    a = [i for i, s in enumerate(src) if s != 1]
    b = [j for j, s in enumerate(dst) if s != 1]
    pairs, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        ga, gb = [a[i]], [b[j]]
        pa, pb = src[a[i]], dst[b[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                ga.append(a[i]); pa *= src[a[i]]; i += 1  # noqa: E702
            elif pb < pa and j < len(b):
                gb.append(b[j]); pb *= dst[b[j]]; j += 1  # noqa: E702
            else:
                return None
        pairs.append((ga, gb))
    return pairs if i == len(a) and j == len(b) else None


@register_rule(*resolve("view", "reshape", "flatten", "unflatten", "view_as", "reshape_as",
                        "squeeze", "unsqueeze", "squeeze_", "unsqueeze_"))
def reshape(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Match dims by products; merging a channel dim with trailing plain dims scales ``inner``."""
    x = args[0]
    if not isinstance(out, torch.Tensor):
        return ctx.opaque(args, kwargs, out, "unexpected output")
    dims, result = ctx.dims(x), [None] * out.dim()
    groups = _groups(tuple(x.shape), tuple(out.shape))
    if groups is None:
        return ctx.opaque(args, kwargs, out, "reshape that does not regroup dims")
    dropped = [d for i, d in enumerate(dims) if x.shape[i] == 1 and isinstance(d, Tracked)]
    for d in dropped:
        ctx.store.freeze(d, f"a 1-channel dim disappears in {ctx.where}")
    splits: list[tuple[Tracked, int, int]] = []  # (channels split into heads, chunks, head-size dim)
    for src, dst in groups:
        layouts = [dims[i] for i in src]
        if (len(src) == 1 and len(dst) > 1 and isinstance(layouts[0], ParamDim) and layouts[0].size
                and _heads_follow(ctx, args, kwargs, out.dim(), dst[-2])):
            # NOTE: a parameter axis split into heads (Dory's ``self.sqk.view(-1, 1, head_dim)``) is
            # followed as a source the parameter uses: sliced in whole heads if it meets heads.
            # (Split at a constant count, it stays a plain dim, as before: RADIO's position table.)
            layouts[0] = ctx.store.param_source(layouts[0])
        if len(src) == 1 and len(dst) == 1 and _one_head(ctx, x, out, dst[0], layouts[0], _raw_sizes(args, kwargs)):
            splits.append((layouts[0], 1, dst[0]))  # type: ignore[arg-type]
            requested = _requested(args, kwargs, ctx.current, out.dim(), ctx)
            derived = [requested is not None and requested[j] == -1 for j in (dst[0] - 1, dst[0])]
            result[dst[0] - 1:dst[0] + 1] = _split_outer(ctx, layouts[0], [1, out.shape[dst[0]]], derived)  # type: ignore[arg-type]
        elif len(src) == 1 and len(dst) == 1:
            result[dst[0]] = _stored_size(ctx, args, kwargs, dst[0], layouts[0])
        elif not isinstance(whole := layouts[0] if len(src) == 1 else
                            _merged(ctx, layouts, [x.shape[i] for i in src]), Tracked):
            for d in layouts:
                if isinstance(d, Tracked):
                    ctx.store.freeze(d, f"channels mixed with other dims by {ctx.where}")
        elif len(dst) == 1:  # NOTE: a constant size must follow too; B copies of heads: B * count
            at = next(k for k, d in enumerate(layouts) if isinstance(d, Tracked))
            result[dst[0]] = _stored_size(ctx, args, kwargs, dst[0], whole, math.prod(x.shape[i] for i in src[:at]))
        elif (sub := unrepeat(whole, math.prod(out.shape[j] for j in dst[:-1]))) is not None \
                and sub.size == out.shape[dst[-1]]:
            result[dst[-1]] = sub  # NOTE: heads folded into the batch dim come out again (SAM's view(B, H, N, -1))
        elif (x.dim() == 2 and src == [1] and dst[0] == 1 and dst[-1] == out.dim() - 1
              and (len(dst) >= 3 or not _in_user_module(ctx))
              and (units := _unflattened(ctx, args, kwargs, whole, [out.shape[j] for j in dst])) is not None):
            result[dst[0]] = units
        else:  # NOTE: split into several dims, after a merge if several (HaloAttn's reshape(B * H, d, ...) of [B, C])
            splits.append((whole, math.prod(out.shape[j] for j in dst[:-2]), dst[-1]))
            requested = _requested(args, kwargs, ctx.current, out.dim(), ctx)
            derived = [requested is not None and requested[j] == -1 for j in dst]
            raw = _raw_sizes(args, kwargs)
            raw = [raw[j] for j in dst] if raw is not None and len(raw) == out.dim() else None
            channels_first = src[0] == 1 and dst[0] == 1 and len(dst) == 2 and x.dim() >= 3
            at = next(k for k, d in enumerate(layouts) if isinstance(d, Tracked))
            copies = math.prod(x.shape[i] for i in src[:at])  # NOTE: fairseq's view(T, B * self.num_heads, d)
            for j, d in zip(dst, _split_outer(ctx, whole, [out.shape[j] for j in dst], derived, raw, copies,
                                              channels_first=channels_first, at=(dst, out.dim()))):
                result[j] = d
    _tie_sizes_read_elsewhere(ctx, args, kwargs, result, splits)
    _head_count_on_fixed_data(ctx, args, kwargs, result, _kept_dims(groups, tuple(x.shape), tuple(out.shape)))
    ctx.set(out, result)


def _kept_dims(groups: list[tuple[list[int], list[int]]], before: tuple[int, ...], after: tuple[int, ...]) -> set[int]:
    """The output dims of a view that are input dims as they were (only dims of size 1 added or
    dropped around them): ``(4, 4) -> (1, 1, 4, 4)`` keeps both, ``(B, N, H*d) -> (B, N, H, d)`` not the last."""
    kept: set[int] = set()
    for src, dst in groups:
        if [before[i] for i in src if before[i] != 1] == [after[j] for j in dst if after[j] != 1]:
            kept.update(j for j in dst if after[j] != 1)
    return kept


def _unflattened(ctx, args, kwargs, layout: Tracked, sizes: list[int]) -> Tracked | None:  # type: ignore[no-untyped-def]
    """``[B, C*h*w] -> [B, C, h, w]`` (a generator's or decoder's ``nn.Unflatten(1, (C, 4, 4))`` or
    ``view(B, self.c, 7, 7)`` after a Linear): channel ``c`` of the map is a run of ``h*w`` features,
    so the features are cut in those units. ``C`` must follow: derived (``-1``), or held by exactly one
    attribute of the running module (one whose sizes are its own: ``_sizes_its_own``), which
    joins the group (``apply`` rewrites it). None where neither holds (the caller's rules apply) or
    the layout already comes in whole channels (an undone flatten)."""
    from prunekit.graph.trace import ChannelInt, DerivedInt

    factor = math.prod(sizes[1:])
    if factor == 1 or any(s.inner % factor == 0 for s in layout.segments):
        return None
    unflatten = ctx.current.endswith("unflatten")
    raw = list(arg(args, kwargs, 2, "sizes", ())) if unflatten else _raw_sizes(args, kwargs)
    if raw is None or len(raw) < len(sizes):
        return None
    at = 0 if unflatten else len(raw) - len(sizes)
    count, rest = raw[at], raw[at + 1:at + len(sizes)]
    if any(r == -1 for r in rest):
        return None
    attr, module = None, None
    if count != -1:
        if type(count) is not int or isinstance(count, (ChannelInt, DerivedInt)):
            return None
        module, scope = calling_module(ctx)
        if not _sizes_its_own(module):
            return None
        found = _written_holding(module, count, at, len(raw))
        if len(found) != 1:
            return None
        attr = size_attribute(scope, *found[0])
    units = heads_of(ctx, layout, factor)
    if units is not None and attr is not None:
        join_size(ctx, module, count, attr, units)
    return units


def _heads_follow(ctx, args, kwargs, ndim: int, j: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether the head count at dim ``j`` of a view follows pruning (-1, or a refresh keeps it)."""
    requested = _requested(args, kwargs, ctx.current, ndim, ctx)
    return (requested is not None and requested[j] == -1) or any(follows(ctx) for follows in HEAD_COUNT_FOLLOWS)


_MAX_COPIES = 1024  # most copies of a layout a merge makes (see _merged)


def _merged(ctx, layouts: list[Dim], sizes: list[int]) -> Tracked | None:  # type: ignore[no-untyped-def]
    """Dims merged into one, of which one carries channels: plain dims before it repeat its layout
    (``reshape(B * H, N, d)`` folds heads into the batch: ``B`` copies of the heads), dims after it
    widen each channel (``inner``). Channels of their own in the dims after it stay whole (MViT-v2
    pools each head with a conv over its head size), so the blocks stay aligned. None: not that case."""
    # NOTE: a dim of one channel before other channels (multi-query attention's one key/value head,
    # sliced from a fused projection, then repeated for each query head) stays whole; the others lead.
    layouts = list(layouts)
    tracked = [i for i, d in enumerate(layouts) if isinstance(d, Tracked)]
    for i in tracked[:-1]:
        if sizes[i] == 1:
            ctx.store.freeze(layouts[i], f"one channel merged with other channels by {ctx.where}")
            layouts[i] = None
    at = next((i for i, d in enumerate(layouts) if isinstance(d, Tracked)), None)
    if at is None or any(d is not None for d in layouts[:at]) or any(isinstance(d, ParamDim) for d in layouts):
        return None
    if math.prod(sizes[:at]) > _MAX_COPIES:
        return None  # NOTE: a channels-last feature map flattened whole: frozen rather than one member per pixel
    for d in layouts[at + 1:]:
        if isinstance(d, Tracked):
            ctx.store.freeze(d, f"merged under other channels by {ctx.where}")
    layout = layouts[at].scaled(math.prod(sizes[at + 1:]))  # type: ignore[union-attr]
    return Tracked(layout.segments * math.prod(sizes[:at]))


def unrepeat(layout: Tracked, copies: int) -> Tracked | None:
    """The layout ``layout`` is ``copies`` copies of (see ``_merged``), if it is one."""
    n = len(layout.segments)
    if copies <= 1 or n % copies:
        return None
    one = layout.segments[:n // copies]
    return Tracked(one) if one * copies == layout.segments else None


# Module attributes a head refresh rewrites (hf_modules.refresh_attention, timm_modules' refreshes).
_REWRITTEN = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads", "all_head_size", "inner_dim",
              "attn_dim", "all_head_dim")


def _head_count_on_fixed_data(ctx, args, kwargs, result: list[Dim], kept: set[int]) -> None:  # type: ignore[no-untyped-def]
    """In a module whose refresh rewrites its head count, a view of data that carries no channels
    to that stored count (ConvBERT's span-conv branch ``reshape(B, -1, self.num_attention_heads, d)``
    after an op the graph does not follow) would break once the count changes: the module's heads
    are pinned (frozen, those seen so far and those seen later). Dims the view keeps as they were
    (``kept``) are not such a count, whatever their size: a (4, 4) causal mask viewed to
    (1, 1, 4, 4) beside 4 heads is not split into heads."""
    from prunekit.graph.trace import ChannelInt, DerivedInt

    module = ctx.module
    if module is None or not ctx.current.endswith(("view", "reshape")) or id(module) in ctx.pinned:
        return
    if not any(follows(ctx) for follows in HEAD_COUNT_FOLLOWS) or ctx.tracked(args[0]):
        return  # NOTE: data with channels has its head dim tracked (a token count may equal the head count)
    sizes = _raw_sizes(args, kwargs)
    if sizes is None or len(sizes) != len(result):
        return
    stored = {vars(module)[n] for n in _REWRITTEN if type(vars(module).get(n)) is int}
    for j, size in enumerate(sizes):
        if (type(size) is int and not isinstance(size, (ChannelInt, DerivedInt)) and size > 1 and size in stored
                and result[j] is None and j not in kept):
            why = (f"{ctx.where} views data the graph does not follow to the stored head count or width "
                   f"{size}; the refresh would change it, so the heads stay whole")
            ctx.pinned[id(module)] = why
            for layout in ctx.heads.get(id(module), []):
                ctx.store.freeze(layout, why)
            return


def _one_head(ctx, x: torch.Tensor, out: torch.Tensor, j: int, d: Dim, sizes: list[Any] | None) -> bool:  # type: ignore[no-untyped-def]
    """``view(B, N, H, head_dim)`` with one head (H == 1) pairs the channels with the last dim
    alone; in an attention module whose refresh keeps its head count, that is a split into one
    head all the same (cutting inside it would change the head size and its scale). So is a view
    whose size before the channels is the module's stored head count of 1 (CPUBone's
    ``reshape(N, self.num_heads, 3 * head_dim, h * w)``)."""
    if not (isinstance(d, Tracked) and ctx.current.endswith(("view", "reshape")) and j >= 1
            and out.shape[j - 1] == 1 and out.shape[j] > 1 and any(follows(ctx) for follows in HEAD_COUNT_FOLLOWS)):
        return False
    if j == out.dim() - 1 and out.dim() > x.dim():
        return True
    stored = {vars(ctx.module)[n] for n in _REWRITTEN if type(vars(ctx.module).get(n)) is int} if ctx.module else set()
    return (sizes is not None and len(sizes) == out.dim() and type(sizes[j - 1]) is int and 1 in stored
            and list(out.shape).count(1) > list(x.shape).count(1))  # NOTE: a new dim, not a batch of one


def _stored_size(ctx, args, kwargs, j: int, d: Dim, copies: int = 1) -> Dim:  # type: ignore[no-untyped-def]
    """Dim ``j`` of a view keeps the channels (or parameter axis) ``d``; if the size asked for it
    is a constant int, it must follow pruning too. When exactly one attribute of the running module
    holds that size (``self.nf``, ``self.shape[1]``), the attribute joins the group and ``apply``
    rewrites it; otherwise the channels are frozen with the reason. ``copies``: ``d`` is that many
    copies of its channels (heads folded into the batch, ``reshape(3, B * self.h, N, d)``): the
    attribute holds the size of one copy (the batch size times it follows at run time)."""
    from prunekit.graph.registry import refresh_for
    from prunekit.graph.trace import ChannelInt, ConfigInt, DerivedInt, ParamInt

    if not isinstance(d, (Tracked, ParamDim)) or not ctx.current.endswith(("view", "reshape")):
        return d
    sizes = _raw_sizes(args, kwargs)
    if sizes is None or j >= len(sizes):
        return d
    size = sizes[j]
    if isinstance(size, ConfigInt) and isinstance(d, Tracked):
        # NOTE: the root model holds the config; apply rewrites the entry (the config refresh
        # does not follow per-stage lists)
        ctx.store.use(d, size_attribute("", f"config.{size.field}", size.index), 0, "passive")
        return d
    if isinstance(size, ParamInt):
        if size.dim.tensor == getattr(d, "tensor", None) and size.dim.axis == getattr(d, "axis", None):
            return d  # NOTE: read from the viewed parameter's own axis at run time (XGLM's weights.shape[-1])
        if isinstance(d, Tracked):  # NOTE: sized by another weight's axis (a child Linear's in_features,
            ctx.store.use(d, size.dim.tensor, size.dim.axis, "passive", offset=size.dim.start)  # Ergo's gate):
            return d  # the channels are the ones that axis holds, cut alike
        size = int(size)
    if type(size) is not int or size in (-1, 1) or isinstance(size, (ChannelInt, DerivedInt)):
        return d
    module, scope = calling_module(ctx)
    if module is not None and refresh_for(module) is not None and not _config_misses(module, size):
        return d  # NOTE: the module's own refresh keeps its sizes (attention classes, Conv1D)
    layout = d if isinstance(d, Tracked) else (ctx.store.param_source(d) if d.size else None)
    if layout is None:
        return d
    if (copies > 1 and size % copies == 0 and module is not None and isinstance(d, Tracked)
            and (one := unrepeat(d, copies)) is not None
            and len(each := _written_holding(module, size // copies, j, len(sizes))) == 1):
        ctx.store.use(one, size_attribute(scope, *each[0]), 0, "passive")  # NOTE: it counts one copy
        return layout
    found = _written_holding(module, size, j, len(sizes)) if module is not None else []
    if len(found) > 1:  # NOTE: of several, one these very channels joined already (a repeated query count)
        found = [(a, i) for a, i in found if layout in ctx.sized.get(size_attribute(scope, a, i), ())] or found
    owner = f"'{scope}'" if scope else "the root module"
    if len(found) == 1:
        attr, index = found[0]
        if isinstance(layout, Tracked) and index is None:  # NOTE: every layout one int sizes is cut alike
            join_size(ctx, module, size, size_attribute(scope, attr, index), layout)
        else:
            ctx.store.use(layout, size_attribute(scope, attr, index), 0, "passive")
        return layout
    if not found and _count_times_size(ctx, module, scope, size, layout, j, len(sizes)):
        return layout
    if found:
        names = ", ".join(attr if index is None else f"{attr}[{index}]" for attr, index in found)
        why = (f"{ctx.where} views to the constant size {size}, held by several attributes of "
               f"{owner} ({names}); which one the view reads is unknown, so it cannot follow pruning")
    else:
        why = (f"{ctx.where} views to the constant size {size}, which no attribute of {owner} holds; "
               f"it would not follow pruning")
    fix_size(ctx, module, scope, size, ctx.where)
    ctx.unknown.append(why)
    ctx.store.freeze(layout, why)
    return layout


def _count_times_size(ctx, module: Any, scope: str, size: int, layout: Any, j: int, ndim: int) -> bool:  # type: ignore[no-untyped-def]
    """``view(B, -1, self.h * self.d_k)`` of whole heads (the Annotated Transformer): the size is one
    attribute (the head count) times another (the head size, which a cut in whole heads keeps), and
    the layout holds units of exactly that head size. The count's attribute joins the units (``apply``
    rewrites it); the product follows at run time. False: not that case."""
    if not _sizes_its_own(module) or not isinstance(layout, Tracked) or not layout.segments:
        return False
    inner = layout.segments[0].inner
    if inner <= 1 or any(s.inner != inner for s in layout.segments) or size % inner:
        return False
    counts = _written_holding(module, size // inner, j, ndim)
    if size // inner == inner:  # NOTE: as many heads as their size (8 of 8): the count a split view joined
        joined = ctx.head_count_names.get(id(module), set())
        counts = [(a, i) for a, i in counts if a in joined and i is None]
    if len(counts) != 1 or not _attributes_holding(module, inner, j, ndim):
        return False
    units = Tracked(tuple(Segment(s.source, s.start, s.length, 1) for s in layout.segments))
    ctx.store.use(units, size_attribute(scope, *counts[0]), 0, "passive")
    return True


def calling_module(ctx) -> tuple[Any, str]:  # type: ignore[no-untyped-def]
    """The module whose code runs the current op, and its name: the running module (``ctx.module``),
    or a submodule of it whose method other than ``forward`` it called (JetMoE's attention calls
    ``self.experts.map(x)``, which reads ``self.input_size`` of the experts, not of the attention).

    Read from the innermost Python frame outside torch and prunekit (its ``self``); only the sizes
    rules ask, so the frames are walked rarely."""
    module, scope = ctx.module, ctx.scope[-1]
    if module is None:
        return None, scope
    frame = user_frame()
    owner = frame.f_locals.get("self") if frame is not None else None
    if owner is None or owner is module or not isinstance(owner, torch.nn.Module):
        return module, scope
    name = next((n for n, m in module.named_modules() if m is owner), None)
    if name is None:
        return module, scope
    return owner, f"{scope}.{name}" if scope else name


def _config_misses(module: Any, size: int) -> bool:
    """A Hugging Face model (its refresh rewrites the config) viewing to a constant that its config
    does not hold as a width (``hf_modules.config_widths``): PVT-v2's ``reshape(B, -1,
    self.config.hidden_sizes[-1])`` reads an entry of a per-stage list, which the config refresh does
    not rewrite stage by stage. An attention's own heads times head size is no miss (its refresh
    keeps the count: ``hf_modules.inner_width``)."""
    from prunekit.graph.handlers.hf_modules import config_widths, inner_width

    config = vars(module).get("config")
    if config is None or not hasattr(config, "to_dict") or size == inner_width(module):
        return False
    return size not in config_widths(config)


def size_attribute(module: str, attr: str, index: int | None) -> str:
    """The name under which a size attribute joins a group (see ``ChannelGroup.attrs``)."""
    return f"@{module}|{attr}|{'' if index is None else index}"


def join_size(ctx, module: Any, value: int, attr: str, layout: Tracked, offset: int = 0) -> bool:  # type: ignore[no-untyped-def]
    """Join ``module``'s size attribute ``attr`` (holding ``value``) to ``layout`` so ``apply``
    rewrites it. The attribute is one number, so every place it sizes is cut alike: a second layout
    it sizes is unified with the first. Where some op of the module read ``value`` as a constant no
    cut follows (``fix_size``), the layout is frozen instead and False returned. ``offset``: a
    second count of the same attribute (it holds the sum of several parts)."""
    why = ctx.fixed_sizes.get((id(module), value))
    if why is not None:
        ctx.store.freeze(layout, why)
        return False
    joined = ctx.sized.setdefault(attr, [])
    if joined and offset == 0 and joined[0].size == layout.size:
        ctx.store.unify(joined[0], layout, ctx.where)
    joined.append(layout)
    ctx.store.use(layout, attr, 0, "passive", offset=offset)
    return True


def fix_size(ctx, module: Any, scope: str, value: Any, why: str) -> None:  # type: ignore[no-untyped-def]
    """``module`` (named ``scope``) read ``value`` as a constant that will not follow a cut (a split
    frozen for a size no attribute holds): an attribute of it holding ``value`` must keep it, so the
    channels such attributes joined are frozen (and any they would join later)."""
    if module is None or type(value) is not int or value <= 1:
        return
    key = (id(module), int(value))
    if key in ctx.fixed_sizes:
        return
    ctx.fixed_sizes[key] = why = (f"a size attribute holding {value} sizes these channels, and {why} reads "
                                  f"{value} as a constant, so it must stay")
    for attr, layouts in ctx.sized.items():
        if attr.startswith(f"@{scope}|") and _holds(module, attr, value):
            for layout in layouts:
                ctx.store.freeze(layout, why)


def _holds(module: Any, attr: str, value: int) -> bool:
    """Whether size attribute ``attr`` (``@scope|name|index``) of ``module`` holds ``value``."""
    _, name, index = attr.split("|")
    try:
        holder, last = dotted_holder(module, name)  # NOTE: a settings object's entry (``args.d_inner``)
    except AttributeError:
        return False
    held = getattr(holder, last, None)
    if index and isinstance(held, (list, tuple, torch.Size)):
        held = held[int(index)] if int(index) < len(held) else None
    return type(held) is int and held == value


def _raw_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    sizes = kwargs.get("shape", kwargs.get("size", args[1:]))
    if len(sizes) == 1 and not isinstance(sizes[0], int):
        sizes = sizes[0]
    return list(sizes) if isinstance(sizes, (tuple, list, torch.Size)) else None


def _written_holding(module: Any, size: int, j: int, ndim: int) -> list[tuple[str, int | None]]:
    """``_attributes_holding`` for size ``j`` of a view: when several attributes hold it, narrowed
    by what the calling code's source writes there (``_as_written``)."""
    found = _attributes_holding(module, size, j, ndim)
    return _as_written(module, found, j, ndim) if len(found) > 1 else found


def _as_written(module: Any, found: list[tuple[str, int | None]], j: int, ndim: int) -> list[tuple[str, int | None]]:
    """Of several attributes holding a view's size ``j`` (8 heads of 8: ``n_heads`` and ``head_dim``),
    the one the calling code's source writes there (``self.head_dim``); for a size written as another
    expression (``self.n_kv * rep``), those the call does not write at its other sizes. All of them
    when the source does not tell them apart."""
    sizes = view_sizes(module, ndim)
    if sizes is None:
        return found
    if sizes[j].attribute is not None:
        return [(attr, index) for attr, index in found if attr == sizes[j].attribute and index is None] or found
    # NOTE: an expression reading some of them (``B * self.cout``): one of those; else those the call
    # does not write at its other sizes (``self.n_kv * rep`` beside ``self.head_dim``)
    written = {size.attribute for size in sizes}
    chosen = [(attr, index) for attr, index in found if attr in sizes[j].reads and index is None]
    return chosen or [(attr, index) for attr, index in found if attr not in written] or found


def _attributes_holding(module: Any, size: int, j: int, ndim: int) -> list[tuple[str, int | None]]:
    """Attributes of ``module`` that hold ``size``: an int, or entry ``j`` of a shape of ``ndim``."""
    found: list[tuple[str, int | None]] = []
    for key, value in vars(module).items():
        if type(value) is int and value == size:
            found.append((key, None))
        elif (type(value) in (tuple, list, torch.Size) and len(value) == ndim
              and all(type(v) is int for v in value) and value[j] == size):
            found.append((key, j))
    return found


def _tie_sizes_read_elsewhere(ctx, args, kwargs, result: list[Dim],  # type: ignore[no-untyped-def]
                              splits: list[tuple[Tracked, int, int]]) -> None:
    """``y.reshape(B, N, D)`` with ``D`` read from ``x.shape``: at run time ``D`` follows ``x``'s
    pruned width, so ``y``'s channels there must be ``x``'s channels (or neither is cut).

    A size computed from a width (``C // self.num_heads``, a :class:`~prunekit.graph.trace.DerivedInt`)
    changes with it, so it keeps its traced value only if the width does not change: ``x``'s
    channels are frozen. A size computed from the viewed tensor's own widths (``reshape(B, H_kv * n_rep,
    ...)``, ShuffleNet's ``view(B, g, C // g, H, W)``) is the view's own business (see ``reshape``).
    One exception more: in an attention module whose refresh keeps its head count and
    whose widths are tied to its input (``SIZE_TIES_KEPT``), a head size ``C // num_heads`` of a
    projection split into heads stays the same when ``x``'s width is cut in whole heads, together with
    the split channels: ``x``'s channels are tied to those of one chunk (q of a fused q|k|v).
    """
    from prunekit.graph.trace import ChannelInt, DerivedInt

    if not ctx.current.endswith(("view", "reshape")):
        return
    follows = any(f(ctx) for f in HEAD_COUNT_FOLLOWS)
    kept = any(k(ctx) for k in SIZE_TIES_KEPT)
    sizes = kwargs.get("shape", kwargs.get("size", args[1:]))
    if len(sizes) == 1 and not isinstance(sizes[0], int):
        sizes = sizes[0]
    if len(sizes) != len(result):
        return
    own = ctx.dims(args[0])
    for j, size in enumerate(sizes):
        if isinstance(size, DerivedInt) and not (follows and not kept) and not all(d in own for d in size.layouts):
            _derived_size(ctx, size, j, result, splits, follows and kept)
        if follows and not kept:
            continue  # NOTE: a module whose refresh rewrites its widths (Swin's attention) reads them anew
        if not isinstance(size, ChannelInt) or size.layout == result[j] or _reblocked(ctx, size.layout, result[j]):
            continue
        if isinstance(result[j], ParamDim) and result[j].size:  # NOTE: a parameter viewed to a width read
            result[j] = ctx.store.param_source(result[j])        # from a shape (Inkling2's query) follows it
        if isinstance(result[j], Tracked):
            ctx.store.unify(size.layout, result[j], ctx.where)
            if ctx.module is not None:
                ctx.read_back.setdefault(id(ctx.module), []).append((size.layout, result[j]))
        else:
            ctx.store.freeze(size.layout, f"the width of these channels is read from a shape and used "
                                          f"as a size for other data in {ctx.where}")


def _derived_size(ctx, size: Any, j: int, result: list[Dim],  # type: ignore[no-untyped-def]
                  splits: list[tuple[Tracked, int, int]], heads_follow: bool) -> None:
    """Dim ``j`` of a view is sized by an int computed from widths (see ``_tie_sizes_read_elsewhere``)."""
    split = next(((layout, chunks) for layout, chunks, at in splits if at == j), None)
    if heads_follow and split is not None and split[0].size % split[1] == 0:
        layout, chunks = split
        first = _slice(layout, 0, layout.size // chunks, ctx)
        if isinstance(first, Tracked):
            ctx.head_sized.extend(size.layouts)
            if ctx.module is None:
                for source in size.layouts:
                    ctx.store.unify(source, first, ctx.where)
            else:  # NOTE: unless the module's output view ties the width another way (see trace.settle_ties)
                ctx.deferred.setdefault(id(ctx.module), []).extend((source, first, ctx.where)
                                                                   for source in size.layouts)
            return
    if _same_width(ctx, size, result[j]) or _block_size_of(ctx, size, result[j]):
        return
    if result[j] is None and size.layouts and all(source in ctx.head_sized for source in size.layouts):
        return  # NOTE: a head size C // heads again (BLOOM-style heads folded into the batch): it stays
    why = (f"a size computed from the width of these channels ({int(size)}) is used to view other data "
           f"in {ctx.where}; it would change with pruning")
    for source in size.layouts:
        ctx.store.freeze(source, why)
    if isinstance(result[j], Tracked):
        ctx.store.freeze(result[j], why)


def _block_size_of(ctx, size: Any, dim: Dim) -> bool:  # type: ignore[no-untyped-def]
    """``dim`` is the first of equal blocks cut alike (``_blocks``), sized ``C // g`` from the width
    of other channels as many as the split ones: after pruning the size is right exactly when those
    channels are cut with the split ones, so they are unified (k viewed with q's head size)."""
    if not isinstance(dim, Tracked) or len(size.layouts) != 1:
        return False
    split = next((layout for layout, (first, count) in ctx.blocked.items() if first == dim), None)
    source = size.layouts[0]
    if split is None or source.size != split.size or int(size) != dim.size:
        return False
    ctx.store.unify(source, split, ctx.where)
    return True


def _same_width(ctx, size: Any, dim: Dim) -> bool:  # type: ignore[no-untyped-def]
    """A view's dim sized ``k * width`` (a DerivedInt of one width) that holds ``k`` copies of other
    channels (``B * heads`` folded into the batch) or each of them ``k`` times (``C * n`` merged
    with a spatial dim): after pruning the size is ``k`` times the pruned width, which is right
    exactly when those channels are cut with the width's. Both are unified (YOSO's
    ``key.reshape(B * num_heads, ...)`` with ``num_heads`` read from the query; MobileViT's folding
    by the channel count of the unfolded features). False: not that case."""
    if not isinstance(dim, Tracked) or len(size.layouts) != 1 or not size.layouts[0].size:
        return False
    source = size.layouts[0]
    copies, rest = divmod(int(size), source.size)
    if rest or not copies:
        return False
    one = dim if copies == 1 else unrepeat(dim, copies)
    if one is None and all(seg.inner % copies == 0 for seg in dim.segments):
        one = Tracked(tuple(Segment(seg.source, seg.start, seg.length, seg.inner // copies) for seg in dim.segments))
    if one is None or one.size != source.size:
        return False
    ctx.store.unify(source, one, ctx.where)
    return True


# Callables ``(ctx) -> bool``: True when the module running now (``ctx.module``) keeps its head count
# up to date itself (a refresh updates the attribute its reshape reads); attention handlers add them.
HEAD_COUNT_FOLLOWS: list[Callable[[Any], bool]] = []
# Callables ``(ctx, size) -> bool``: True when the module running now splits a packed width into a
# constant number of equal blocks of ``size`` (``reshape(B, N, num_layers, self.per_layer_dim)``) and its
# refresh keeps that block size: the blocks are cut alike, at the same positions (see ``_blocks``).
BLOCK_SIZE_FOLLOWS: list[Callable[[Any, int], bool]] = []
# Callables ``(ctx) -> bool``: True when the module running now keeps its head count up to date but
# still reads a width from a shape (timm's ``reshape(B, N, C)`` with ``C = x.shape[-1]``): the size
# tie is kept (the inner width and the input width are cut together, in whole heads).
SIZE_TIES_KEPT: list[Callable[[Any], bool]] = []
# Callables ``(ctx) -> bool``: True when the module running now splits a tensor at stored sizes its
# refresh recomputes from the parts' own parameters (CoaT's ``split(v, self.channel_splits)``, one
# depthwise conv per part; Phi-3's ``qkv[..., :query_pos]`` slices of its fused q|k|v): each part
# keeps its channels, cut apart from the others.
SPLIT_SECTIONS_FOLLOW: list[Callable[[Any], bool]] = []
# Callables ``(ctx) -> bool``: True when the module running now stores how many query heads share a
# key/value head (``num_key_value_groups``, ``repeat_kv``'s n_rep) and its refresh keeps that count.
QUERY_GROUPS_FOLLOW: list[Callable[[Any], bool]] = []
# Callables ``(ctx, pieces) -> bool``: True when the module running now splits a tensor into
# ``pieces`` equal parts at a stored size its refresh keeps up to date (GPT-2's fused q|k|v).
SPLIT_SIZE_FOLLOWS: list[Callable[[Any, int], bool]] = []


def _requested(args: tuple[Any, ...], kwargs: dict[str, Any], func: str, ndim: int,  # type: ignore[no-untyped-def]
               ctx=None) -> list[int] | None:
    """The sizes a view/reshape was asked for (-1 where derived), one per output dim, if known.

    ``view_as(other)``: the dims where ``other`` carries channels follow them (Beam's
    ``gate.view_as(attn_output)``, split into the heads ``attn_output`` has), so they count as derived."""
    other = arg(args, kwargs, 1, "other", None)
    if func.endswith(("view_as", "reshape_as")) and ctx is not None and isinstance(other, torch.Tensor):
        return [-1 if isinstance(d, Tracked) else int(n) for d, n in zip(ctx.dims(other), other.shape)]
    if func.endswith(("view", "reshape")):
        sizes = kwargs.get("shape", kwargs.get("size", args[1:]))
        if len(sizes) == 1 and not isinstance(sizes[0], int):
            sizes = sizes[0]
    elif func.endswith("unflatten"):
        dim, inner = arg(args, kwargs, 1, "dim", 0), list(arg(args, kwargs, 2, "sizes", ()))
        dim %= ndim - len(inner) + 1
        sizes = [0] * dim + inner + [0] * (ndim - dim - len(inner))
    else:
        return None
    sizes = [int(s) if isinstance(s, int) else 0 for s in sizes]
    return sizes if len(sizes) == ndim else None


def _split_outer(ctx, layout: Tracked, sizes: list[int], derived: list[bool],  # type: ignore[no-untyped-def]
                 raw: list[Any] | None = None, copies: int = 1, *, channels_first: bool = False,
                 at: tuple[list[int], int] | None = None) -> list[Dim]:
    """Layouts of the dims a channel dim is split into (``view(B, N, H, d)``).

    ``[C*f] -> [C, f]`` undoes a flatten (channels stay on the outer dim). Otherwise the last dim is
    a head: channels are coarsened into heads of ``sizes[-1]`` (see ``ConstraintStore.coarsen``) on
    the dim before it, and any leading dims index equal chunks, as ``chunk`` does (``[3, H, d]`` of
    a fused qkv projection: head ``h`` of q, k and v is cut together). The head count must follow
    pruning: written as -1 (``derived``), or kept by the module's refresh (``HEAD_COUNT_FOLLOWS``);
    a constant head count (``reshape(B, N, self.num_heads, d)``) follows only where one attribute of
    a user module holds it (``_user_head_count``); elsewhere it freezes the channels. ``raw``:
    the sizes as asked for (ints computed from widths are told apart), where known. ``copies``: the
    layout is that many copies of its channels (a batch merged in front: ``B * self.num_heads``).
    ``at``: where ``sizes`` sit among the view's sizes (their positions, and how many there are).
    """
    rest: list[Dim] = [None] * (len(sizes) - 1)
    factor = math.prod(sizes[1:])
    if all(s.inner % factor == 0 for s in layout.segments):
        return [Tracked(tuple(Segment(s.source, s.start, s.length, s.inner // factor) for s in layout.segments))] + rest
    count_fixed = not derived[-2] and not any(follows(ctx) for follows in HEAD_COUNT_FOLLOWS)
    if count_fixed and channels_first and _groups_of_derived_size(ctx, layout, sizes, derived, raw):
        return _blocks(ctx, layout, sizes)
    if count_fixed and channels_first and (blocks := _blocks_of_stored_size(ctx, layout, sizes, raw)) is not None:
        return blocks
    if count_fixed and not _in_user_module(ctx):
        if any(follows(ctx, sizes[-1]) for follows in BLOCK_SIZE_FOLLOWS):
            return _blocks(ctx, layout, sizes)
        ctx.store.freeze(layout, f"channels split into several dims (heads) by {ctx.where} with a constant "
                                 f"head count (write -1 for it, or register a refresh that updates it)")
        return [None] * len(sizes)
    inside = _parts_inside_heads(ctx, sizes)  # NOTE: [H, 3, d]: head h holds its q, k and v (Persimmon, Bloom)
    heads = heads_of(ctx, layout, sizes[-2] * sizes[-1] if inside else sizes[-1])
    if heads is None:
        ctx.store.freeze(layout, f"channels split into several dims by {ctx.where}")
        return [None] * len(sizes)
    count_at = (at[0][-3 if inside else -2], at[1]) if at is not None and len(at[0]) == len(sizes) else None
    if not derived[-3 if inside else -2] and not _user_head_count(ctx, heads, sizes, raw, inside, copies, count_at):
        return [None] * len(sizes)
    if ctx.module is not None:
        ctx.heads.setdefault(id(ctx.module), []).append(heads)
        if id(ctx.module) in ctx.pinned:
            ctx.store.freeze(heads, ctx.pinned[id(ctx.module)])
    if inside:
        _same_count(ctx, heads, derived[-3])
        return [heads, None, None]
    if len(sizes) == 2:
        _same_count(ctx, heads, derived[-2])
        return [heads, None]
    per = sizes[-2]
    first = _slice(heads, 0, per, ctx)
    for k in range(1, math.prod(sizes[:-2])):
        ctx.store.unify(first, _slice(heads, k * per, per, ctx), ctx.where)
    _same_count(ctx, first, derived[-2])
    return [None] * (len(sizes) - 2) + [first, None]


def _groups_of_derived_size(ctx, layout: Tracked, sizes: list[int], derived: list[bool],  # type: ignore[no-untyped-def]
                            raw: list[Any] | None) -> bool:
    """``view(B, g, C // g, H, W)`` of conv features (a channel shuffle, a GroupNorm written by hand):
    a constant count ``g`` of groups whose size is derived from a width (``-1``, ``C // g`` with
    ``C`` read from this tensor's shape or another of the same size, or another tensor's width ``C``:
    ``reshape(B, 3, C, H * W)`` of a fused q|k|v conv), which no attribute of a user's module holds
    (a stored head count is cut in whole heads instead). Cut at the same positions of every group,
    the groups stay equal and their size follows at run time: nothing to rewrite (see ``_blocks``).
    Only for channels-first features (the channel dim right after the batch dim, spatial dims after
    it; the caller checks): attention on tokens is cut in whole heads."""
    from prunekit.graph.trace import ChannelInt, DerivedInt

    size = raw[-1] if raw is not None else None
    # NOTE: a width of the same size read elsewhere (k viewed with q's ``C // g``) is tied to this one
    # by the view's size rule (``_derived_size``), so it follows the cut alike; so is a width read
    # from another tensor as the part size (a diffusion U-Net's ``qkv.reshape(B, 3, C, H * W)``)
    follows = derived[-1] or (isinstance(size, DerivedInt) and len(size.layouts) == 1
                              and size.layouts[0].size == layout.size and int(size) * sizes[0] == layout.size) or (
        isinstance(size, ChannelInt) and int(size) * sizes[0] == layout.size)
    if not follows:
        return False
    found = _user_module_of(ctx)
    return found is None or not _attributes_holding(found, sizes[0], 0, 1)


def _blocks_of_stored_size(ctx, layout: Tracked, sizes: list[int], raw: list[Any] | None) -> list[Dim] | None:  # type: ignore[no-untyped-def]
    """``view(B, self.M, self.c, 1, 1)`` of conv features in a user's module (SKNet's attention over
    ``M`` branches of ``c`` channels each): a count that is no head count (not named for heads, no
    view joined it as one) of blocks whose size one attribute holds. The same positions of every
    block are cut (``_blocks``), the count stays and the size attribute joins the block's channels
    (``apply`` rewrites it). None: not that case. Only for channels-first features (the caller checks)."""
    from prunekit.graph.handlers.user_modules import is_head_count, user_module
    from prunekit.graph.trace import ChannelInt, DerivedInt

    found = user_module(ctx)
    if found is None or raw is None or len(sizes) != 2:
        return None
    module, scope = found
    count, size = raw[-2], raw[-1]
    if type(size) is not int or isinstance(size, (ChannelInt, DerivedInt)) or size <= 1:
        return None
    if isinstance(count, (ChannelInt, DerivedInt)) or is_head_count(ctx, module, count):
        return None
    held = read_first(module, [a for a, i in _attributes_holding(module, size, 0, 1) if i is None])
    if len(held) != 1:
        return None
    blocks = _blocks(ctx, layout, sizes)
    first = blocks[-1]
    if not isinstance(first, Tracked):
        return None
    join_size(ctx, module, size, size_attribute(scope, held[0], None), first)
    return blocks


def _user_module_of(ctx) -> Any:  # type: ignore[no-untyped-def]
    """The user's own module the op runs in (see ``user_modules``), or None."""
    from prunekit.graph.handlers.user_modules import user_module

    found = user_module(ctx)
    return None if found is None else found[0]


def _blocks(ctx, layout: Tracked, sizes: list[int]) -> list[Dim]:  # type: ignore[no-untyped-def]
    """``[L*D] -> [L, D]`` at a constant block count whose block size the module's refresh keeps
    (``BLOCK_SIZE_FOLLOWS``: Gemma's per-layer inputs, one block of ``D`` features per layer; Zamba's
    heads, scanned in a loop over the stored count): the same positions of every block are cut, so
    the blocks stay equal, the count stays and ``D`` follows the cut."""
    size = sizes[-1]
    first = _slice(layout, 0, size, ctx)
    if not isinstance(first, Tracked):
        return [None] * len(sizes)
    for k in range(1, math.prod(sizes[:-1])):
        block = _slice(layout, k * size, size, ctx)
        if not isinstance(block, Tracked):
            return [None] * len(sizes)
        ctx.store.unify(first, block, ctx.where)
    ctx.blocked[layout] = (first, math.prod(sizes[:-1]))
    return [None] * (len(sizes) - 1) + [first]


def _reblocked(ctx, width: Tracked, dim: Dim) -> bool:  # type: ignore[no-untyped-def]
    """``dim`` holds the channels of ``width``, reordered block by block: ``width`` was split into
    blocks cut alike (``_blocks``) and their dims merged back, the block dim last (a channel shuffle's
    ``transpose(1, 2)`` then ``view(B, C, H, W)``). Its pruned size is then ``width``'s, by construction."""
    found = ctx.blocked.get(width)
    if found is None or not isinstance(dim, Tracked):
        return False
    first, count = found
    return dim == Tracked(tuple(Segment(s.source, s.start, s.length, s.inner * count) for s in first.segments))


def _in_user_module(ctx) -> bool:  # type: ignore[no-untyped-def]
    """Whether the op runs in a user's own module (see ``user_modules``)."""
    return _user_module_of(ctx) is not None


def _user_head_count(ctx, heads: Tracked, sizes: list[int], raw: list[Any] | None,  # type: ignore[no-untyped-def]
                     inside: bool, copies: int = 1, count_at: tuple[int, int] | None = None) -> bool:
    """True when the heads' count follows the cut (see ``user_modules.join_head_count``)."""
    from prunekit.graph.handlers.user_modules import join_head_count

    return join_head_count(ctx, heads, sizes, raw, inside, copies, count_at)


def _parts_inside_heads(ctx, sizes: list[int]) -> bool:  # type: ignore[no-untyped-def]
    """``view(B, N, self.num_heads, 3, d)`` of a fused projection: the stored head count comes first
    and a literal part count (no attribute of the module holds it) second, so each head is a run of
    ``3 * d`` channels (its q, k and v) and the part dim carries none: picking a part keeps them."""
    module = ctx.module
    if module is None or len(sizes) != 3 or sizes[0] == sizes[1]:
        return False
    return bool(_attributes_holding(module, sizes[0], 0, 3)) and not _attributes_holding(module, sizes[1], 1, 3)


def _same_count(ctx, heads: Dim, derived: bool) -> None:  # type: ignore[no-untyped-def]
    """Projections a module views with the same stored head count hold that many heads each after
    the refresh, so their heads are cut alike (EfficientFormer-V2's q and v heads, which talking
    heads keep apart from each other, would otherwise be two groups cut to different counts)."""
    if derived or ctx.module is None or not isinstance(heads, Tracked):
        return
    key = (id(ctx.module), heads.size)
    known = ctx.counted.setdefault(key, heads)
    if known is not heads:
        ctx.store.unify(known, heads, ctx.where)


def heads_of(ctx, layout: Tracked, head_dim: int) -> Tracked | None:  # type: ignore[no-untyped-def]
    """``layout`` in units of ``head_dim`` positions (one per head), or None if a head would straddle."""
    segments = []
    for s in layout.segments:
        if s.inner % head_dim == 0:
            segments.append(Segment(s.source, s.start, s.length, s.inner // head_dim))
            continue
        r = head_dim // s.inner
        if head_dim % s.inner or s.start % r or s.length % r:
            return None
        source = FIXED if s.source == FIXED else ctx.store.coarsen(s.source, r)
        if source is None:
            return None
        segments.append(Segment(source, 0 if source == FIXED else s.start // r, s.length // r))
    return Tracked(tuple(segments))


def _permutation(args: tuple[Any, ...], kwargs: dict[str, Any], ndim: int, func: str) -> list[int]:
    if func.endswith(("transpose", "swapaxes", "swapdims", "transpose_")):
        a, b = arg(args, kwargs, 1, "dim0", 0), arg(args, kwargs, 2, "dim1", 1)
        perm = list(range(ndim))
        perm[a % ndim], perm[b % ndim] = perm[b % ndim], perm[a % ndim]
        return perm
    if func.endswith((".t", ".t_")) or func == "torch.t":
        return list(reversed(range(ndim)))
    if func.endswith(("movedim", "moveaxis")):
        src, dst = arg(args, kwargs, 1, "source", 0), arg(args, kwargs, 2, "destination", 0)
        src, dst = ([src], [dst]) if isinstance(src, int) else (list(src), list(dst))
        src, dst = [s % ndim for s in src], [d % ndim for d in dst]
        rest = iter(i for i in range(ndim) if i not in src)
        placed = dict(zip(dst, src))
        return [placed[j] if j in placed else next(rest) for j in range(ndim)]
    dims = arg(args, kwargs, 1, "dims", None)
    if isinstance(dims, int):
        dims = list(args[1:])
    return [d % ndim for d in dims]


@register_rule(*resolve("permute", "transpose", "transpose_", "swapaxes", "swapdims", "t", "t_",
                        "movedim", "moveaxis"))
def permute(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Output dim ``j`` is input dim ``perm[j]``."""
    dims = ctx.dims(args[0])
    if out.dim() != len(dims):
        return ctx.opaque(args, kwargs, out, "unexpected output rank")
    perm = _permutation(args, kwargs, len(dims), ctx.current)
    ctx.set(out, [dims[p] for p in perm])


def _getters(*names: str) -> list[Any]:
    """The functions a tensor's property read dispatches as (``x.T`` calls ``Tensor.T.__get__``)."""
    return [inspect.getattr_static(torch.Tensor, name).__get__ for name in names]


@register_rule(*_getters("T", "H"))
def reversed_property(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.T`` (and ``x.H``), read as a property: all dims reversed."""
    dims = ctx.dims(args[0])
    ctx.set(out, dims[::-1] if out.dim() == len(dims) else [None] * out.dim())


@register_rule(*_getters("mT", "mH"))
def matrix_transposed_property(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.mT`` (and ``x.mH``), read as a property: the last two dims swapped."""
    dims = ctx.dims(args[0])
    if out.dim() != len(dims) or len(dims) < 2:
        return ctx.opaque(args, kwargs, out, "unexpected output rank")
    ctx.set(out, dims[:-2] + [dims[-1], dims[-2]])


@register_rule(*_getters("real", "imag"))
def part_property(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``z.real`` and ``z.imag``: the same positions, each a real number."""
    ctx.set(out, ctx.dims(args[0]))


def _as_segments(d: Dim, size: int) -> tuple[Segment, ...]:
    if isinstance(d, Tracked):
        return d.segments
    return (Segment(FIXED, 0, size),)


@register_rule(*resolve("cat", "concat", "concatenate"))
def cat(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Layouts along ``dim`` are concatenated; the other dims are shared."""
    tensors = [t for t in arg(args, kwargs, 0, "tensors", ()) if t.numel() > 0 or t.dim() > 1]
    if not tensors:  # NOTE: only empty 1-d tensors (no detection passed a score threshold)
        return ctx.set(out, [None] * out.dim())
    dim = arg(args, kwargs, 1, "dim", 0) % out.dim()
    result: list[Dim] = list(ctx.dims(tensors[0]))
    for t in tensors[1:]:
        for i, d in enumerate(ctx.dims(t)):
            if i != dim:
                result[i] = ctx.store.unify(result[i], d, ctx.where)
    parts = [(ctx.dims(t)[dim], t.shape[dim]) for t in tensors]
    parts = [(d, n) for d, n in parts if n > 0]  # NOTE: an empty part (MobileBERT's 0-row dense) adds nothing
    if parts and all(isinstance(d, ParamDim) and d.size > 1 for d, _ in parts):
        # NOTE: a tensor assembled from parameter axes (BEiT's qkv bias cat(q_bias, k_bias, v_bias),
        # MobileBERT's cat([decoder.weight.t(), dense.weight])): each part is a source the parameter
        # follows, so the result is sliced wherever it meets channels.
        parts = [(ctx.store.param_source(d), n) for d, n in parts]
    if any(isinstance(d, Tracked) for d, _ in parts):
        result[dim] = Tracked(tuple(s for d, n in parts for s in _as_segments(d, n)))
    else:
        result[dim] = None
    ctx.set(out, result)


@register_rule(*resolve("stack"))
def stack(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """A new dim is inserted; the stacked tensors' dims are shared."""
    tensors = list(arg(args, kwargs, 0, "tensors", ()))
    dim = arg(args, kwargs, 1, "dim", 0) % out.dim()
    result = list(ctx.dims(tensors[0]))
    for t in tensors[1:]:
        result = [ctx.store.unify(a, b, ctx.where) for a, b in zip(result, ctx.dims(t))]
    ctx.set(out, result[:dim] + [None] + result[dim:])


@register_rule(*resolve("chunk", "split", "tensor_split", "unbind", "split_with_sizes"))
def split(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Equal chunks along channels are cut alike (chunk i channel j == chunk 0 channel j).

    ``chunk`` follows pruned widths; ``split`` at a constant size does only where the running
    module's refresh updates that size (``SPLIT_SIZE_FOLLOWS``); other constant sizes freeze.
    """
    x = args[0]
    pieces = list(out)
    dims = ctx.dims(x)
    name = ctx.current
    dim = arg(args, kwargs, 1 if name.endswith("unbind") else 2, "dim", 0) % x.dim()
    if _sections_sized_by_widths(ctx, args, kwargs, dims, dim, pieces):
        return None
    _split_sizes_read_elsewhere(ctx, args, kwargs, dims)
    sizes = [p.shape[dim] if p.dim() == x.dim() else 1 for p in pieces]
    layout = dims[dim]
    equal = len(set(sizes)) == 1
    stored = _stored_split_size(ctx, args, kwargs, layout) if equal and len(pieces) > 1 else None
    adaptive = equal and (name.endswith("chunk") or stored is not None or (
        name.rsplit(".", 1)[-1] == "split" and any(follows(ctx, len(pieces)) for follows in SPLIT_SIZE_FOLLOWS)))
    sections = not adaptive and name.rsplit(".", 1)[-1] == "split" and any(f(ctx) for f in SPLIT_SECTIONS_FOLLOW)
    held = None if adaptive or sections or not isinstance(layout, Tracked) else _held_sizes(ctx, args, kwargs,
                                                                                             sizes)
    if held is not None:
        return _split_at_held_sizes(ctx, layout, dims, dim, pieces, sizes, held)
    if isinstance(layout, Tracked) and not adaptive and not sections:
        _fix_split_sizes(ctx, args, kwargs)  # NOTE: frozen below at these sizes
    for k, piece in enumerate(pieces):
        piece_dims = list(dims)
        if isinstance(layout, Tracked):
            if sections:  # NOTE: parts of their own, at sizes the module's refresh keeps (CoaT's channel_splits,
                # GPT-BigCode's q|k|v): the sources are split there, so each part has units of its own
                start = sum(sizes[:k])
                piece_dims[dim] = ctx.store.section(layout, start, sizes[k]) or _slice(layout, start, sizes[k], ctx)
            elif adaptive:
                piece_dims[dim] = _slice(layout, k * sizes[0], sizes[0], ctx)
                if k == 0 and stored is not None and isinstance(piece_dims[dim], Tracked):
                    ctx.store.use(piece_dims[dim], stored, 0, "passive")
                if k > 0:
                    ctx.store.unify(_slice(layout, 0, sizes[0], ctx), piece_dims[dim], ctx.where)
            else:
                ctx.store.freeze(layout, f"split at constant sizes by {ctx.where}")
                piece_dims[dim] = None
        elif isinstance(layout, ParamDim):
            piece_dims[dim] = None
        if piece.dim() < x.dim():  # unbind drops the dim
            del piece_dims[dim]
        ctx.set(piece, piece_dims)


@register_rule(*resolve("glu"))
def glu(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``glu(x, dim)`` = first half * sigmoid(second half): channel ``j`` of the result reads channel
    ``j`` of each half, so the halves are cut alike (as ``chunk(2)``)."""
    x = args[0]
    dims = ctx.dims(x)
    dim = arg(args, kwargs, 1, "dim", -1) % x.dim()
    layout, half = dims[dim], x.shape[dim] // 2
    result = list(dims)
    if isinstance(layout, Tracked):
        first, second = _slice(layout, 0, half, ctx), _slice(layout, half, half, ctx)
        if isinstance(first, Tracked) and isinstance(second, Tracked):
            ctx.store.unify(first, second, ctx.where)
        result[dim] = first
    else:
        result[dim] = None
    ctx.set(out, result)


@register_rule(*resolve("narrow", "select"))
def narrow(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.narrow(dim, start, length)`` and ``x.select(dim, index)``: constant positions along
    ``dim``, as ``x[:, start:start+length]`` and ``x[:, index]`` (channels there are frozen); the
    whole width read from the tensor's shape is no cut."""
    from prunekit.graph.trace import ChannelInt, ConfigInt, DerivedInt

    x = args[0]
    dims = ctx.dims(x)
    dim = arg(args, kwargs, 1, "dim", 0) % x.dim()
    picked = ctx.current.endswith("select")
    length = arg(args, kwargs, 3, "length", -1)
    # NOTE: the whole width only if the length follows the cut (read from a shape, a config):
    # narrow(1, 0, 32) of 32 channels fails once they are fewer (narrow does not clip as a slice does)
    full = (not picked and int(length) == x.shape[dim] and int(arg(args, kwargs, 2, "start", 0)) == 0
            and isinstance(length, (ChannelInt, ConfigInt, DerivedInt)))
    if isinstance(dims[dim], Tracked) and not full:
        ctx.store.freeze(dims[dim], f"{'one channel picked' if picked else 'constant slice of channels'} by "
                                    f"{ctx.where}")
    result = dims[:dim] + dims[dim + 1:] if picked else dims[:dim] + [dims[dim] if full else None] + dims[dim + 1:]
    ctx.set(out, result)


@register_rule(*resolve("view_as_complex", "view_as_real"))
def complex_view(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``view_as_complex`` folds a trailing dim of 2 (real, imaginary) into the dtype;
    ``view_as_real`` unfolds it again (rotary embeddings in complex form); other dims keep their channels."""
    x = args[0]
    dims = ctx.dims(x)
    if ctx.current.endswith("view_as_real"):
        return ctx.set(out, dims + [None])
    if isinstance(dims[-1], Tracked):
        ctx.store.freeze(dims[-1], f"real and imaginary parts of channels folded by {ctx.where}")
    ctx.set(out, dims[:-1])


def _split_sizes_asked(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The sizes a split was asked for, however passed: ``split(x, sizes)``,
    ``split_size_or_sections=`` (torch.split), ``split_size=`` (Tensor.split), ``split_sizes=``
    (split_with_sizes), ``sections=`` (tensor_split)."""
    fallback = next((kwargs[k] for k in ("split_size", "split_sizes", "sections") if k in kwargs), None)
    return arg(args, kwargs, 1, "split_size_or_sections", fallback)


def _held_sizes(ctx, args, kwargs, sizes: list[int]) -> tuple[list[Any], bool] | None:  # type: ignore[no-untyped-def]
    """``split(x, self.splits, 1)`` (MixConv), ``split(x, [self.dim_conv3, self.dim_untouched], 1)``
    (FasterNet), ``x.split(self.expand_chs // 2, 1)`` (CSPNet), ``split([self.args.d_inner,
    self.args.d_inner])`` (mamba-minimal's settings object, shared by every block): split sizes that
    attributes of the running module (one whose sizes are its own: ``_sizes_its_own``) or of a
    settings object it holds keep. Per piece, the size attribute that records its width (see
    ``ChannelGroup.attrs``): entry ``k`` of a list equal to the sizes, else the one int attribute
    equal to the piece's size, or a size read from a parameter's axis (``n`` of ``self.A_log.shape``,
    a ParamInt: the piece is that axis's channels); and whether one attribute holds the sum of the
    pieces instead (equal pieces of ``expand_chs // 2``). None where a size is held by no attribute
    or by several (the split is frozen then)."""
    from prunekit.graph.trace import ChannelInt, DerivedInt, ParamInt

    if ctx.current.rsplit(".", 1)[-1] not in ("split", "split_with_sizes") or len(sizes) < 2:
        return None
    requested = _split_sizes_asked(args, kwargs)
    asked = list(requested) if isinstance(requested, (list, tuple)) else [requested]
    if any(not isinstance(a, int) or isinstance(a, (bool, ChannelInt, DerivedInt)) for a in asked):
        return None  # NOTE: widths read from shapes follow by themselves (other rules)
    module, scope = calling_module(ctx)
    if not _sizes_its_own(module) or any((id(module), a) in ctx.fixed_sizes for a in asked):
        return None
    ints = _int_attributes(ctx, module, scope)
    if len(asked) == len(sizes):
        lists = [key for key, v in vars(module).items() if type(v) in (list, tuple) and list(v) == asked]
        if len(lists) == 1:
            return [size_attribute(scope, lists[0], k) for k in range(len(sizes))], False
        names = [[a] if isinstance(a, ParamInt) else [key for key, v in ints.items() if v == a] for a in asked]
        return ([n[0] for n in names], False) if all(len(n) == 1 for n in names) else None
    if len(set(sizes)) != 1 or type(asked[0]) is not int:
        return None
    each = [key for key, v in ints.items() if v == sizes[0]]
    total = [key for key, v in ints.items() if v == sizes[0] * len(sizes)]
    if len(each) + len(total) != 1:
        return None
    return [(each or total)[0]] * len(sizes), bool(total)


def _int_attributes(ctx, module: Any, scope: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Size attribute name (``size_attribute``) -> value, of every int attribute of ``module`` and of
    the settings objects it holds (a dataclass, a namespace: ``self.args.d_inner``). A settings object
    shared by several modules is named under the first that used it, so every use is one attribute."""
    found = {size_attribute(scope, key, None): v for key, v in vars(module).items() if type(v) is int}
    for key, holder in vars(module).items():
        if key.startswith("_") or not settings_object(holder):
            continue
        at = ctx.holders.setdefault(id(holder), (holder, f"{scope}|{key}"))[1]
        owner, path = at.split("|")
        found.update({size_attribute(owner, f"{path}.{name}", None): v for name, v in vars(holder).items()
                      if type(v) is int and not name.startswith("_")})
    return found


def _fix_split_sizes(ctx, args, kwargs) -> None:  # type: ignore[no-untyped-def]
    """A split frozen at constant sizes: each size stays (see ``fix_size``)."""
    requested = _split_sizes_asked(args, kwargs)
    module, scope = calling_module(ctx)
    for size in requested if isinstance(requested, (list, tuple)) else [requested]:
        fix_size(ctx, module, scope, size, ctx.where)


def _sizes_its_own(module: Any) -> bool:
    """Whether ``module``'s size attributes may be rewritten alone: it has no refresh of its own (that
    keeps them), and it is no Hugging Face module (its sizes are its config's, which the config
    refresh keeps: an attribute rewritten alone would leave the saved config stale)."""
    from prunekit.graph.registry import refresh_for

    return (module is not None and refresh_for(module) is None
            and not type(module).__module__.startswith("transformers."))


def _split_at_held_sizes(ctx, layout: Tracked, dims: list[Dim], dim: int, pieces: list[torch.Tensor],  # type: ignore[no-untyped-def]
                         sizes: list[int], held: tuple[list[Any], bool]) -> None:
    """Each piece as channels of its own (sources split at its ends, so pieces are cut apart), its
    size attribute joined to it so ``apply`` rewrites it. Pieces one attribute sizes (``[self.d,
    self.d]``) are cut alike, so that one value stays right for each; where it holds their sum, every
    piece's cut counts in it."""
    from prunekit.graph.trace import ParamInt

    attrs, summed = held
    module, _ = calling_module(ctx)
    start, first = 0, None
    axes: dict[tuple[str, int], Tracked] = {}
    for piece, size, attr in zip(pieces, sizes, attrs):
        part = ctx.store.section(layout, start, size) or _slice(layout, start, size, ctx)
        if isinstance(part, Tracked) and isinstance(attr, ParamInt):  # NOTE: that axis's channels
            key = (attr.dim.tensor, attr.dim.axis)
            if key in axes:
                ctx.store.unify(axes[key], part, ctx.where)
            else:
                axes[key] = part
                ctx.store.use(part, attr.dim.tensor, attr.dim.axis, "passive", offset=attr.dim.start)
        elif isinstance(part, Tracked):
            if summed and first is not None:  # NOTE: equal parts; one more count of the attribute each
                ctx.store.unify(first, part, ctx.where)
            value = sum(sizes) if summed else size
            join_size(ctx, module, value, attr, part, offset=start if summed else 0)
            first = first or part
        start += size
        ctx.set(piece, dims[:dim] + [part] + dims[dim + 1:])


def _stored_split_size(ctx, args, kwargs, layout: Dim) -> str | None:  # type: ignore[no-untyped-def]
    """``split(self.n_embd, dim)`` into equal parts in a user's module: the size attribute of the one
    attribute holding the split size (``apply`` rewrites it to a part's pruned width); else None."""
    if not isinstance(layout, Tracked) or ctx.current.rsplit(".", 1)[-1] != "split":
        return None
    from prunekit.graph.handlers.user_modules import split_size_attribute

    return split_size_attribute(ctx, _split_sizes_asked(args, kwargs))


def _sections_sized_by_widths(ctx, args, kwargs, dims: list[Dim], dim: int,  # type: ignore[no-untyped-def]
                              pieces: list[torch.Tensor]) -> bool:
    """``split(y, (C, C, 3))`` with ``C`` read from another tensor's shape (FocalNet's modulation:
    ``q, ctx, gates = split(proj(x), (x.shape[-1], x.shape[-1], L + 1))``): after pruning, each such
    section is as wide as that tensor, so its channels are unified with that tensor's; the sections
    of constant size are frozen, alone. False (nothing done): not that case."""
    from prunekit.graph.trace import ChannelInt

    requested = _split_sizes_asked(args, kwargs)
    layout = dims[dim]
    if (not isinstance(layout, Tracked) or not isinstance(requested, (list, tuple)) or len(requested) != len(pieces)
            or not any(isinstance(r, ChannelInt) for r in requested) or ctx.current.endswith("unbind")):
        return False
    start = 0
    for size, piece in zip(requested, pieces):
        part = _slice(layout, start, int(size), ctx)
        start += int(size)
        if isinstance(size, ChannelInt) and isinstance(part, Tracked):
            ctx.store.unify(size.layout, part, ctx.where)
        elif isinstance(part, Tracked):
            ctx.store.freeze(part, f"split at a constant size by {ctx.where}")
        ctx.set(piece, dims[:dim] + [part] + dims[dim + 1:])
    return True


def _split_sizes_read_elsewhere(ctx, args, kwargs, dims: list[Dim]) -> None:  # type: ignore[no-untyped-def]
    """``split(y, (C, C, 3))`` with ``C`` read from another tensor's shape (FocalNet's modulation):
    ``C`` follows that tensor's pruned width while ``y`` is cut apart from it, so that width is frozen
    (``y``'s own widths are handled by the split itself)."""
    from prunekit.graph.trace import ChannelInt

    sizes = _split_sizes_asked(args, kwargs)
    sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
    for size in sizes:
        layouts = [size.layout] if isinstance(size, ChannelInt) else list(getattr(size, "layouts", ()))
        for layout in layouts:
            if layout not in dims:
                ctx.store.freeze(layout, f"the width of these channels is read from a shape and used as a split "
                                         f"size of other data in {ctx.where}")


def _slice(layout: Tracked, start: int, length: int, ctx) -> Dim:  # type: ignore[no-untyped-def]
    """Positions ``start .. start+length`` of a layout (whole channels only; else frozen, None)."""
    part = slice_layout(layout, start, length)
    if part is None:
        ctx.store.freeze(layout, f"slice cuts through a channel in {ctx.where}")
    return part


@register_rule(*resolve("__getitem__"))
def getitem(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Basic indexing: ``:`` keeps a dim, an int drops it, ``None`` adds one; bounded slices of
    channels freeze them (the bounds are constants that would not follow pruning)."""
    x, index = args[0], args[1]
    index = index if isinstance(index, tuple) else (index,)
    tensors = [k for k, i in enumerate(index) if isinstance(i, torch.Tensor)]
    if (len(tensors) == 1 and isinstance(out, torch.Tensor) and all(i == slice(None) for i in index[:tensors[0]])
            and not index[tensors[0]].dtype.is_floating_point and index[tensors[0]].dtype != torch.bool
            and all(i == slice(None) for i in index[tensors[0] + 1:])):  # NOTE: CTRL's ``table[ids, :]``
        return _gather_rows(ctx, x, tensors[0], index[tensors[0]], out)
    if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in index):
        return ctx.opaque(args, kwargs, out, "advanced (tensor) indexing")
    dims, result, d = ctx.dims(x), [], 0
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    for i in index:
        if i is Ellipsis:
            skip = x.dim() - n_real
            result.extend(dims[d:d + skip])
            d += skip
        elif i is None:
            result.append(None)
        elif isinstance(i, int):
            if isinstance(dims[d], Tracked) and id(x) not in ctx.fills:  # NOTE: GIT's zeros_like(h)[..., 0]
                ctx.store.freeze(dims[d], f"one channel picked by {ctx.where}")
            d += 1
        elif isinstance(i, slice):
            full = _whole(i, x.shape[d])
            strided = None if full else _strided(ctx, dims[d], i, x.shape[d]) or _section(ctx, dims[d], i,
                                                                                       x.shape[d])
            if isinstance(dims[d], Tracked) and not full and strided is None:
                ctx.store.freeze(dims[d], f"constant slice of channels in {ctx.where}")
            result.append(dims[d] if full else strided)
            d += 1
        else:
            return ctx.opaque(args, kwargs, out, f"index of type {type(i).__name__}")
    result.extend(dims[d:])
    ctx.set(out, result)


def _whole(index: slice, size: int) -> bool:
    """``x[:, :n]`` with ``n`` at least the width (GhostNet's ``cat(a, b)[:, :self.oup]`` of exactly
    ``oup`` channels) selects every channel, and still does once they are cut (fewer, ``n`` kept):
    an identity, not a constant slice."""
    start, stop = index.start, index.stop
    return (index.step in (None, 1) and (start is None or (type(start) is int and (start == 0 or start <= -size)))
            and (stop is None or (type(stop) is int and stop >= size)))


def _strided(ctx, layout: Dim, index: slice, size: int) -> Tracked | None:  # type: ignore[no-untyped-def]
    """``x[..., s::k]`` over channels (GPT-OSS's interleaved ``gate_up[..., ::2]`` and ``[..., 1::2]``):
    position ``r`` of the result is channel ``r*k + s``, so channels are cut in units of ``k``
    consecutive ones (every part of a unit goes together) and the result holds one per unit."""
    k, start = index.step, index.start or 0
    if (not isinstance(layout, Tracked) or type(k) is not int or k <= 1 or index.stop is not None
            or not 0 <= start < k or size % k):
        return None
    return heads_of(ctx, layout, k)


def _section(ctx, layout: Dim, index: slice, size: int) -> Dim:  # type: ignore[no-untyped-def]
    """``x[..., a:b]`` of channels inside a module whose refresh keeps its slice bounds at the parts'
    pruned widths (``SPLIT_SECTIONS_FOLLOW``: Phi-3's q|k|v): the part's own channels; else None."""
    if not isinstance(layout, Tracked) or index.step not in (None, 1) or not any(f(ctx) for f in SPLIT_SECTIONS_FOLLOW):
        return None
    start, stop, _ = index.indices(size)
    return ctx.store.section(layout, start, stop - start) if stop > start else None


def _gather_rows(ctx, x: torch.Tensor, at: int, index: torch.Tensor, out: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    """``table[idx]`` / ``table[:, idx]`` with an integer tensor: entries along dim ``at`` are picked
    (it becomes ``idx``'s dims), the other dims keep their channels or parameter axes (a relative
    position table's heads: Swin's ``table[index]``, EfficientFormer's ``biases[:, idxs]``)."""
    dims = ctx.dims(x)
    if isinstance(dims[at], Tracked):
        ctx.store.freeze(dims[at], f"channels picked by an index tensor in {ctx.where}")
    ctx.set(out, dims[:at] + [None] * index.dim() + dims[at + 1:])


@register_rule(*resolve("index_select"))
def index_select(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``table.index_select(dim, idx)``: entries along ``dim`` are picked, the other dims keep their
    channels or parameter axes (XGLM's sinusoidal table read by position ids)."""
    x, index = args[0], arg(args, kwargs, 2, "index", None)
    if not isinstance(x, torch.Tensor) or not isinstance(index, torch.Tensor) or not isinstance(out, torch.Tensor):
        return ctx.opaque(args, kwargs, out, "unexpected arguments")
    _gather_rows(ctx, x, arg(args, kwargs, 1, "dim", 0) % max(x.dim(), 1), index.reshape(-1), out)


@register_rule(*resolve("gather", "take_along_dim"))
def gather(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.gather(dim, idx)``: along ``dim`` entries are picked by ``idx``; elsewhere position ``i``
    of the result is position ``i`` of ``x`` (a last token picked per row: ``h.gather(1, idx.expand(-1,
    -1, h.size(-1)))``), so those dims keep ``x``'s channels, tied to ``idx``'s where it follows them.
    Channels along ``dim`` are picked by number: frozen. An index of a fixed width over channels
    would not follow the cut: frozen too."""
    x = args[0]
    take = ctx.current.endswith("take_along_dim")
    index = arg(args, kwargs, 1 if take else 2, "indices" if take else "index", None)
    dim = arg(args, kwargs, 2 if take else 1, "dim", None)
    if not isinstance(index, torch.Tensor) or dim is None or index.dim() != x.dim() or out.shape != index.shape:
        return ctx.opaque(args, kwargs, out, "gather of another form")
    dim %= x.dim()
    dims, picks = ctx.dims(x), ctx.dims(index)
    result: list[Dim] = []
    for d, (layout, pick) in enumerate(zip(dims, picks)):
        if d == dim:
            if isinstance(layout, Tracked):
                ctx.store.freeze(layout, f"channels picked by an index tensor in {ctx.where}")
            result.append(None)
        elif isinstance(layout, Tracked) and isinstance(pick, Tracked):
            result.append(ctx.store.unify(layout, pick, ctx.where))
        elif isinstance(layout, Tracked):  # NOTE: the index reads the first positions only; they would shift
            ctx.store.freeze(layout, f"an index of a fixed width reads these channels in {ctx.where}")
            result.append(None)
        else:
            result.append(pick if isinstance(pick, Tracked) else None)
    ctx.set(out, result)


@register_rule(*resolve("index_add", "index_add_"))
def index_add(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.index_add(dim, idx, src)``: rows of ``src`` are added to rows of ``x`` along ``dim`` (MoE
    outputs scattered back to their tokens); every other dim holds the same positions in both."""
    x, source = args[0], arg(args, kwargs, 3, "source", None)
    d = arg(args, kwargs, 1, "dim", 0) % max(x.dim(), 1)
    if not isinstance(source, torch.Tensor) or source.dim() != x.dim() or not isinstance(out, torch.Tensor):
        return ctx.opaque(args, kwargs, out, "index_add of another rank")
    dims, other = ctx.dims(x), ctx.dims(source)
    for layout in (dims[d], other[d]):
        if isinstance(layout, Tracked):
            ctx.store.freeze(layout, f"channels added at indexed positions in {ctx.where}")
    result = [None if k == d else ctx.store.unify(a, b, ctx.where) for k, (a, b) in enumerate(zip(dims, other))]
    ctx.set(out, result)


@register_rule(*resolve("expand", "expand_as", "broadcast_to", "repeat", "tile"))
def expand(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Right-aligned: same-size dims keep their channels; grown dims carry none, unless their size
    follows pruning (see ``_broadcast_targets``): then one value per channel is no channel of its own."""
    x = args[0]
    dims = ctx.dims(x)
    result: list[Dim] = _broadcast_targets(ctx, args, kwargs, out)
    copied = ctx.current.endswith(("repeat", "tile"))
    for k in range(1, x.dim() + 1):
        if x.shape[-k] == out.shape[-k]:
            result[-k] = dims[-k]
        elif copied and (whole := _copies(ctx, dims[-k], out.shape[-k] // x.shape[-k])) is not None:
            result[-k] = whole
        elif isinstance(dims[-k], Tracked):
            ctx.store.freeze(dims[-k], f"channels repeated by {ctx.where}")
        elif x.shape[-k] != 1:
            result[-k] = None
        elif result[-k] is None and _one_head_repeated(ctx, out, out.dim() - k):
            result[-k] = ctx.store.new_source(out.shape[-k], f"one key/value head repeated by {ctx.where}")
        elif (result[-k] is None and ctx.current.endswith("expand") and out.dim() - k >= 1 and out.shape[-k - 1] == 1
              and (queries := _user_key_repeated(ctx, dims[-k - 1] if k < x.dim() else None, out.shape[-k],
                                                 partial(expand_attribute, j=out.dim() - k, count=out.dim())))
              is not None):
            result[-k] = queries
    ctx.set(out, result)


def _copies(ctx, d: Dim, copies: int) -> Tracked | None:  # type: ignore[no-untyped-def]
    """``x.repeat(B, 1, 1)`` of per-head values (ALiBi's slopes for ``B * heads`` folded into the
    batch): ``copies`` copies of ``d``'s channels, one after the other, as ``reshape(B * H, ...)``
    lays out heads (``_merged``); a parameter's axis becomes a source it uses (sliced if it meets
    channels). None: nothing to copy."""
    if isinstance(d, ParamDim) and d.size:
        d = ctx.store.param_source(d)
    if not isinstance(d, Tracked) or copies < 2 or copies > _MAX_COPIES:
        return None
    return Tracked(d.segments * copies)


def _user_key_repeated(ctx, head: Dim, count: int,  # type: ignore[no-untyped-def]
                       written_by: Callable[[Any], tuple[bool, str | None]]) -> Tracked | None:
    """Multi-query attention written by hand: a one-head dim (``head``: one unit of head size, or
    nothing tracked) repeated once per query head, at a count one attribute of the user's module
    holds (``user_modules.queries_per_key``). Every query head reads the same key/value data, so the
    repeated dim gets channels of its own (unified with the query heads where they meet) and the
    attribute joins them (``apply`` rewrites it). ``written_by(module)``: how the call writes the
    count (see ``call_source.repeats_attribute``). None: not that case."""
    from prunekit.graph.handlers.user_modules import queries_per_key, user_module

    found = user_module(ctx)
    if found is None or (isinstance(head, Tracked) and sum(s.length for s in head.segments) != 1):
        return None
    attr = queries_per_key(ctx, count, written_by(found[0]))
    if attr is None:
        return None
    queries = ctx.store.new_source(count, f"one key/value head repeated by {ctx.where}")
    return queries if join_size(ctx, found[0], count, attr, queries) else None


def _one_head_repeated(ctx, out: torch.Tensor, j: int) -> bool:  # type: ignore[no-untyped-def]
    """Multi-query attention's ``repeat_kv``: the one key/value head (a size-1 dim before ``j``)
    expanded to the module's stored count of query heads per key/value head, which its refresh keeps
    (``QUERY_GROUPS_FOLLOW``). Every query head reads the same key/value data, so the query heads are
    cut freely (the repeated dim gets channels of its own, unified with the query heads) instead of
    being frozen against a fixed-size dim."""
    module = ctx.module
    if module is None or j < 1 or out.shape[j - 1] != 1:
        return False
    return out.shape[j] == vars(module).get("num_key_value_groups") and any(f(ctx) for f in QUERY_GROUPS_FOLLOW)


def _broadcast_targets(ctx, args, kwargs, out) -> list[Dim]:  # type: ignore[no-untyped-def]
    """The layouts a broadcast grows its size-1 dims to, where the size follows pruning: the dims of
    the tensor given to ``expand_as`` (XLM's ``mask.view(bs, 1, q, k).expand_as(scores)``: the mask
    is as wide as the heads it is applied to), or a size read from a tracked dim (``x.size(1)``).
    A constant size stays plain (None)."""
    result: list[Dim] = [None] * out.dim()
    if ctx.current.endswith(("repeat", "tile")):
        # NOTE: counts of copies, not target sizes; but a size-1 dim repeated a width's count of
        # times is that width (MAE's ids.unsqueeze(-1).repeat(1, 1, D) to gather tokens with), and
        # repeated by a stored head count the refresh keeps, those heads (MRA's mask, once per head)
        counts = _raw_sizes(args, kwargs)
        x = args[0]
        if counts is not None and len(counts) == out.dim():
            grown = [1] * (out.dim() - x.dim()) + list(x.shape)
            result = [(sized_by(c) or _stored_head_count(ctx, c)) if n == 1 else None for c, n in zip(counts, grown)]
        return result
    if ctx.current.endswith("expand_as"):
        other = arg(args, kwargs, 1, "other", None)
        if isinstance(other, torch.Tensor) and other.dim() == out.dim():
            result = [d if isinstance(d, Tracked) else None for d in ctx.dims(other)]
        return result
    sizes = _raw_sizes(args, kwargs) if not ctx.current.endswith("broadcast_to") else \
        arg(args, kwargs, 1, "size", None)
    if isinstance(sizes, (tuple, list, torch.Size)) and len(sizes) == out.dim():
        result = [sized_by(s) for s in sizes]
    return result


@register_rule(*resolve("repeat_interleave"))
def repeat_interleave(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Each position along ``dim`` repeated ``repeats`` times in place: a channel becomes ``repeats``
    consecutive positions (like a flatten of ``[C, repeats]``), so its consumers see it in blocks.
    Other dims keep their channels. Per-position repeats (a tensor) or a flattening call (no ``dim``)
    freeze the channels they move; a count computed from a width would change with pruning."""
    from prunekit.graph.trace import ChannelInt, DerivedInt

    x = args[0]
    repeats, dim = arg(args, kwargs, 1, "repeats", None), arg(args, kwargs, 2, "dim", None)
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or dim is None:
        return ctx.opaque(args, kwargs, out, f"{ctx.current} without a dim")
    dims, d = ctx.dims(x), dim % x.dim()
    result: list[Dim] = list(dims)
    if isinstance(repeats, torch.Tensor) and repeats.numel() == 1 and repeats.device.type != "meta":
        repeats = int(repeats)
    layout = dims[d]
    if layout is None and x.shape[d] == 1 and (grown := sized_by(repeats)) is not None:
        # NOTE: one position repeated as many times as there are channels is a broadcast to them
        # (YOSO's ``mask.unsqueeze(1).repeat_interleave(num_heads, dim=1)``, ``num_heads`` read from a shape)
        result[d] = grown
        return ctx.set(out, result)
    if (heads := _groups_to_heads(ctx, layout, repeats, out.shape[d])) is not None:
        return ctx.set(out, result[:d] + [heads] + result[d + 1:])
    queries = _user_key_repeated(ctx, layout, out.shape[d], repeats_attribute) if x.shape[d] == 1 else None
    if queries is not None:
        return ctx.set(out, result[:d] + [queries] + result[d + 1:])
    for source in (repeats.layouts if isinstance(repeats, DerivedInt) else
                   (repeats.layout,) if isinstance(repeats, ChannelInt) else ()):
        ctx.store.freeze(source, f"a repeat count computed from the width of these channels in {ctx.where}")
    if isinstance(layout, Tracked) and isinstance(repeats, int):
        result[d] = layout.scaled(repeats)
    else:
        if isinstance(layout, Tracked):
            ctx.store.freeze(layout, f"channels repeated by per-position counts in {ctx.where}")
        result[d] = None
    ctx.set(out, result)


def _groups_to_heads(ctx, groups: Dim, repeats: Any, heads_size: int) -> Tracked | None:  # type: ignore[no-untyped-def]
    """``x.repeat_interleave(num_heads // num_groups, dim)``: each of ``num_groups`` groups serves as
    many consecutive heads (Mamba-2's B and C). The count is the ratio of two widths, so it stays
    what was traced only if they are cut in proportion: the heads are tied to the repeated groups
    (a cut group takes its heads along). One group serves every head: the heads are cut freely
    and the count follows them. None (the usual rule applies) for any other count."""
    from prunekit.graph.trace import DerivedInt

    if not isinstance(groups, Tracked) or not isinstance(repeats, DerivedInt) or len(repeats.layouts) != 2:
        return None
    counted, heads = sorted(repeats.layouts, key=lambda layout: layout.size)
    if counted.size != groups.size or heads.size != heads_size or heads_size != groups.size * int(repeats):
        return None
    ctx.store.unify(counted, groups, ctx.where)  # NOTE: C repeated by the count read from B: B and C cut alike
    if groups.size == 1:
        return heads
    repeated = groups.scaled(int(repeats))
    ctx.store.unify(heads, repeated, ctx.where)
    return repeated


@register_rule(*resolve("tril", "triu", "tril_", "triu_"))
def triangle(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``tril``/``triu`` zero one side of the diagonal of the last two dims (causal masks, segment
    sums): the leading dims keep their channels; channels on the last two would be zeroed by
    position, so they are frozen."""
    ctx.set(out, matrices(ctx, args[0], f"channels on a diagonal's side zeroed by position in {ctx.where}"))


def matrices(ctx, x: torch.Tensor, why: str) -> list[Dim]:  # type: ignore[no-untyped-def]
    """``x``'s dims with channels on its last two (the matrices) frozen with ``why``."""
    dims = list(ctx.dims(x))
    for k in (-2, -1):
        if isinstance(dims[k], Tracked):
            ctx.store.freeze(dims[k], why)
            dims[k] = None
    return dims


@register_rule(torch.Tensor.unfold)
def windows(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.unfold(dim, size, step)``: sliding windows along ``dim`` (a window index there, the
    positions within a window as a new last dim); the other dims keep their channels. Windows
    across channels would overlap them, so those channels are frozen. (``F.unfold`` is im2col.)"""
    x = args[0]
    d = arg(args, kwargs, 1, "dimension", 0) % max(x.dim(), 1)
    dims = ctx.dims(x)
    if isinstance(dims[d], Tracked):
        ctx.store.freeze(dims[d], f"sliding windows over channels in {ctx.where}")
    ctx.set(out, dims[:d] + [None] + dims[d + 1:] + [None])


@register_rule(*resolve("roll", "flip", "fliplr", "flipud", "rot90"))
def reorder(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Ops that reorder positions along some dims: channels elsewhere stay in place; reordered
    channels are frozen (a kept channel would land at another index)."""
    x = args[0]
    name = ctx.current
    if name.endswith("roll"):
        moved = arg(args, kwargs, 2, "dims", None)
        moved = range(x.dim()) if moved is None else ([moved] if isinstance(moved, int) else moved)
    elif name.endswith("fliplr"):
        moved = [1]
    elif name.endswith("flipud"):
        moved = [0]
    else:
        moved = arg(args, kwargs, 1, "dims", (0, 1))
        moved = [moved] if isinstance(moved, int) else moved
    moved = {d % x.dim() for d in moved}
    dims = ctx.dims(x)
    for d in moved:
        if isinstance(dims[d], Tracked):
            ctx.store.freeze(dims[d], f"channels reordered by {ctx.where}")
            dims[d] = None
    if name.endswith("rot90") and out.shape != x.shape:
        return ctx.opaque(args, kwargs, out, "rot90 swaps dims")
    ctx.set(out, dims)


@register_rule(*resolve("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "arange",
                        "zeros", "ones", "full", "empty", "tensor", "as_tensor", "linspace", "eye"))
def create(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """New tensors of an explicit shape: the source tensor (if any) only lends dtype and device.

    A tensor of one value everywhere (zeros, ones, full, empty) sized by a channel count read from
    a tracked dim follows that width after pruning, so that dim holds those channels (GPT-NeoX-
    Japanese's ``torch.zeros(B * heads, q, k)`` that ``baddbmm`` adds to the heads' scores)."""
    ctx.set(out, _uniform_dims(ctx, args, kwargs, out) if ctx.current.endswith(_UNIFORM) else [None] * out.dim())


_UNIFORM = ("zeros", "ones", "full", "empty")  # factories (and new_*) whose values do not depend on the position


def _uniform_dims(ctx, args, kwargs, out) -> list[Dim]:  # type: ignore[no-untyped-def]
    """Per dim of a uniform factory's result: the channels its requested size was read from
    (a ChannelInt), or ``k`` copies of them (``B * heads``, a DerivedInt of one width), else None."""
    rest = args[1:] if ctx.current.rpartition(".")[2].startswith("new_") else args
    sizes = kwargs.get("size", rest[0] if rest and isinstance(rest[0], (tuple, list, torch.Size)) else rest)
    if ctx.current.endswith("full") and sizes is rest:
        sizes = ()
    if not isinstance(sizes, (tuple, list, torch.Size)) or len(sizes) != out.dim():
        return [None] * out.dim()
    # NOTE: only the last dim (channels-last rows) or, of 3 or more dims, dim 1 (channels-first
    # features: a ConvLSTM's new_zeros(B, self.hidden, H, W)) may be a stored width; a token count
    # that equals some attribute elsewhere is not channels
    last = len(sizes) - 1
    return [sized_by(size) or _stored_head_count(ctx, size)
            or (_stored_uniform_size(ctx, size, j, len(sizes)) if j and (j == last or (j == 1 and last >= 2)) else None)
            for j, size in enumerate(sizes)]


def _stored_head_count(ctx, size: Any) -> Tracked | None:  # type: ignore[no-untyped-def]
    """A uniform tensor sized by the head count of an attention module whose refresh keeps that
    count (T5's cross-attention ``torch.zeros((1, self.n_heads, q, k))`` position bias): the dim
    follows the heads it meets (a new source without a producer); None otherwise."""
    module = ctx.module
    if module is None or type(size) is not int or size <= 1 or not any(f(ctx) for f in HEAD_COUNT_FOLLOWS):
        return None
    if not any(type(vars(module).get(n)) is int and vars(module)[n] == size for n in _HEAD_COUNTS):
        return None
    scope = ctx.scope[-1]
    return ctx.store.new_source(size, f"{scope}.heads" if scope else "heads")


_HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads")


def _stored_uniform_size(ctx, size: Any, j: int, ndim: int) -> Tracked | None:  # type: ignore[no-untyped-def]
    """A uniform tensor sized by the one attribute of the running module that holds ``size``
    (JetMoE's ``torch.zeros(B * T, self.input_size)`` that the experts' outputs are added into; Zaya's
    ``new_zeros(B, 1, self.hidden_size)`` in an attention with a refresh): its positions are channels
    that whatever meets them decides (a new source without a producer), and the attribute joins
    their group (``apply`` rewrites it, before any refresh). None: a constant nothing holds."""
    module, scope = calling_module(ctx)
    if module is None or type(size) is not int or size <= 1:
        return None
    found = read_first(module, _attributes_holding(module, size, j, ndim), lambda item: item[0])
    if len(found) != 1:  # NOTE: of several holding it, the one the call reads (``self.input_size``)
        return None
    attr, index = found[0]
    layout = ctx.store.new_source(size, f"{scope}.{attr}" if scope else attr)
    if index is None:
        join_size(ctx, module, size, size_attribute(scope, attr, index), layout)
    else:
        ctx.store.use(layout, size_attribute(scope, attr, index), 0, "passive")
    return layout


def sized_by(size: Any) -> Tracked | None:
    """The channels a size read from a tracked dim stands for: a ChannelInt's, or ``k`` copies of
    them for a DerivedInt ``k * width`` of one width (``B * heads``); None for any other size."""
    from prunekit.graph.trace import ChannelInt, DerivedInt

    layouts = (size.layout,) if isinstance(size, ChannelInt) else size.layouts if isinstance(size, DerivedInt) else ()
    layout = layouts[0] if len(layouts) == 1 and isinstance(layouts[0], Tracked) else None
    if layout is None or not layout.size or not int(size) or int(size) % layout.size:
        return None
    return Tracked(layout.segments * (int(size) // layout.size))


@register_rule(*resolve("as_strided"))
def as_strided(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``x.as_strided(size, stride)``: a dim of ``x`` that carries channels and the one output dim
    of the same size and stride read the same positions (Longformer's overlapping chunks keep the
    batch * heads dim and redraw only the sequence dims). Channels redrawn otherwise are frozen."""
    x = args[0]
    dims = ctx.dims(x)
    offset = arg(args, kwargs, 3, "storage_offset", None)  # NOTE: None: x's own offset
    same_offset = offset is None or int(offset) == x.storage_offset()
    result: list[Dim] = [None] * out.dim()
    for j, d in enumerate(dims):
        if not isinstance(d, Tracked):
            continue
        matches = [k for k in range(out.dim()) if out.shape[k] == x.shape[j] and out.stride(k) == x.stride(j)]
        if same_offset and len(matches) == 1 and result[matches[0]] is None:
            result[matches[0]] = d
        else:
            ctx.store.freeze(d, f"channels redrawn by {ctx.where}")
    ctx.set(out, result)
