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
    key size's: rows / heads is not the scale's head size, so the class is not recognised by shape
    (the tied refresh would compute a wrong head count); it has a refresh of its own instead."""
    from timm.models.efficientformer import Attention

    from prunekit.graph.handlers.timm_modules import is_attention

    assert not is_attention(Attention(DIM, key_dim=4, num_heads=HEADS, resolution=4))


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


class Block(nn.Module):
    """``in -> [x +] attn(x) -> out`` on tokens ``[B, N, C]`` or, with ``image``, on ``[B, C, H, W]``
    (convolutions in and out); without ``residual`` the attention may change the token count."""

    def __init__(self, attn: nn.Module, dim: int = DIM, image: bool = False, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.inp = nn.Conv2d(6, dim, 1) if image else nn.Linear(6, dim)
        self.attn = attn
        self.out = nn.Conv2d(dim, 3, 1) if image else nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        y = self.attn(h)
        return self.out(h + y if self.residual else y)


def _efficientformer() -> Block:  # qkv rows per head: key, key, val (val = 4 * key); one bias row per head
    from timm.models.efficientformer import Attention

    return Block(Attention(DIM, key_dim=4, num_heads=HEADS, resolution=4))


def _levit() -> Block:
    from timm.models.levit import Attention

    return Block(Attention(DIM, key_dim=4, num_heads=HEADS, attn_ratio=2, resolution=4))


def _levit_down() -> Block:  # q from strided tokens, k|v per head: 16 tokens in, 4 out
    from timm.models.levit import AttentionDownsample

    return Block(AttentionDownsample(DIM, DIM, key_dim=4, num_heads=HEADS, resolution=4), residual=False)


def _efficientformer_v2() -> Block:  # talking heads: 1x1 convs across heads between q.k and v
    from timm.models.efficientformer_v2 import Attention2d

    return Block(Attention2d(DIM, key_dim=4, num_heads=HEADS, attn_ratio=2, resolution=4), image=True)


def _efficientformer_v2_down() -> Block:
    from timm.models.efficientformer_v2 import Attention2dDownsample

    return Block(Attention2dDownsample(DIM, key_dim=4, num_heads=HEADS, attn_ratio=2, resolution=4), image=True,
                 residual=False)


def _lowformer() -> Block:  # q|k|v interleaved per head in one conv; 240 channels make 4 heads of 30
    from timm.models.lowformer import ConvAttention

    return Block(ConvAttention(240, att_stride=2, att_kernel=3), dim=240, image=True)


def _multi_query() -> Block:  # MobileNetV5: one key and one value head for all query heads
    from timm.layers import MultiQueryAttention2d

    return Block(MultiQueryAttention2d(DIM, num_heads=HEADS, key_dim=8, value_dim=8), image=True)


KEY_VALUE = {"efficientformer": (_efficientformer, "attn.qkv.weight", False),
             "levit": (_levit, "attn.qkv.linear.weight", False),
             "levit_down": (_levit_down, "attn.kv.linear.weight", False),
             "efficientformer_v2": (_efficientformer_v2, "attn.q.conv.weight", True),
             "efficientformer_v2_down": (_efficientformer_v2_down, "attn.k.conv.weight", True),
             "lowformer": (_lowformer, "attn.pwise.weight", True),
             "multi_query": (_multi_query, "attn.query.proj.weight", True)}


@pytest.mark.parametrize("name", sorted(KEY_VALUE))
def test_attention_with_other_key_and_value_sizes_is_cut_by_head(name: str) -> None:
    """Stored head counts with key and value sizes of their own (``split([key, key, val])``, talking
    heads, multi-query): the refresh sets the count and the widths stored per head, the key and value
    sizes stay, and the cached attention biases (filled by an eval forward) are dropped."""
    build, producer, image = KEY_VALUE[name]
    torch.manual_seed(0)
    model = build().eval()
    shape = (2, 6, 8, 8) if name == "lowformer" else (2, 6, 4, 4) if image else (2, TOKENS, 6)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    model(x)  # NOTE: fills timm's per-device attention-bias cache, as any evaluation before pruning does
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if any(m.tensor == producer and m.axis == 0 for m in g.members))
    assert heads.prunable and heads.size == HEADS, (heads.size, heads.reasons)
    if name == "efficientformer_v2":  # q and v heads are one group although talking heads sit between
        assert {"attn.q.conv.weight", "attn.v.conv.weight"} <= {m.tensor for m in heads.members}
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    attn, old = pruned.attn, model.attn
    assert attn.num_heads == HEADS // 2 and old.num_heads == HEADS
    for width in ("key_attn_dim", "val_attn_dim", "dh", "o_proj_inpdim"):
        if hasattr(old, width):
            assert getattr(attn, width) == getattr(old, width) // 2, width


class WrappedCoat(Wrapped):
    """CoaT's factorised attention takes the token grid's size; its class token comes first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.attn(h, (4, 4)))


