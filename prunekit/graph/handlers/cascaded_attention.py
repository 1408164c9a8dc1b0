"""EfficientViT-MSRA's cascaded group attention (timm ``CascadedGroupAttention``): what the trace
records for it, and :class:`PrunedCascadedGroupAttention`, which holds it once pruned.

Head ``i`` reads chunk ``i`` of the input plus head ``i-1``'s output, through its own ``qkvs[i]``
(a 1x1 ConvNorm to q|k|v) and a depthwise ``dws[i]`` on q; the heads' outputs are concatenated into
``proj``. The per-op rules froze it (q|k|v split at constant sizes, depthwise conv on q), so a module
rule records the call as a whole, with the groups that are cut exactly:

- input chunk ``i`` (part of the residual stream): ``qkvs[i]``'s input columns, and for ``i > 0``
  head ``i-1``'s value rows and the columns of ``proj`` reading them, since those values are added
  to the chunk position by position (a cut channel is zero in both, so the sum stays right);
- per head, the query/key width: rows ``j`` of q and k of ``qkvs[i]`` (and their norm), channel
  ``j`` of ``dws[i]``; the attention sums ``q_j k_j`` over them, zero once they are cut;
- the last head's value width: its value rows and the columns of ``proj`` reading them.

Whole heads stay: a group is one run of channels cut in every member, ``qkvs[i]`` and ``dws[i]``
hold head ``i`` only, and the tensors that do span the heads (``proj``'s columns) already belong to
the groups above. The pruned module splits its input at the kept chunk widths (``chunks``).
prunekit never imports timm: the rule and refresh are registered by class name (``timm_modules``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.graph.constraints import Tracked
from prunekit.graph.handlers.common import slice_layout
from prunekit.graph.registry import register_module_rule, register_refresh

__all__ = ["PrunedCascadedGroupAttention", "trace_cascaded_attention", "refresh_cascaded_attention"]

_NORM = ("weight", "bias", "running_mean", "running_var")


class PrunedCascadedGroupAttention(nn.Module):
    """Cascaded group attention whose heads have their own input, query/key and value widths.

    Head ``i`` reads ``chunks[i]`` input channels (plus head ``i-1``'s ``val_dims[i-1] ==
    chunks[i]`` values); ``qkvs[i]`` writes ``2 * key_dims[i] + val_dims[i]`` rows; ``scale`` stays
    the original ``key_dim ** -0.5``. Same submodules, parameters and buffers under the same names as
    timm's class (same state_dict); built by :meth:`from_module` from a sliced (or, when a saved
    model is loaded, an original) one.
    """

    def __init__(self, qkvs: nn.ModuleList, dws: nn.ModuleList, proj: nn.Module, *, chunks: list[int],
                 key_dims: list[int], val_dims: list[int], scale: float, resolution: int) -> None:
        super().__init__()
        self.qkvs, self.dws, self.proj = qkvs, dws, proj
        self.num_heads = len(qkvs)
        self.chunks, self.key_dims, self.val_dims = list(chunks), list(key_dims), list(val_dims)
        self.scale, self.resolution = scale, resolution

    @classmethod
    def from_module(cls, attention: Any) -> PrunedCascadedGroupAttention:
        """This class holding ``attention``'s submodules and tensors (shared, not copied); the widths
        are read from the per-head convs."""
        chunks, keys, vals = _widths(attention)
        new = cls(attention.qkvs, attention.dws, attention.proj, chunks=chunks, key_dims=keys, val_dims=vals,
                  scale=float(attention.scale), resolution=int(attention.resolution))
        for name, param in attention._parameters.items():
            new.register_parameter(name, param)
        for name, buffer in attention._buffers.items():
            new.register_buffer(name, buffer, persistent=name not in attention._non_persistent_buffers_set)
        return new.train(attention.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """timm's forward with per-head widths (the attention-bias cache is not kept)."""
        b, _, h, w = x.shape
        own: Any = self  # NOTE: attention_biases / attention_bias_idxs are adopted from timm's module
        biases = own.attention_biases[:, own.attention_bias_idxs]
        feats_in = x.split(self.chunks, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + feats_in[i]
            key, val = self.key_dims[i], self.val_dims[i]
            q, k, v = qkv(feat).view(b, -1, h, w).split([key, key, val], dim=1)
            q = dw(q).flatten(2) * self.scale
            attn = (q.transpose(-2, -1) @ k.flatten(2) + biases[i]).softmax(dim=-1)
            feat = (v.flatten(2) @ attn.transpose(-2, -1)).view(b, val, h, w)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))


