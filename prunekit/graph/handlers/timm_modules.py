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

__all__ = ["TIMM", "KEEP_HEADS"]


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


_Refresh = Callable[[nn.Module], "nn.Module | None"]
# module name -> (class name, refresh, config widths) registered once that module is imported
TIMM: dict[str, list[tuple[str, _Refresh | None, Callable[..., dict[str, int]] | None]]] = {
    # ViT, DeiT, DeiT-III, the ViT variants (vit_*, vit_*_reg, ...), EVA's fused-attention ViTs
    "timm.layers.attention": [("Attention", _refresh_attention, None), ("AttentionRope", _refresh_attention, None)],
    "timm.models.visformer": [("Attention", _refresh_attention, None)],
}
# Refreshes that keep the head count their forward reads as a constant.
KEEP_HEADS: tuple[_Refresh, ...] = (_refresh_attention,)
