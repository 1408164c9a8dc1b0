"""Attention: batched matmul, scaled_dot_product_attention and nn.MultiheadAttention, pruned by head.

A head is ``head_dim`` consecutive channels of the q/k/v projections. Viewing a projection as
``[..., H, head_dim]`` coarsens its channels into heads (``shape._split_outer``), and the rules
here carry the heads dim through ``q @ k^T``, softmax and ``attn @ v`` as a batch dim, so one group
channel is one head: ``head_dim`` rows of each of q, k, v and ``head_dim`` columns of the output
projection. With grouped-query attention a key/value head serves ``n_rep`` query heads; the
solver then groups the query heads ``n_rep`` at a time with their key/value head (units of
``n_rep * head_dim`` query rows), so ``num_key_value_groups`` is unchanged by pruning.

``nn.MultiheadAttention``'s heads and its embedding dim are separate groups; ``attention_modules``
keeps the module working when pruning makes them disagree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph.constraints import Dim, ParamDim, Segment, Tracked
from prunekit.graph.handlers import shape
from prunekit.graph.handlers.attention_modules import register_libraries
from prunekit.graph.handlers.common import arg, read_as_data
from prunekit.graph.registry import register_rule, resolve


def _contract(ctx, a: Dim, b: Dim) -> None:  # type: ignore[no-untyped-def]
    """A matmul sums over ``a`` (last dim of the left) and ``b`` (second-last of the right)."""
    if isinstance(a, Tracked) and isinstance(b, Tracked):
        ctx.store.unify(a, b, ctx.where)
        ctx.store.inexact(a, f"two activations contracted over channels in {ctx.where}", zero_safe=True)
    elif isinstance(a, Tracked) and isinstance(b, ParamDim):
        ctx.store.use(a, b.tensor, b.axis, "consumer", offset=b.start)
    elif isinstance(b, Tracked) and isinstance(a, ParamDim):
        ctx.store.use(b, a.tensor, a.axis, "consumer", offset=a.start)
    elif isinstance(a, Tracked) or isinstance(b, Tracked):
        ctx.store.unify(a, b, ctx.where)  # freezes: summed against a fixed-size tensor
    elif isinstance(a, ParamDim) and isinstance(b, ParamDim) and a.size and a.size == b.size:
        # NOTE: two parameters multiplied (emb.weight @ vec): one axis, read by the right operand
        ctx.store.use(ctx.store.param_source(a), b.tensor, b.axis, "consumer", offset=b.start)
    elif (isinstance(a, ParamDim) and b is None) or (isinstance(b, ParamDim) and a is None):
        # NOTE: a parameter's axis summed against plain data (WavTokenizer's codebook against features
        # whose width is no channel): that axis keeps every position, wherever else it is read
        param = a if isinstance(a, ParamDim) else b
        ctx.store.fixed_read(param.tensor, param.axis, f"summed against a fixed-size tensor in {ctx.where}")


def _written(ctx, d: Dim, size: int) -> Dim:  # type: ignore[no-untyped-def]
    """An output dim taken from an input dim: a parameter's axis becomes new channels it produces."""
    if isinstance(d, ParamDim):
        new = ctx.store.new_source(size, d.tensor)
        ctx.store.use(new, d.tensor, d.axis, "producer", offset=d.start)
        return new
    return d


def _broadcast(ctx, shapes: list[tuple[int, ...]], dims: list[list[Dim]], out: tuple[int, ...]) -> list[Dim]:  # type: ignore[no-untyped-def]
    """Right-aligned broadcast of several dim lists onto ``out`` (size-1 dims carry nothing)."""
    merged: list[Dim] = [None] * len(out)
    seen = [False] * len(out)
    for sizes, ds in zip(shapes, dims):
        for k in range(1, len(sizes) + 1):
            if sizes[-k] == 1 and out[-k] != 1:
                continue
            merged[-k] = ctx.store.unify(merged[-k], ds[-k], ctx.where) if seen[-k] else ds[-k]
            seen[-k] = True
    return merged