def _name(ctx: Any, tensor: torch.Tensor | None) -> str | None:
    return None if tensor is None else ctx.params.get(id(tensor))


def _rows(ctx: Any, layout: Tracked, conv_norm: Any, offset: int, role: str) -> None:
    """``layout``'s channels are rows ``offset ..`` of a ConvNorm's conv (``role``) and of its norm."""
    conv = _name(ctx, conv_norm.conv.weight)
    if conv is not None:
        ctx.store.use(layout, conv, 0, role, offset=offset)
    for attr in _NORM:
        norm = _name(ctx, getattr(conv_norm.bn, attr, None))
        if norm is not None:
            ctx.store.use(layout, norm, 0, "passive", offset=offset)


def _widths(module: Any) -> tuple[list[int], list[int], list[int]]:
    """Per head: input chunk, query/key and value widths, read from the convs (timm's or pruned)."""
    chunks = [int(qkv.conv.weight.shape[1]) for qkv in module.qkvs]
    keys = [int(dw.conv.weight.shape[0]) for dw in module.dws]
    vals = [int(qkv.conv.weight.shape[0]) - 2 * k for qkv, k in zip(module.qkvs, keys)]
    return chunks, keys, vals


def trace_cascaded_attention(ctx: Any, module: Any, args: tuple[Any, ...]) -> dict[int, list[Any]]:
    """Module rule: chunk ``i`` of the input is read by ``qkvs[i]`` and is the same channels as head
    ``i-1``'s values (added to it); one query/key group per head, one value group for the last head;
    ``proj`` is traced on from the concatenated values' layout."""
    where = f"'{ctx.scope[-1]}'" if ctx.scope[-1] else "the root module"
    prefix = f"{ctx.scope[-1]}." if ctx.scope[-1] else ""
    chunks, keys, vals = _widths(module)
    x = args[0] if args else None
    dims = ctx.dims(x) if isinstance(x, torch.Tensor) and x.dim() == 4 else []
    for d in dims[:1] + dims[2:]:
        if isinstance(d, Tracked):
            ctx.store.freeze(d, f"cascaded group attention in {where} reads channels on dim 1 only")
    layout = dims[1] if len(dims) == 4 else None
    pieces: list[Tracked | None] = [None] * len(chunks)
    if isinstance(layout, Tracked) and layout.size == sum(chunks):
        pieces = [slice_layout(layout, sum(chunks[:i]), n) for i, n in enumerate(chunks)]
    for i, (qkv, dw) in enumerate(zip(module.qkvs, module.dws)):
        piece = pieces[i]
        if piece is None or (i > 0 and vals[i - 1] != chunks[i]):
            piece = ctx.store.new_source(chunks[i], f"{prefix}qkvs.{i}:input")
            ctx.store.freeze(piece, f"cascaded group attention in {where} reads input chunk {i} at fixed positions")
        pieces[i] = piece
        name = _name(ctx, qkv.conv.weight)
        if name is not None:
            ctx.store.use(piece, name, 1, "consumer")
        if i > 0:  # head i-1's values are added to chunk i, position by position
            _rows(ctx, piece, module.qkvs[i - 1], 2 * keys[i - 1], "producer")
        qk = ctx.store.new_source(keys[i], f"{prefix}qkvs.{i}:q|k")
        _rows(ctx, qk, qkv, 0, "producer")
        _rows(ctx, qk, qkv, keys[i], "producer")
        _rows(ctx, qk, dw, 0, "producer")
        ctx.store.inexact(qk, f"queries and keys contracted in {where}", zero_safe=True)
    last = ctx.store.new_source(vals[-1], f"{prefix}qkvs.{len(chunks) - 1}:v")
    _rows(ctx, last, module.qkvs[-1], 2 * keys[-1], "producer")
    values = Tracked(tuple(s for piece in [*pieces[1:], last] for s in piece.segments))  # type: ignore[union-attr]
    return {id(module.proj): [None, values, None, None]}


def refresh_cascaded_attention(module: nn.Module) -> nn.Module | None:
    """A :class:`PrunedCascadedGroupAttention` in the module's place once a width was cut (its
    widths read back when it already is one)."""
    if isinstance(module, PrunedCascadedGroupAttention):
        module.chunks, module.key_dims, module.val_dims = _widths(module)
        return None
    return PrunedCascadedGroupAttention.from_module(module)


# A pruned one is traced and refreshed the same way (pruned again, or loaded and pruned again).
register_module_rule(PrunedCascadedGroupAttention)(trace_cascaded_attention)
register_refresh(PrunedCascadedGroupAttention)(refresh_cascaded_attention)
