"""timm attention classes outside the listed ones are cut by head: recognised by their shape
(a stored head count, a ``qkv`` / ``qk`` / ``q`` / ``wq`` projection, a head size or a per-head
parameter), with BEiT's assembled qkv bias and relative position biases sliced per head. Each block
is wrapped without norms, so every group is exact and the pruned model equals the masked dense one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

timm = pytest.importorskip("timm")

DIM, HEADS, TOKENS = 32, 4, 16  # 4 heads of 8; 16 tokens = a 4x4 window


class Wrapped(nn.Module):
    """``in -> x + attn(x) -> out``: the attention's input width is the residual width."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.inp, self.attn, self.out = nn.Linear(6, DIM), attn, nn.Linear(DIM, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.attn(h))


def _beit() -> nn.Module:  # qkv bias = cat(q_bias, k_bias (a zero buffer), v_bias); relative position table
    from timm.models.beit import Attention

    return Attention(DIM, HEADS, qkv_bias=True, window_size=(3, 5))  # 3*5 patches + a class token = 16


def _relpos() -> nn.Module:  # RelPosMlp: one output row per head, viewed with its own num_heads
    from timm.layers import RelPosMlp
    from timm.models.vision_transformer_relpos import RelPosAttention

    return RelPosAttention(DIM, HEADS, qkv_bias=True, rel_pos_cls=partial(RelPosMlp, window_size=(4, 4)))


def _xca() -> nn.Module:  # XCiT: cross-covariance attention, a per-head temperature, no scale
    from timm.models.xcit import XCA

    return XCA(DIM, HEADS, qkv_bias=True)


def _swinv2() -> nn.Module:  # Swin-V2: cat(q_bias, zeros, v_bias), per-head logit scale, CPB MLP per head
    from timm.models.swin_transformer_v2 import WindowAttention

    return WindowAttention(DIM, (4, 4), HEADS, qkv_bias=True)


def _tinyvit() -> nn.Module:  # per-head q|k|v interleaved, biases[:, idxs] gathered, out_dim = val_dim * heads
    from timm.models.tiny_vit import Attention

    return Attention(DIM, key_dim=8, num_heads=HEADS, attn_ratio=1, resolution=(4, 4))


CASES: dict[str, Callable[[], nn.Module]] = {"beit": _beit, "relpos": _relpos, "xcit": _xca, "swinv2": _swinv2,
                                             "tinyvit": _tinyvit}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unlisted_timm_attention_is_cut_by_head_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = Wrapped(CASES[name]()).eval()
    x = torch.randn(2, TOKENS, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if any(m.tensor.startswith("attn.") and m.role == "producer" and m.inner > 1
                                                for m in g.members))
    assert heads.prunable and heads.exact and heads.size == HEADS, (heads.size, heads.reasons)
    scores = {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}  # TinyViT norms its input
    plan = allocate(graph, scores, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    attn = pruned.attn
    assert attn.num_heads == HEADS // 2 and model.attn.num_heads == HEADS
    if hasattr(attn, "rel_pos"):
        assert attn.rel_pos.num_heads == HEADS // 2 and attn.rel_pos.bias_shape[-1] == HEADS // 2


def test_a_timm_attention_whose_scale_is_not_its_head_size_is_not_taken_for_one() -> None:
    """EfficientFormer's qkv holds ``key, key, val`` per head (``val = 4 * key``) and its scale is the
    key size's: rows / heads is not the scale's head size, so the class is not recognised (a refresh
    would compute a wrong head count) and the pruned model still equals the masked one."""
    from timm.models.efficientformer import Attention

    torch.manual_seed(0)
    model = Wrapped(Attention(DIM, key_dim=4, num_heads=HEADS, resolution=4)).eval()
    x = torch.randn(2, TOKENS, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    qkv = next(g for g in graph.groups if "attn.qkv.weight" in {m.tensor for m in g.members if m.axis == 0})
    assert not qkv.prunable and any("head count" in r for r in qkv.reasons)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.num_heads == HEADS


class WrappedRope(Wrapped):
    """Gemma4's encoder attention takes RoPE tables; identity ones (cos 1, sin 0) here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        cos, sin = torch.ones(h.shape[0], h.shape[1], 8), torch.zeros(h.shape[0], h.shape[1], 8)
        return self.out(h + self.attn(h, cos, sin))


def test_gemma4_attention_behind_wrapped_linears_is_cut_by_head() -> None:
    """Its projections wrap their Linear (``q_proj.linear``); ``num_kv_heads`` follows the cut too."""
    from timm.models.gemma4_vit import Gemma4Attention

    torch.manual_seed(0)
    model = WrappedRope(Gemma4Attention(DIM, num_heads=HEADS, head_dim=8)).eval()
    x = torch.randn(2, TOKENS, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if ("attn.q_proj.linear.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert heads.prunable and heads.size == HEADS, heads.reasons
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    attn = pruned.attn
    assert (attn.num_heads, attn.num_kv_heads, attn.num_kv_groups) == (2, 2, 1)


class WrappedSam(Wrapped):
    """SAM's attention takes ``[B, H, W, C]`` and adds decomposed relative positions made by einsum
    (``"bhwc,hkc->bhwk"`` with the heads folded into the batch dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x).view(x.shape[0], 4, 4, DIM)
        return self.out((h + self.attn(h)).flatten(1, 2))


class WrappedMvit(Wrapped):
    """MViT-v2 pools each head over its head size (a conv and a norm per head), adds relative
    positions by einsum and writes them into ``attn[:, :, 1:, 1:]``; it takes a class token too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        y, _ = self.attn(h, [4, 4])
        return self.out(h + y)


class WrappedGlobal(Wrapped):
    """GCViT's global attention projects k|v only; the query comes from a global tensor repeated
    per window by ``repeat_interleave``."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        self.glob = nn.Linear(6, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.attn(h, self.glob(x[:1])))


def _sam() -> nn.Module:
    from timm.models.vision_transformer_sam import Attention

    return WrappedSam(Attention(DIM, HEADS, use_rel_pos=True, input_size=(4, 4)))


def _mvit() -> nn.Module:
    from timm.models.mvitv2 import MultiScaleAttention

    return WrappedMvit(MultiScaleAttention(DIM, DIM, (4, 4), num_heads=HEADS, kernel_q=(3, 3), kernel_kv=(3, 3),
                                           stride_kv=(2, 2)))


def _gcvit() -> nn.Module:
    from timm.models.gcvit import WindowAttentionGlobal

    return WrappedGlobal(WindowAttentionGlobal(DIM, HEADS, (4, 4), use_global=True))


@pytest.mark.parametrize(("name", "build", "tokens"), [("sam", _sam, TOKENS), ("mvitv2", _mvit, TOKENS + 1),
                                                       ("gcvit", _gcvit, TOKENS)])
def test_einsum_and_repeated_queries_keep_heads_cuttable(name: str, build: Callable[[], nn.Module],
                                                         tokens: int) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, tokens, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    heads = [g for g in graph.groups if any(m.tensor.startswith("attn.qkv.weight") and m.role == "producer"
                                            and m.inner > 1 for m in g.members)]
    assert heads and heads[0].prunable and heads[0].size == HEADS, [(g.size, g.reasons) for g in heads]
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.num_heads == HEADS // 2 and model.attn.num_heads == HEADS
