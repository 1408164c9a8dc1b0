"""EfficientViT-MSRA's cascaded group attention (timm ``CascadedGroupAttention``): what the trace
records for it, and :class:`PrunedCascadedGroupAttention`, which holds it once pruned.

Head ``i`` reads chunk ``i`` of the input plus head ``i-1``'s output, through its own ``qkvs[i]``
(a 1x1 ConvNorm to q|k|v) and a depthwise ``dws[i]`` on q; the heads' outputs are concatenated into
``proj``. One conv per head cannot be expressed by slicing a tensor axis, so a module rule records
the call as a whole (the per-op rules would freeze it) and groups what can be cut exactly:

- per head, the query/key width: rows ``j`` of q and k of ``qkvs[i]`` (and their norm), channel
  ``j`` of ``dws[i]``; the attention sums ``q_j k_j`` over them, zero once they are cut;
- the last head's value width: rows of v of ``qkvs[-1]`` and the columns of ``proj`` reading them
  (no later head adds it to its input).

Whole heads and the other heads' values stay: a group is one run of channels cut in every member,
and ``qkvs[i]`` holds head ``i`` only, so no tensor axis spans the heads; a value channel of head
``i`` is added to input chunk ``i+1`` at its position, which the refresh cannot know once cut.
The input (the residual stream) is read in ``num_heads`` equal chunks: its channels are frozen.
prunekit never imports timm: the rule and refresh are registered by class name (``timm_modules``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.graph.constraints import FIXED, Segment, Tracked
from prunekit.graph.registry import register_module_rule, register_refresh

__all__ = ["PrunedCascadedGroupAttention", "trace_cascaded_attention", "refresh_cascaded_attention"]

_NORM = ("weight", "bias", "running_mean", "running_var")


class PrunedCascadedGroupAttention(nn.Module):
    """Cascaded group attention whose heads have their own query/key and value widths.

    ``key_dims[i]`` and ``val_dims[i]`` are head ``i``'s widths (``qkvs[i]`` writes
    ``2 * key_dims[i] + val_dims[i]`` rows); ``scale`` stays the original ``key_dim ** -0.5``.
    Same submodules, parameters and buffers under the same names as timm's class (same state_dict);
    built by :meth:`from_module` from a sliced (or, when a saved model is loaded, an original) one.
    """

    def __init__(self, qkvs: nn.ModuleList, dws: nn.ModuleList, proj: nn.Module, *, key_dims: list[int],
                 val_dims: list[int], scale: float, resolution: int) -> None:
        super().__init__()
        self.qkvs, self.dws, self.proj = qkvs, dws, proj
        self.num_heads = len(qkvs)
        self.key_dims, self.val_dims = list(key_dims), list(val_dims)
        self.scale, self.resolution = scale, resolution

    @classmethod
    def from_module(cls, attention: Any) -> PrunedCascadedGroupAttention:
        """This class holding ``attention``'s submodules and tensors (shared, not copied); the widths
        are read from the per-head convs."""
        key_dims = [int(dw.conv.weight.shape[0]) for dw in attention.dws]
        val_dims = [int(qkv.conv.weight.shape[0]) - 2 * k for qkv, k in zip(attention.qkvs, key_dims)]
        new = cls(attention.qkvs, attention.dws, attention.proj, key_dims=key_dims, val_dims=val_dims,
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
        feats_in = x.chunk(len(self.qkvs), dim=1)
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


def trace_cascaded_attention(ctx: Any, module: Any, args: tuple[Any, ...]) -> dict[int, list[Any]]:
    """Module rule: freeze the input's channels, open one query/key group per head and one value
    group for the last head; ``proj`` is traced on from the concatenated values' layout."""
    where = f"'{ctx.scope[-1]}'" if ctx.scope[-1] else "the root module"
    heads = len(module.qkvs)
    x = args[0] if args else None
    if isinstance(x, torch.Tensor):
        for layout in ctx.tracked(x):
            ctx.store.freeze(layout, f"cascaded group attention in {where} reads its input in {heads} "
                                     f"fixed chunks (head i adds head i-1's output to chunk i)")
    pruned = isinstance(module, PrunedCascadedGroupAttention)
    keys = list(module.key_dims) if pruned else [int(module.key_dim)] * heads
    vals = list(module.val_dims) if pruned else [int(module.val_dim)] * heads
    for i, (qkv, dw) in enumerate(zip(module.qkvs, module.dws)):
        qk = ctx.store.new_source(keys[i], f"{ctx.scope[-1]}.qkvs.{i}:q|k")
        _rows(ctx, qk, qkv, 0, "producer")
        _rows(ctx, qk, qkv, keys[i], "producer")
        _rows(ctx, qk, dw, 0, "producer")
        ctx.store.inexact(qk, f"queries and keys contracted in {where}", zero_safe=True)
    last = ctx.store.new_source(vals[-1], f"{ctx.scope[-1]}.qkvs.{heads - 1}:v")
    _rows(ctx, last, module.qkvs[heads - 1], 2 * keys[-1], "producer")
    values = Tracked((Segment(FIXED, 0, sum(vals[:-1])), *last.segments)) if heads > 1 else last
    return {id(module.proj): [None, values, None, None]}


def refresh_cascaded_attention(module: nn.Module) -> nn.Module | None:
    """A :class:`PrunedCascadedGroupAttention` in the module's place once a width was cut."""
    if isinstance(module, PrunedCascadedGroupAttention):
        module.key_dims = [int(dw.conv.weight.shape[0]) for dw in module.dws]  # type: ignore[union-attr]
        module.val_dims = [int(qkv.conv.weight.shape[0]) - 2 * k  # type: ignore[union-attr]
                           for qkv, k in zip(module.qkvs, module.key_dims)]  # type: ignore[arg-type]
        return None
    return PrunedCascadedGroupAttention.from_module(module)


# A pruned one is traced and refreshed the same way (pruned again, or loaded and pruned again).
register_module_rule(PrunedCascadedGroupAttention)(trace_cascaded_attention)
register_refresh(PrunedCascadedGroupAttention)(refresh_cascaded_attention)