def _matmul_dims(ctx, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> list[Dim]:  # type: ignore[no-untyped-def]
    ad, bd = ctx.dims(a), ctx.dims(b)
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    if a.dim() == 1:
        ad, a_shape = [None] + ad, (1,) + a_shape
    if b.dim() == 1:
        bd, b_shape = bd + [None], b_shape + (1,)
    _contract(ctx, ad[-1], bd[-2])
    batch_out = tuple(torch.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    batch = _broadcast(ctx, [a_shape[:-2], b_shape[:-2]], [ad[:-2], bd[:-2]], batch_out)
    rows = [_written(ctx, ad[-2], a_shape[-2])] if a.dim() > 1 else []
    cols = [_written(ctx, bd[-1], b_shape[-1])] if b.dim() > 1 else []
    return batch + rows + cols


@register_rule(torch.linalg.solve_triangular)
def solve_triangular(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``solve_triangular(A, B)``: one solve per batch index (Gated DeltaNet's chunks, per head): the
    batch dims broadcast as a matmul's do; channels of the matrices themselves would change the
    system, so they are frozen."""
    a, b = args[0], arg(args, kwargs, 1, "B", None)
    why = f"channels of a triangular system solved by {ctx.where}"
    ad, bd = shape.matrices(ctx, a, why), shape.matrices(ctx, b, why)
    batch_out = tuple(out.shape[:-2])
    ctx.set(out, _broadcast(ctx, [tuple(a.shape[:-2]), tuple(b.shape[:-2])], [ad[:-2], bd[:-2]], batch_out)
            + [None, None])


@register_rule(*resolve("matmul", "bmm", "mm", "__matmul__"))
def matmul(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Batched matmul: batch dims broadcast like elementwise ops, ``a[-1]`` meets ``b[-2]``."""
    register_libraries()
    ctx.set(out, _matmul_dims(ctx, args[0], arg(args, kwargs, 1, "mat2", kwargs.get("other")), out))


@register_rule(*resolve("__rmatmul__"))
def rmatmul(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    ctx.set(out, _matmul_dims(ctx, args[1], args[0], out))


@register_rule(*resolve("baddbmm", "addmm"))
def add_matmul(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``input + a @ b``: the product's dims, broadcast with ``input``'s."""
    x = args[0]
    a, b = (args[1], args[2]) if len(args) > 2 else (kwargs["batch1" if "batch1" in kwargs else "mat1"],
                                                      kwargs["batch2" if "batch2" in kwargs else "mat2"])
    product = _matmul_dims(ctx, a, b, out)
    ctx.set(out, _broadcast(ctx, [tuple(out.shape), tuple(x.shape)], [product, ctx.dims(x)], tuple(out.shape)))


def _heads(ctx, q: Dim, kv: Dim, n_rep: int) -> Dim:  # type: ignore[no-untyped-def]
    """Unify a query heads dim with a key/value heads dim whose heads each serve ``n_rep`` queries."""
    if n_rep > 1 and isinstance(kv, Tracked):
        kv = kv.scaled(n_rep)  # NOTE: repeat_interleave order: kv head j serves queries j*n_rep ...
    return ctx.store.unify(q, kv, ctx.where)


@register_rule(*resolve("scaled_dot_product_attention"))
def scaled_dot_product_attention(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """q (..., Hq, L, E), k (..., Hk, S, E), v (..., Hv, S, Ev) -> (..., Hq, L, Ev).

    Key and value heads each serve ``Hq / H`` query heads (``enable_gqa``); they may differ in
    number (a model whose config gives the keys fewer heads than the values)."""
    register_libraries()
    q, k, v = (arg(args, kwargs, i, n, None) for i, n in enumerate(("query", "key", "value")))
    mask = arg(args, kwargs, 3, "attn_mask", None)
    qd, kd, vd = ctx.dims(q), ctx.dims(k), ctx.dims(v)
    if isinstance(qd[-1], Tracked) and kwargs.get("scale") is None:
        # NOTE: the default scale is 1 / sqrt(E), read from the query's size: cut inside the heads, it
        # changes, so the cut changes the function (as a norm's statistics do), zeroed channels or not
        ctx.store.inexact(qd[-1], f"the head size sets the default scale of {ctx.where}")
    _contract(ctx, qd[-1], kd[-1])
    ctx.store.unify(kd[-2], vd[-2], ctx.where)
    batch: list[Dim] = list(qd[:-2])
    for i in range(1, min(q.dim(), k.dim()) - 1):  # batch dims from the right (heads first)
        j = -i - 2
        for size, heads in ((k.shape[j], kd[j]), (v.shape[j], vd[j])):
            if size == q.shape[j]:
                batch[-i] = ctx.store.unify(batch[-i], heads, ctx.where)
            elif size == 1:
                continue  # NOTE: one key/value head broadcast to every query head (multi-query attention)
            elif size > 0 and q.shape[j] % size == 0:
                batch[-i] = _heads(ctx, batch[-i], heads, q.shape[j] // size)  # GQA (enable_gqa=True)
    scores = batch + [qd[-2], kd[-2]]
    if isinstance(mask, torch.Tensor) and mask.dim() <= len(scores):
        score_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
        _broadcast(ctx, [score_shape, tuple(mask.shape)], [scores, ctx.dims(mask)], score_shape)
    ctx.set(out, batch + [qd[-2], vd[-1]])


@register_rule(torch.Tensor.__getitem__)
def getitem(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``table[index]`` with one integer tensor: rows are gathered, the other dims keep their channels.

    Swin's relative position bias ``table[index]`` (table: positions x heads) keeps its heads dim, so
    head pruning slices the table's columns. Everything else is ``shape.getitem``.
    NOTE: belongs in shape.getitem; kept here so the attention work touches one file.
    """
    x, index = args[0], args[1]
    if isinstance(index, torch.Tensor) and index.dtype in (torch.long, torch.int) and x.dim() >= 1:
        dims = ctx.dims(x)
        if isinstance(dims[0], Tracked):
            ctx.store.freeze(dims[0], f"channels gathered by an index tensor in {ctx.where}")
        return ctx.set(out, [None] * index.dim() + dims[1:])
    return shape.getitem(ctx, args, kwargs, out)


# -- nn.MultiheadAttention ----------------------------------------------------------------------

_MHA_ARGS = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
             "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
             "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
             "k_proj_weight", "v_proj_weight", "static_k", "static_v", "average_attn_weights", "is_causal")


def _param(ctx, t: Any) -> str | None:  # type: ignore[no-untyped-def]
    d = ctx.dims(t)[0] if isinstance(t, torch.Tensor) and t.dim() else None
    return d.tensor if isinstance(d, ParamDim) else None


def _per_head_mask(ctx, mask: Any, query: torch.Tensor, source: Tracked, heads: int) -> None:  # type: ignore[no-untyped-def]
    """A 3-d ``attn_mask`` of (N * heads, L, S) holds one mask per head: with one sequence in the
    batch its first dim is the heads (a position bias made from a table's columns, WavLM); else,
    or where its values are fixed, the heads stay whole."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 3 or mask.shape[0] == 1:
        return
    batch = query.shape[1] if query.dim() == 3 else 1
    d = ctx.dims(mask)[0]
    if batch == 1 and isinstance(d, Tracked):
        ctx.store.unify(d, Tracked((Segment(source.segments[0].source, 0, heads, 1),)), ctx.where)
    else:
        ctx.store.freeze(source, f"a mask per head of a fixed size, or merged with the batch, in {ctx.where}")
        if isinstance(d, Tracked):
            ctx.store.freeze(d, f"a mask per head merged with the batch in {ctx.where}")


def _query_width_kept(ctx, query: Dim) -> None:  # type: ignore[no-untyped-def]
    """``F.multi_head_attention_forward`` called by a user's code (OpenAI CLIP's attention pool, a
    hand-written layer) needs projections of exactly ``embed_dim`` rows (``unflatten(-1, (3, E))``,
    square q weights), and its heads stay whole there (see below): the query's width cannot change
    either, so it is frozen up front instead of failing verification."""
    if isinstance(query, Tracked):
        ctx.store.freeze(query, f"the query's width of F.multi_head_attention_forward called outside "
                                f"nn.MultiheadAttention in {ctx.where}: its projections must stay that many rows")


@register_rule(F.multi_head_attention_forward)
def multi_head_attention(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """The functional behind ``nn.MultiheadAttention``: embed dims in, heads inside, out_proj rows out.

    Inputs are (L, N, E) or (L, E) (the module transposes ``batch_first`` before calling). The
    heads are a new source of ``num_heads`` units of ``head_dim`` rows in each q, k, v block.
    """
    register_libraries()
    a = dict(zip(_MHA_ARGS, args)) | kwargs
    query, key, value, heads = a["query"], a["key"], a["value"], a["num_heads"]
    separate = a.get("use_separate_proj_weight", False)
    weights = [a.get("q_proj_weight"), a.get("k_proj_weight"), a.get("v_proj_weight")] if separate \
        else [a["in_proj_weight"]] * 3
    names = [_param(ctx, w) for w in weights]
    inner = weights[0].shape[0] // (1 if separate else 3)
    head_dim = inner // heads
    # the embedding dims of q, k, v are read by projection columns
    seen: dict[int, Dim] = {}
    for x, w, name in zip((query, key, value), weights, names):
        d = read_as_data(ctx, ctx.dims(x)[-1], w.shape[-1])  # NOTE: DETR's learned queries
        if id(w) in seen:  # one shared in_proj: q, k and v columns are the same channels
            ctx.store.unify(seen[id(w)], d, ctx.where)
        elif isinstance(d, Tracked):
            if name is None:
                ctx.store.freeze(d, f"projection weight is not a parameter in {ctx.where}")
            else:
                ctx.store.use(d, name, 1, "consumer")
        seen.setdefault(id(w), d)
    if not isinstance(ctx.module, nn.MultiheadAttention):
        _query_width_kept(ctx, seen.get(id(weights[0])))
    # the heads: head_dim rows of each q, k, v block, head_dim columns of out_proj
    source = ctx.store.new_source(heads, f"{names[0] or ctx.where}:heads")
    layout = Tracked((Segment(source.segments[0].source, 0, heads, head_dim),))
    for block, name in enumerate(names):
        if name is not None:
            ctx.store.use(layout, name, 0, "producer", offset=0 if separate else block * inner)
    bias = _param(ctx, a.get("in_proj_bias"))
    if bias is not None:
        for block in range(3):
            ctx.store.use(layout, bias, 0, "producer", offset=block * inner)
    elif isinstance(a.get("in_proj_bias"), torch.Tensor) and isinstance(ctx.dims(a["in_proj_bias"])[0], Tracked):
        # NOTE: the q, k, v biases concatenated in the forward (WavLM): each block holds the heads
        ctx.store.unify(ctx.dims(a["in_proj_bias"])[0], Tracked(layout.segments * 3), ctx.where)
    _per_head_mask(ctx, a.get("attn_mask"), query, source, heads)
    out_weight = _param(ctx, a["out_proj_weight"])
    if out_weight is not None:
        ctx.store.use(layout, out_weight, 1, "consumer")
    if None in names or out_weight is None or a.get("bias_k") is not None or a.get("add_zero_attn") \
            or a.get("static_k") is not None or a.get("static_v") is not None:
        ctx.store.freeze(source, f"MultiheadAttention with add_bias_kv, add_zero_attn, static k/v or "
                                 f"non-parameter weights in {ctx.where}")
    if not isinstance(ctx.module, nn.MultiheadAttention):
        # NOTE: the functional checks that the projections are embed_dim rows; nn.MultiheadAttention
        # is replaced by PrunedMultiheadAttention when its heads are cut, any other caller is not
        ctx.store.freeze(source, f"heads of F.multi_head_attention_forward called outside nn.MultiheadAttention "
                                 f"in {ctx.where}: it needs as many projection rows as the embedding width")
    if a.get("need_weights", True):
        ctx.store.inexact(source, f"attention weights averaged over heads in {ctx.where}")
    attn, weights_out = out
    embed = ctx.store.new_source(attn.shape[-1], out_weight or ctx.where)
    if out_weight is not None:
        ctx.store.use(embed, out_weight, 0, "producer")
    out_bias = _param(ctx, a.get("out_proj_bias"))
    if out_bias is not None:
        ctx.store.use(embed, out_bias, 0, "producer")
    ctx.set(attn, ctx.dims(query)[:-1] + [embed])
    if isinstance(weights_out, torch.Tensor):  # (N, [H,] L, S): per-head weights carry the heads
        dims: list[Dim] = [None] * weights_out.dim()
        if not a.get("average_attn_weights", True):
            dims[-3] = layout
        ctx.set(weights_out, dims)


