"""timm attention classes whose forward reads its stored head count: their refreshes, so heads are cut.

timm's ``Attention`` reshapes its fused projection with ``self.num_heads`` and ``self.head_dim``
and its output with ``self.attn_dim``; the trace splits channels into heads only where a refresh
keeps that head count right after pruning (``shape.HEAD_COUNT_FOLLOWS``). ``head_dim`` (and so the
per-head ``scale``) never changes: whole heads are removed. Classes whose forward reshapes the
attention output to the block's input width (``x.reshape(B, N, C)`` with ``C`` read from the input
shape) are left out on purpose: their heads are tied to the embedding width, so the trace keeps them
whole and names the reason. Registered by ``attention_modules.register_libraries`` once timm is
imported: prunekit never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["TIMM", "KEEP_HEADS", "TIED"]


def _out(layer: Any) -> int:
    """Output channels of a Linear or Conv (rows of its weight)."""
    return int(layer.weight.shape[0])


def _refresh_attention(module: Any) -> None:
    """``num_heads`` (and ``num_kv_heads``, ``attn_dim``, ``kv_dim`` where stored) from the sliced
    projections; ``head_dim`` and ``scale`` are per head and stay."""
    qkv = getattr(module, "qkv", None)
    if qkv is not None:
        heads = _out(qkv) // 3 // module.head_dim
        kv_heads = heads
    else:
        heads = _out(module.q_proj) // module.head_dim
        kv_heads = _out(module.k_proj) // module.head_dim
    module.num_heads = heads
    if hasattr(module, "num_kv_heads"):
        module.num_kv_heads = kv_heads
    if hasattr(module, "attn_dim"):
        module.attn_dim = heads * module.head_dim
    if hasattr(module, "kv_dim"):
        module.kv_dim = kv_heads * module.head_dim


def _head_dim(module: Any) -> int | None:
    """The stored head size, else the one its per-head scale says (``scale = head_dim ** -0.5``)."""
    if type(vars(module).get("head_dim")) is int:
        return int(module.head_dim)
    scale = vars(module).get("scale")
    return round(scale ** -2) if type(scale) is float and scale > 0 else None


def _refresh_tied_attention(module: Any) -> None:
    """Attention whose forward reads its widths from the input (``B, N, C = x.shape``, then
    ``reshape(B, N, 3, self.num_heads, C // self.num_heads)`` and ``reshape(B, N, C)``): the trace
    ties its heads to the input width, so ``C`` stays ``num_heads * head_dim``; only the stored
    head count (and inner widths where stored) must follow."""
    head_dim = _head_dim(module)
    qkv, q = getattr(module, "qkv", None), getattr(module, "q", None)
    rows = _out(qkv) // 3 if qkv is not None else (_out(q) if q is not None else None)
    if head_dim is None or rows is None:
        return
    for name in ("num_heads", "heads"):  # NOTE: Hiera calls it heads
        if type(vars(module).get(name)) is int:
            setattr(module, name, rows // head_dim)
    for name in ("attn_dim", "all_head_dim", "dim", "dim_out"):
        if type(vars(module).get(name)) is int:
            setattr(module, name, rows)


_Refresh = Callable[[nn.Module], "nn.Module | None"]
# module name -> (class name, refresh, config widths) registered once that module is imported
TIMM: dict[str, list[tuple[str, _Refresh | None, Callable[..., dict[str, int]] | None]]] = {
    # ViT, DeiT, DeiT-III, the ViT variants (vit_*, vit_*_reg, ...), EVA's fused-attention ViTs
    "timm.layers.attention": [("Attention", _refresh_attention, None), ("AttentionRope", _refresh_attention, None)],
    "timm.models.visformer": [("Attention", _refresh_attention, None)],
    **{f"timm.models.{module}": [(name, _refresh_tied_attention, None) for name in names] for module, names in {
        "beit": ("Attention",), "eva": ("EvaAttention",), "convit": ("MHSA",), "pvt_v2": ("Attention",),
        "twins": ("LocallyGroupedAttn", "GlobalSubSampleAttn"), "nest": ("Attention",),
        "vision_transformer_sam": ("Attention",), "davit": ("WindowAttention",),
        "swin_transformer": ("WindowAttention",), "gcvit": ("WindowAttentionGlobal",),
        "metaformer": ("Attention",), "nextvit": ("EfficientAttention",), "fastvit": ("Attention",),
        "hiera": ("MaskUnitAttention",),
    }.items()},
}
# Of those, the ones that read widths from the input: the trace keeps their size ties.
TIED: tuple[_Refresh, ...] = (_refresh_tied_attention,)
# Refreshes that keep the head count their forward reads as a constant.
KEEP_HEADS: tuple[_Refresh, ...] = (_refresh_attention, _refresh_tied_attention)