def test_coat_splits_heads_into_window_runs_that_follow_the_cut() -> None:
    """CoaT's relative position encoding splits v's heads into runs (heads 0-1 with a 3x3 depthwise
    conv, heads 2-3 with a 5x5 one) at stored sizes: each run is a group of heads of its own, and the
    sizes are read back from the convs; a run whose heads are all cut loses its conv."""
    from timm.models.coat import ConvRelPosEnc, FactorAttnConvRelPosEnc

    from prunekit.structured.plan import Plan

    torch.manual_seed(0)
    crpe = ConvRelPosEnc(head_chs=DIM // HEADS, num_heads=HEADS, window={3: 2, 5: 2})
    model = WrappedCoat(FactorAttnConvRelPosEnc(DIM, HEADS, qkv_bias=True, shared_crpe=crpe)).eval()
    x = torch.randn(2, TOKENS + 1, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    runs = [next(g for g in graph.groups if (f"attn.crpe.conv_list.{i}.weight", 0) in {(m.tensor, m.axis)
                                                                                     for m in g.members})
            for i in range(2)]
    assert all(r.prunable and r.size == 2 and any(m.tensor == "attn.qkv.weight" for m in r.members) for r in runs)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.num_heads == 2 and pruned.attn.crpe.head_splits == [1, 1]
    plan = Plan(keep={runs[0].id: ()}, sizes={g.id: g.size for g in graph.groups})  # the 3x3 run goes
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.crpe.head_splits == [2] and len(pruned.attn.crpe.conv_list) == 1
    assert len(model.attn.crpe.conv_list) == 2 and model.attn.crpe.channel_splits == [16, 16]


def test_nest_attention_with_the_head_innermost_is_cut_with_its_width() -> None:
    """NesT reads its width from the input (``C // num_heads``) and puts the head innermost in its
    output (``permute(0, 2, 3, 4, 1).reshape(B, T, N, C)``: channel ``c * H + h`` is head ``h``). The
    width is tied to the heads in that order, so cutting a head cuts every ``H``-th channel of the
    residual width, and ``C // num_heads`` stays the head size."""
    from timm.models.nest import Attention

    torch.manual_seed(0)
    model = Wrapped(Attention(DIM, HEADS, qkv_bias=True)).eval()
    x = torch.randn(2, 3, TOKENS, 6, generator=torch.Generator().manual_seed(1))  # [B, T blocks, N, C]
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if ("attn.qkv.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert heads.prunable and heads.size == HEADS, heads.reasons
    width = sorted(m.start for m in heads.members if m.tensor == "inp.weight")
    assert width == [c * HEADS for c in range(DIM // HEADS)], width  # head h: channels h, h + H, h + 2H, ...
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.num_heads == HEADS // 2 and pruned.inp.out_features == DIM // 2


def test_efficientvit_lite_attention_loses_whole_groups_of_its_grouped_convs() -> None:
    """EfficientViT's LiteMLA aggregates q, k and v of each head apart (a 1x1 conv with ``groups =
    3 * heads``): cutting a head removes three whole groups of that conv, and ``groups`` follows."""
    from timm.models.efficientvit_mit import LiteMLA

    torch.manual_seed(0)
    model = Block(LiteMLA(DIM, DIM, dim=8), image=True).eval()
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if ("attn.qkv.conv.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert heads.prunable and heads.size == HEADS, (heads.size, heads.reasons)
    assert ("attn.aggreg.0.1.weight", 0, 24) in {(m.tensor, m.axis, m.inner) for m in heads.members}
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    grouped = pruned.attn.aggreg[0][1]
    assert (grouped.groups, grouped.in_channels, grouped.out_channels) == (6, 48, 48)
    assert model.attn.aggreg[0][1].groups == 12


def test_halo_attention_windows_keys_by_unfold_and_is_cut_by_head() -> None:
    """ByoaNet's HaloAttn folds heads into the batch, takes overlapping key/value windows with
    ``Tensor.unfold`` (sliding windows along the spatial dims keep the channels) and views its
    output to the stored ``dim_out_v``, which the refresh scales with the head count."""
    from timm.layers.halo_attn import HaloAttn

    torch.manual_seed(0)
    model = Block(HaloAttn(DIM, num_heads=HEADS, block_size=2, halo_size=1), image=True).eval()
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if ("attn.q.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert heads.prunable and heads.size == HEADS, (heads.size, heads.reasons)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    attn = pruned.attn
    assert (attn.num_heads, attn.dim_out_v, attn.dim_out_qk) == (2, DIM // 2, DIM // 2)


def test_a_one_head_view_by_the_stored_count_keeps_the_head_whole() -> None:
    """CPUBone's ConvAttention with one head views ``reshape(N, self.num_heads, 3 * head_dim, h * w)``:
    the size-1 head dim is dropped when dims are matched, yet the projection rows are that one head,
    so they are not cut one by one (the refresh would compute no head at all)."""
    from timm.models.cpubone import ConvAttention

    torch.manual_seed(0)
    model = Block(ConvAttention(DIM, att_stride=2, att_kernel=3), image=True).eval()  # 32 * 1.0 // 30 = 1 head
    assert model.attn.num_heads == 1
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    rows = next(g for g in graph.groups if ("attn.pwise.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert rows.size == 1, rows.size  # one unit: the head
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    assert pruned.attn.num_heads == 1 and pruned.attn.pwise.out_channels == 3 * DIM


class WrappedGrid(Wrapped):
    """PVT-v2's attention takes the token grid's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.attn(h, (4, 4)))


def test_a_batch_of_one_is_not_taken_for_a_one_head_view() -> None:
    """PVT-v2's one-head attention views its input ``reshape(B, C, H, W)`` for the spatial reduction:
    with a batch of one, the size-1 dim before the channels is the batch, not a head, so the width
    stays a group of channels (here frozen by its size tie, as in PVT-v2's first stage), not one
    head-sized unit (which also froze GLPN's first-stage width in coverage_hf)."""
    from timm.models.pvt_v2 import Attention

    torch.manual_seed(0)
    model = WrappedGrid(Attention(DIM, num_heads=1, sr_ratio=2)).eval()
    x = torch.randn(1, TOKENS, 6, generator=torch.Generator().manual_seed(1))
    graph = DependencyGraph.trace(model, x)
    width = next(g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert width.size == DIM and not any("disappears" in r for r in width.reasons), (width.size, width.reasons)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
