"""Modules whose attributes or forward must follow pruned attention widths, and their refreshes.

``nn.MultiheadAttention`` and torchvision's Swin attention compute ``head_dim`` from the embedding
width, so they cannot hold fewer heads than ``embed_dim / head_dim`` (nor a pruned embedding with
all heads). When pruning makes the inner width ``num_heads * head_dim`` differ from the embedding
width, the refresh returns a :class:`PrunedMultiheadAttention` (or
:class:`~prunekit.graph.handlers.pruned_swin.PrunedShiftedWindowAttention`) holding the same
parameters (same state_dict), whose forward keeps the widths apart; ``apply`` puts it in the
module's place. Classes of torchvision, Hugging Face transformers (``hf_modules``) and timm
(``timm_modules``) are registered when their modules are already imported: prunekit never imports those libraries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from prunekit.errors import DataError
from prunekit.graph.handlers import hf_modules, timm_modules
from prunekit.graph.handlers.conv import GROUPS_FOLLOW, register_deform_conv
from prunekit.graph.handlers.reduce import register_torchvision_pooling
from prunekit.graph.handlers.pruned_swin import PrunedShiftedWindowAttention
from prunekit.graph.handlers.shape import (BLOCK_SIZE_FOLLOWS, HEAD_COUNT_FOLLOWS, QUERY_GROUPS_FOLLOW,
                                           SIZE_TIES_KEPT, SPLIT_SECTIONS_FOLLOW, SPLIT_SIZE_FOLLOWS)
from prunekit.graph.registry import refresh_for, register_module_rule, register_refresh

__all__ = ["PrunedMultiheadAttention", "PrunedShiftedWindowAttention", "register_libraries", "packs_nested_batches"]


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose inner width ``num_heads * head_dim`` may differ from ``embed_dim``.

    The arguments are ``nn.MultiheadAttention``'s, plus ``head_dim`` (default ``embed_dim //
    num_heads``) and ``out_dim`` (the output projection's width, default ``embed_dim``). Same
    parameter names and state_dict keys; the refresh makes one with :meth:`from_module` after heads
    or the embedding dim are pruned. Supports the options the graph prunes through (masks,
    ``batch_first``, unbatched inputs, ``need_weights``); ``add_bias_kv`` / ``add_zero_attn``
    modules are never pruned by head.

    ``_qkv_same_embed_dim`` is always False: it is the flag ``nn.TransformerEncoderLayer``'s fused
    path (eval without grad) reads, which would read the weights directly at ``embed_dim`` rows and
    skip this forward. Whether the projections are packed is ``in_proj_weight is not None``. The
    nested batch ``nn.TransformerEncoder`` gives its layers then (with a padding mask) is taken, as
    torch's own fast path takes it.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Any = None, dtype: Any = None, *,
                 head_dim: int | None = None, out_dim: int | None = None) -> None:
        nn.Module.__init__(self)  # NOTE: MultiheadAttention's own __init__ insists on heads * head_dim == embed_dim.
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        # NOTE: False keeps torch's fused paths away (see the class docstring); an encoder built from a
        # layer holding this module turns off its nested-tensor path, as torch's __init__ checks it
        self._qkv_same_embed_dim = False
        self.head_dim = head_dim if head_dim is not None else embed_dim // num_heads
        inner = num_heads * self.head_dim
        if self.kdim == embed_dim and self.vdim == embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * inner, embed_dim), **factory))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty((inner, embed_dim), **factory))
            self.k_proj_weight = nn.Parameter(torch.empty((inner, self.kdim), **factory))
            self.v_proj_weight = nn.Parameter(torch.empty((inner, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * inner, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(inner, out_dim or embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, inner), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, inner), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle (``torch.load`` of a whole model), with the fused paths kept away as in ``__init__``."""
        super().__setstate__(state)
        self._qkv_same_embed_dim = False

    def _reset_parameters(self) -> None:
        """Initialise the parameters as ``nn.MultiheadAttention`` does, packed or separate as they are."""
        self._qkv_same_embed_dim = _packed(self)  # NOTE: the flag torch's method reads to choose
        try:
            super()._reset_parameters()
        finally:
            self._qkv_same_embed_dim = False

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention) -> PrunedMultiheadAttention:
        """This class holding ``module``'s parameters and output projection (shared, not copied),
        with its widths read from them (``module.head_dim`` is kept)."""
        same = _packed(module)
        q_weight = module.in_proj_weight if same else module.q_proj_weight
        heads = q_weight.shape[0] // (3 if same else 1) // module.head_dim
        new = cls(q_weight.shape[1], heads, module.dropout, module.in_proj_bias is not None,
                  module.bias_k is not None, module.add_zero_attn,
                  kdim=None if same else module.k_proj_weight.shape[1],
                  vdim=None if same else module.v_proj_weight.shape[1], batch_first=module.batch_first,
                  device="meta", head_dim=module.head_dim, out_dim=module.out_proj.out_features)
        # NOTE: the parameters are the original's: separate projections stay separate even where the
        # cut makes kdim and vdim equal to embed_dim (the forward reads which ones are set)
        for name, param in module._parameters.items():
            new.register_parameter(name, param)
        new.out_proj = module.out_proj
        return new.train(module.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,  # type: ignore[override]
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if query.is_nested or key.is_nested or value.is_nested:
            return self._forward_nested(query, key, value, key_padding_mask, need_weights, attn_mask,
                                        average_attn_weights, is_causal)
        batched = query.dim() == 3
        if not batched:  # (L, E) -> (1, L, E), batch first
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        batch_first = self.batch_first or not batched
        if not batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        (n, length, _), source = query.shape, key.shape[1]
        inner = self.num_heads * self.head_dim
        if self.in_proj_weight is not None:
            wq, wk, wv = self.in_proj_weight.split(inner)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = self.in_proj_bias.split(inner) if self.in_proj_bias is not None else (None, None, None)

        def heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            return F.linear(x, w, b).view(n, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(query, wq, bq), heads(key, wk, bk), heads(value, wv, bv)
        mask = _additive_mask(attn_mask, key_padding_mask, n, self.num_heads, length, source, q.dtype)
        causal = is_causal and mask is None
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
            if causal:
                mask = torch.full((length, source), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            o = F.dropout(weights, dropout) @ v
            if average_attn_weights:
                weights = weights.mean(1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        o = self.out_proj(o.transpose(1, 2).reshape(n, length, inner))
        if not batch_first:
            o = o.transpose(0, 1)
        return (o if batched else o.squeeze(0)), weights

    def _forward_nested(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        key_padding_mask: torch.Tensor | None, need_weights: bool, attn_mask: torch.Tensor | None,
                        average_attn_weights: bool, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention over a nested batch (N, L_i, E), as ``nn.TransformerEncoder`` feeds its layers
        in inference with a padding mask: run padded, the padding as ``key_padding_mask``; nested out.

        NOTE: the padded positions are dropped again, so the encoder pads its output with zeros there,
        as it does with torch's attention: the pruned model gives what the original gives.
        """
        if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None:
            raise DataError("PrunedMultiheadAttention takes a nested tensor only as self-attention without masks "
                            "(as nn.TransformerEncoder passes it); pass padded tensors and a key_padding_mask.")
        lengths = [t.shape[0] for t in query.unbind()]
        padded = query.to_padded_tensor(0.0)
        positions = torch.arange(padded.shape[1], device=padded.device)
        padding = positions >= torch.tensor(lengths, device=padded.device).unsqueeze(1)
        x = padded if self.batch_first else padded.transpose(0, 1)  # NOTE: a nested batch is batch first
        out, weights = self.forward(x, x, x, key_padding_mask=padding, need_weights=need_weights,  # NOTE: hooks ran
                                    average_attn_weights=average_attn_weights, is_causal=is_causal)
        out = out if self.batch_first else out.transpose(0, 1)
        return torch.nested.as_nested_tensor([o[:n] for o, n in zip(out, lengths)], layout=torch.strided), weights


def _packed(module: nn.MultiheadAttention) -> bool:
    """Whether ``module`` holds q, k, v as one ``in_proj_weight`` (torch's ``_qkv_same_embed_dim``,
    which :class:`PrunedMultiheadAttention` keeps False)."""
    return module.in_proj_weight is not None


def _additive_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, n: int, heads: int,
                   length: int, source: int, dtype: torch.dtype) -> torch.Tensor | None:
    """One float mask (N or 1, H or 1, L, S) from MHA's masks (bool True = not allowed)."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(m, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)

    mask = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        mask = mask.view(n, heads, length, source) if mask.dim() == 3 else mask.view(1, 1, length, source)
    if key_padding_mask is not None:
        padding = additive(key_padding_mask).view(n, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


@register_refresh(nn.MultiheadAttention)
def refresh_multihead_attention(module: Any) -> nn.Module | None:
    """num_heads, embed_dim, kdim, vdim from the sliced weights; head_dim is kept. Returns a
    :class:`PrunedMultiheadAttention` to use in the module's place once the widths differ."""
    same = _packed(module)
    q_weight = module.in_proj_weight if same else module.q_proj_weight
    inner = q_weight.shape[0] // (3 if same else 1)
    module.num_heads = inner // module.head_dim
    module.embed_dim = q_weight.shape[1]
    module.kdim = module.embed_dim if same else module.k_proj_weight.shape[1]
    module.vdim = module.embed_dim if same else module.v_proj_weight.shape[1]
    differ = inner != module.embed_dim or module.out_proj.weight.shape[0] != module.embed_dim
    if differ and not isinstance(module, PrunedMultiheadAttention):
        return PrunedMultiheadAttention.from_module(module)
    return None


def packs_nested_batches(model: nn.Module) -> bool:
    """Whether ``model`` holds an ``nn.TransformerEncoder`` that packs padded batches into nested
    tensors in inference (its fused path), which forward hooks on its layers' parts cannot read."""
    return any(isinstance(m, nn.TransformerEncoder) and getattr(m, "use_nested_tensor", False)
               for m in model.modules())


@register_refresh(nn.TransformerEncoder)
def refresh_transformer_encoder(module: Any) -> None:
    """A :class:`PrunedMultiheadAttention` in the place of each layer's attention cut to an odd number
    of heads, while the encoder packs padded batches into nested tensors.

    NOTE: ``nn.TransformerEncoder`` decides ``use_nested_tensor`` once, in ``__init__`` (an even head
    count, among others); its forward then feeds every layer a nested tensor (eval, no grad, a padding
    mask), which ``nn.MultiheadAttention`` takes only on its fast path, closed to an odd head count.
    Turning the nested path off instead would change the output at the padded positions (no longer
    zeros), so the pruned model would not give what the original gives.
    """
    if not getattr(module, "use_nested_tensor", False):
        return
    for layer in module.layers:
        attn = getattr(layer, "self_attn", None)
        if type(attn) is nn.MultiheadAttention and attn.num_heads % 2 and attn.bias_k is None \
                and not attn.add_zero_attn:
            layer.self_attn = PrunedMultiheadAttention.from_module(attn)


# -- torchvision and Hugging Face classes (registered when their modules are loaded) -------------

_SEEN: set[str] = set()


def register_libraries() -> None:
    """Register refreshes for the library classes already imported (prunekit never imports them)."""
    register_deform_conv()
    register_torchvision_pooling()
    for module_name, classes in _LIBRARIES.items():
        module = sys.modules.get(module_name)
        if module is None or module_name in _SEEN:
            continue
        _SEEN.add(module_name)
        for class_name, refresh, widths in classes:
            klass = getattr(module, class_name, None)
            if klass is None:
                continue
            if refresh is not None:
                register_refresh(klass)(refresh)
            if refresh is _refresh_swin_attention or refresh in hf_modules.KEEP_HEADS + timm_modules.KEEP_HEADS:
                _HEADS_REFRESHED.append(klass)
            if refresh in timm_modules.TIED + hf_modules.TIED:
                _SIZES_TIED.append(klass)
            if refresh in timm_modules.SECTIONS + hf_modules.SECTIONS:
                _SECTIONS_REFRESHED.append(klass)
            if refresh in timm_modules.GROUPS:
                _GROUPS_REFRESHED.append(klass)
            if refresh in timm_modules.WHOLE:
                register_module_rule(klass)(timm_modules.WHOLE[refresh])
            if refresh in hf_modules.KEEP_SPLIT:
                _SPLIT_REFRESHED[klass] = hf_modules.KEEP_SPLIT[refresh]
            if refresh in hf_modules.BLOCKS:
                _BLOCKS_REFRESHED[klass] = hf_modules.BLOCKS[refresh]
            if widths is not None:
                hf_modules.WIDTHS[klass] = widths


# Module classes whose refresh keeps the head count their forward reads as a constant.
_HEADS_REFRESHED: list[type] = [PrunedShiftedWindowAttention]
# Of those, the classes that also read widths from the input shape: their size ties are kept.
_SIZES_TIED: list[type] = []


def _running_module_reads_sizes(ctx: Any) -> bool:
    """Whether the innermost module running may read its widths from the input shape (timm's ``C``;
    any transformers attention recognised by structure, FSMT's ``embed_dim = x.size(-1)``)."""
    return isinstance(ctx.module, tuple(_SIZES_TIED)) or (ctx.module is not None
                                                          and hf_modules.is_attention(ctx.module))


def _running_module_refreshes_heads(ctx: Any) -> bool:
    """Whether the innermost module running in the trace is one whose refresh updates its head count.

    NOTE: torchvision's Swin passes ``self.num_heads`` to a free function as a constant; the tracer's
    module stack (``ctx.module``) tells that its refresh will keep the constant right.
    """
    register_libraries()
    if isinstance(ctx.module, tuple(_HEADS_REFRESHED)):
        return True
    if ctx.module is not None and refresh_for(ctx.module) is None and timm_modules.is_attention(ctx.module):
        klass = type(ctx.module)  # NOTE: any other timm attention class of the usual shape, as if listed
        register_refresh(klass)(timm_modules.TIED[0])
        _HEADS_REFRESHED.append(klass)
        _SIZES_TIED.append(klass)
        return True
    if ctx.module is not None and hf_modules.is_attention(ctx.module):  # any transformers attention
        if refresh_for(ctx.module) is None:
            register_refresh(type(ctx.module))(hf_modules.refresh_attention)
        return True
    return False


# Module classes whose refresh reads back the sizes their forward splits channels at (CoaT's crpe).
_SECTIONS_REFRESHED: list[type] = []


def _running_module_refreshes_sections(ctx: Any) -> bool:
    """Whether the innermost module running splits channels at sizes its refresh reads back."""
    register_libraries()
    return isinstance(ctx.module, tuple(_SECTIONS_REFRESHED))


# Module classes whose refresh sets the groups of their grouped convs (EfficientViT's LiteMLA).
_GROUPS_REFRESHED: list[type] = []


def _running_modules_refresh_groups(ctx: Any) -> bool:
    """Whether a module running now (the conv's parents) sets its grouped convs' groups after a cut."""
    register_libraries()
    return any(isinstance(m, tuple(_GROUPS_REFRESHED)) for m in ctx.modules)


# Module classes whose refresh keeps the size their forward splits a fused projection at, with the
# number of equal parts it splits into (GPT-2's ``c_attn(x).split(self.split_size)``).
_SPLIT_REFRESHED: dict[type, Callable[[nn.Module], int]] = {}


def _kept_by_refresh(table: dict[type, Callable[[nn.Module], int]], ctx: Any, value: int) -> bool:
    """Whether the innermost module running is of a class in ``table`` whose refresh keeps ``value``
    (the number ``table`` gives for it)."""
    register_libraries()
    kept = next((n for klass, n in table.items() if isinstance(ctx.module, klass)), None)
    return kept is not None and kept(ctx.module) == value


def _running_module_refreshes_split(ctx: Any, pieces: int) -> bool:
    """Whether the innermost module running in the trace splits into ``pieces`` equal parts at a
    size its refresh keeps (so the parts are cut alike, as ``chunk``'s are)."""
    return _kept_by_refresh(_SPLIT_REFRESHED, ctx, pieces)


# Module classes whose refresh keeps the block size their forward views a packed width with, with
# that size (Gemma 4's per-layer inputs: ``hidden_size_per_layer_input``).
_BLOCKS_REFRESHED: dict[type, Callable[[nn.Module], int]] = {}


def _running_module_refreshes_blocks(ctx: Any, size: int) -> bool:
    """Whether the innermost module running views a packed width in blocks of ``size`` that its
    refresh keeps (so every block is cut at the same positions)."""
    return _kept_by_refresh(_BLOCKS_REFRESHED, ctx, size)


def _refresh_swin_attention(module: Any) -> nn.Module | None:
    """num_heads from the per-head parameters; a :class:`PrunedShiftedWindowAttention` in the
    module's place once heads and C differ."""
    per_head = getattr(module, "logit_scale", None)
    module.num_heads = per_head.shape[0] if per_head is not None else module.relative_position_bias_table.shape[1]
    inner, c = module.qkv.weight.shape[0] // 3, module.qkv.weight.shape[1]
    if (inner != c or module.proj.weight.shape[0] != c) and not isinstance(module, PrunedShiftedWindowAttention):
        return PrunedShiftedWindowAttention.from_module(module)
    return None


register_refresh(PrunedShiftedWindowAttention)(_refresh_swin_attention)


def _refresh_vision_transformer(module: nn.Module) -> None:
    module.hidden_dim = module.class_token.shape[-1]  # NOTE: used as a constant in _process_input


# NOTE: a refresh may return a replacement module (a real, importable class) or None.
_Refresh = Callable[[nn.Module], "nn.Module | None"]
_LIBRARIES: dict[str, list[tuple[str, _Refresh | None, Callable[..., dict[str, int]] | None]]] = {
    "torchvision.models.vision_transformer": [("VisionTransformer", _refresh_vision_transformer, None)],
    "torchvision.models.swin_transformer": [("ShiftedWindowAttention", _refresh_swin_attention, None)],
    **hf_modules.TRANSFORMERS,
    **timm_modules.TIMM,
}


def _running_module_refreshes_query_groups(ctx: Any) -> bool:
    """Whether the innermost module running keeps ``num_key_value_groups`` up to date (multi-query
    attention whose query heads are cut)."""
    register_libraries()
    return ctx.module is not None and hf_modules.keeps_query_groups(ctx.module)


HEAD_COUNT_FOLLOWS.append(_running_module_refreshes_heads)
QUERY_GROUPS_FOLLOW.append(_running_module_refreshes_query_groups)
SPLIT_SIZE_FOLLOWS.append(_running_module_refreshes_split)
BLOCK_SIZE_FOLLOWS.append(_running_module_refreshes_blocks)
SPLIT_SECTIONS_FOLLOW.append(_running_module_refreshes_sections)
GROUPS_FOLLOW.append(_running_modules_refresh_groups)
SIZE_TIES_KEPT.append(_running_module_reads_sizes)
