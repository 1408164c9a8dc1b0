"""Attention heads: whole heads are cut exactly (pruned == masked dense), GQA keeps query heads with
their key/value head, and module attributes and Hugging Face configs follow the pruned widths."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from prunekit.graph import DependencyGraph
from prunekit.graph.constraints import ConstraintStore
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

from _attention_models import MODELS, MHABlock, QKVHeads, bert, image, llama, sequence, swin, tokens, vit

FAST = ["mha", "mha_seq_first_kdim", "qkv_sdpa"]
HEAVY = ["vit", "swin", "bert_eager", "bert_sdpa", "llama_eager", "llama_sdpa"]
# NOTE: ViT, Swin and eager BERT/Llama are pruned by the attribute tests below, where apply's own
# verification re-applies the exact groups (heads, MLP) and compares values with the masked model.
DEFAULT = ["bert_sdpa", "llama_sdpa"]


def _inputs(name: str, seed: int) -> tuple[torch.Tensor, ...]:
    x = MODELS[name][1](seed)
    if name.startswith(("bert", "llama")):  # attention_mask is the second positional input of both
        padding = torch.ones_like(x)
        padding[0, -2:] = 0
        return x, padding
    return (x,)


def _prune_exact(name: str, ratio: float, seed: int):  # type: ignore[no-untyped-def]
    """Prune the exact groups (heads, MLP neurons) of model ``name`` with random scores."""
    torch.manual_seed(seed)
    model = MODELS[name][0]().eval()
    x = _inputs(name, seed)
    graph = DependencyGraph.trace(model, x)
    scores = {g.id: random(g, model, seed=seed) for g in graph.prunable if g.exact}
    plan = allocate(graph, scores, ratio)
    return model, x, graph, plan, apply(model, graph, plan, example_inputs=x)


def _heads(graph: DependencyGraph) -> list:  # type: ignore[type-arg]
    """Head groups: their producer rows span more than one position per channel."""
    return [g for g in graph.prunable if any(m.inner > 1 and m.role == "producer" for m in g.members)]


def _check_equivalent(name: str, ratio: float, seed: int) -> None:
    model, x, graph, plan, pruned = _prune_exact(name, ratio, seed)
    assert _heads(graph), f"{name}: no prunable head group"
    got, want = pruned(*x), mask(model, graph, plan)(*x)
    got, want = (got[0], want[0]) if isinstance(got, (tuple, list)) or hasattr(got, "last_hidden_state") else (got, want)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if ratio >= 0.5:
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=4, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_heads_pruned_equals_masked_dense(name: str, ratio: float, seed: int) -> None:
    _check_equivalent(name, ratio, seed)


@pytest.mark.parametrize("name", DEFAULT)
def test_heads_pruned_equals_masked_dense_models(name: str) -> None:
    _check_equivalent(name, 0.5, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
@settings(max_examples=3, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_heads_pruned_equals_masked_dense_models_random(name: str, ratio: float, seed: int) -> None:
    _check_equivalent(name, ratio, seed)


def test_mha_heads_group_members() -> None:
    graph = DependencyGraph.trace(MHABlock().eval(), sequence())
    (heads,) = _heads(graph)
    assert heads.size == 4 and heads.exact
    rows = sorted((m.tensor, m.start, m.inner) for m in heads.by_role("producer"))
    assert rows == [("attn.in_proj_bias", s, 4) for s in (0, 16, 32)] + [("attn.in_proj_weight", s, 4) for s in (0, 16, 32)]
    assert [(m.tensor, m.axis, m.inner) for m in heads.by_role("consumer")] == [("attn.out_proj.weight", 1, 4)]
    stream = next(g for g in graph.groups if "embed.weight" in {m.tensor for m in g.members})  # the embedding dim is read by in_proj columns, written by out_proj rows
    assert {("attn.in_proj_weight", 1), ("attn.out_proj.weight", 0)} <= {(m.tensor, m.axis) for m in stream.members}


def test_fused_qkv_view_cuts_q_k_v_alike() -> None:
    graph = DependencyGraph.trace(QKVHeads().eval(), sequence(0, 5))
    heads = graph.group("qkv.weight:0")
    assert heads.size == 4 and heads.prunable
    assert sorted(m.start for m in heads.members if m.tensor == "qkv.weight") == [0, 16, 32]


def test_stored_head_count_follows_pruning_as_the_module_attribute() -> None:
    """``reshape(B, N, 3, self.heads, self.head_dim)`` in a user's module: the one attribute that holds
    the head count joins the heads' group, so whole heads are cut and ``apply`` rewrites ``heads``."""
    model = QKVHeads(constant_heads=True).eval()
    x = sequence(0, 5)
    graph = DependencyGraph.trace(model, x)
    group = graph.group("qkv.weight:0")
    assert group.prunable and group.size == 4
    assert [(module, attr) for module, attr, _, _ in group.size_attributes()] == [("", "heads")]
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)  # verified against the masked model
    assert pruned.heads == 2 and pruned.head_dim == 4 and pruned.qkv.out_features == 3 * 2 * 4
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x))


class _LiteralHeads(QKVHeads):
    """The head count written as a literal: no attribute says what to rewrite."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        b, n, _ = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, 4, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.head((h + self.proj(o)).mean(1))


def test_literal_head_count_freezes_the_heads() -> None:
    graph = DependencyGraph.trace(_LiteralHeads().eval(), sequence(0, 5))  # head_dim is 4 too: not a count
    group = graph.group("qkv.weight:0")
    assert not group.prunable and any("constant head count" in r for r in group.reasons)


def test_gqa_query_heads_go_with_their_key_value_head() -> None:
    model = llama().eval()
    graph = DependencyGraph.trace(model, tokens())
    heads = [g for g in _heads(graph) if g.modules[0].startswith("layers.0.")]
    assert len(heads) == 1 and heads[0].size == 2  # num_key_value_heads
    inner = {m.tensor: m.inner for m in heads[0].members}
    d = model.layers[0].self_attn.head_dim
    assert inner["layers.0.self_attn.q_proj.weight"] == 2 * d  # n_rep query heads per unit
    assert inner["layers.0.self_attn.k_proj.weight"] == inner["layers.0.self_attn.v_proj.weight"] == d
    assert inner["layers.0.self_attn.o_proj.weight"] == 2 * d


class _KeysFewerThanValues(nn.Module):
    """Keys with 2 heads, values and queries with 4, through SDPA's ``enable_gqa`` (Nemotron 3's
    audio encoder, where the config gives the keys ``num_key_value_heads`` and the values not)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 16)
        self.o = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, -1, 4).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


def test_keys_with_fewer_heads_than_values_cut_every_head_alike() -> None:
    """Value head i serves query head i and the output projection's columns of head i; a key head
    serves two query heads. One group holds all four projections (the values' heads used to be a
    group of their own, cut without the output projection's columns)."""
    torch.manual_seed(0)
    model, x = _KeysFewerThanValues().eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.trace(model, x)
    heads = [g for g in graph.prunable if any(m.tensor == "k.weight" for m in g.members)]
    assert len(heads) == 1 and heads[0].size == 2
    assert {m.tensor: m.inner for m in heads[0].members if m.axis == 0} == {"k.weight": 4, "q.weight": 8,
                                                                           "v.weight": 8, "k.bias": 4,
                                                                           "q.bias": 8, "v.bias": 8}
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # NOTE: verified against the masked dense model
    assert pruned.k.out_features == 4 and pruned.v.out_features == pruned.o.in_features == 8


class _FunctionalHeads(nn.Module):
    """F.multi_head_attention_forward as WavLM calls it: separate q, k, v projections, their biases
    concatenated in the forward, and a position bias per head (an embedding table's columns) as
    the mask; ``fixed`` makes that mask a stored constant of 4 heads instead."""

    def __init__(self, fixed: bool = False) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))
        self.table = nn.Embedding(9, 4)
        self.heads, self.fixed = 4, fixed
        self.register_buffer("constant", torch.ones(4, 6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        positions = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).clamp(-4, 4) + 4
        bias = self.constant if self.fixed else self.table(positions).permute(2, 0, 1)
        out, _ = F.multi_head_attention_forward(
            x, x, x, 16, self.heads, torch.empty([0]), torch.cat((self.q.bias, self.k.bias, self.v.bias)),
            None, None, False, 0.0, self.o.weight, self.o.bias, training=False, attn_mask=bias,
            use_separate_proj_weight=True, q_proj_weight=self.q.weight, k_proj_weight=self.k.weight,
            v_proj_weight=self.v.weight)
        return out


def test_functional_attention_ties_concatenated_biases_and_the_per_head_mask_to_its_heads() -> None:
    """Called outside nn.MultiheadAttention, F.multi_head_attention_forward needs embed_dim rows in
    each projection, so its heads stay whole; the concatenated q, k, v biases and the position
    table's columns are in the heads' group (the table's columns went with the width, and a cut of
    the width broke the mask's shape). A constant mask per head also keeps the heads."""
    torch.manual_seed(0)
    model, x = _FunctionalHeads().eval(), torch.randn(6, 1, 16)
    graph = DependencyGraph.trace(model, x)
    heads = [g for g in graph.groups if any(m.tensor == "q.weight" and m.axis == 0 for m in g.members)]
    assert len(heads) == 1 and heads[0].size == 4 and not heads[0].prunable
    assert any("outside nn.MultiheadAttention" in r for r in heads[0].reasons)
    assert {("table.weight", 1), ("q.bias", 0), ("k.bias", 0), ("v.bias", 0)} <= {(m.tensor, m.axis)
                                                                                for m in heads[0].members}
    fixed = DependencyGraph.trace(_FunctionalHeads(fixed=True).eval(), x)
    frozen = [g for g in fixed.groups if any(m.tensor == "q.weight" and m.axis == 0 for m in g.members)]
    assert any("mask per head" in r for r in frozen[0].reasons)


def test_swin_relative_position_bias_follows_heads() -> None:
    graph = DependencyGraph.trace(swin().eval(), image())
    heads = graph.group("features.3.0.attn.qkv.weight:0")
    assert heads.size == 4 and heads.exact and heads.prunable
    assert ("features.3.0.attn.relative_position_bias_table", 1) in {(m.tensor, m.axis) for m in heads.members}


def test_trace_with_attention_mask_keyword() -> None:
    model = bert("sdpa").eval()
    ids, padding = _inputs("bert_sdpa", 0)
    with_kw = DependencyGraph.trace(model, ids, example_kwargs={"attention_mask": padding})
    assert [g.id for g in _heads(with_kw)] == [g.id for g in _heads(DependencyGraph.trace(model, ids))]
    assert not with_kw.blocked or all("attention" not in b for b in with_kw.blocked)


def test_mha_attributes_follow_heads() -> None:
    _, x, _, _, pruned = _prune_exact("mha", 0.5, 0)
    attn = pruned.attn
    assert attn.num_heads == 2 and attn.head_dim == 4
    assert attn.embed_dim == attn.in_proj_weight.shape[1] == attn.out_proj.out_features < 16  # exact: cut too
    swapped = type(attn).__name__ == "PrunedMultiheadAttention"  # only when the inner width != embed_dim
    assert isinstance(attn, nn.MultiheadAttention) and swapped == (attn.embed_dim != 8)
    assert set(attn.state_dict()) == set(MHABlock().attn.state_dict())


def _prune_all(model: nn.Module, x: torch.Tensor) -> nn.Module:
    graph = DependencyGraph.trace(model, x)
    assert _heads(graph) and any(not g.exact for g in graph.prunable)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    return apply(model, graph, plan, example_inputs=x)  # checks the exact groups by value, the rest by shape


def test_vit_attributes_with_heads_and_hidden_pruned() -> None:
    pruned = _prune_all(vit().eval(), image())
    attn = pruned.encoder.layers[0].self_attention
    assert attn.num_heads == attn.in_proj_weight.shape[0] // (3 * attn.head_dim) == 2
    assert pruned.hidden_dim == pruned.class_token.shape[-1] == attn.embed_dim < 32
    assert pruned(image()).shape == (2, 5)


def test_swin_attributes_with_heads_and_embedding_pruned() -> None:
    pruned = _prune_all(swin().eval(), image())
    block = pruned.features[3][0].attn
    assert block.num_heads == block.relative_position_bias_table.shape[1] == 2
    for layer in (pruned.features[1], pruned.features[3]):
        for blk in layer:
            inner, c = blk.attn.qkv.weight.shape[0] // 3, blk.attn.qkv.weight.shape[1]
            assert (type(blk.attn).__name__ == "PrunedShiftedWindowAttention") == (inner != c)
    assert pruned(image()).shape == (2, 5)


@pytest.mark.parametrize("factory", [bert, llama])
def test_hugging_face_attributes_and_config(factory) -> None:  # type: ignore[no-untyped-def]
    model = factory().eval()
    x = tokens()
    graph = DependencyGraph.trace(model, x)
    heads = _heads(graph)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    keep_first = {**plan.keep, heads[0].id: tuple(range(heads[0].size))}  # layer 0 keeps all its heads
    plan = type(plan)(keep=keep_first, sizes=plan.sizes, meta=plan.meta)
    pruned = apply(model, graph, plan, example_inputs=x)
    config, widths = pruned.config, pruned.config.prunekit_layer_widths
    assert widths["num_attention_heads"] == [4, 2]
    assert config.intermediate_size == 64 and "intermediate_size" not in widths
    layer = (pruned.layers if hasattr(pruned, "layers") else pruned.encoder.layer)[1]
    attn = getattr(layer, "self_attn", None) or layer.attention.self
    if hasattr(attn, "num_key_value_groups"):
        assert attn.num_key_value_groups == 2 and widths["num_key_value_heads"] == [2, 1]
        assert layer.mlp.intermediate_size == 64
    else:
        assert attn.num_attention_heads == 2 and attn.all_head_size == 32
    torch.testing.assert_close(pruned(x).last_hidden_state, mask(model, graph, plan)(x).last_hidden_state,
                               rtol=1e-4, atol=1e-5)


def test_coarsen_rewrites_uses_and_freezes_misaligned() -> None:
    store = ConstraintStore()
    fine = store.new_source(8, "q")  # 8 channels = 4 heads of 2
    coarse = store.coarsen(fine.segments[0].source, 2)
    assert coarse is not None and store.coarsen(fine.segments[0].source, 2) == coarse
    store.use(fine, "q.weight", 0, "producer")
    store.use(fine, "o.weight", 1, "consumer")
    (group,) = store.solve()
    assert group.size == 4 and {m.inner for m in group.members} == {2} and group.prunable
    store.use(store.new_source(3, "x"), "x.weight", 0, "producer")
    partial = ConstraintStore()
    source = partial.new_source(8, "q")
    partial.coarsen(source.segments[0].source, 4)
    from prunekit.graph.constraints import Segment, Tracked

    partial.use(Tracked((Segment(0, 0, 8),)), "q.weight", 0, "producer")
    partial.use(Tracked((Segment(0, 2, 4),)), "half.weight", 1, "consumer")  # straddles both heads
    (frozen,) = partial.solve()
    assert not frozen.prunable and any("part of a head" in r for r in frozen.reasons)


def test_equal_sources_are_coarsened_alike() -> None:
    """An equality between a source seen in heads and one that is not makes both heads (GQA-style)."""
    store = ConstraintStore()
    a, b = store.new_source(8, "a"), store.new_source(8, "b")
    store.coarsen(a.segments[0].source, 4)
    store.unify(a, b, "test")
    store.use(a, "a.weight", 0, "producer")
    store.use(b, "b.weight", 0, "producer")
    (group,) = store.solve()
    assert group.size == 2 and {m.inner for m in group.members} == {4}


def test_mha_heads_only_keeps_embed_dim() -> None:
    """Heads cut, embedding kept: the module must hold an inner width below embed_dim."""
    model = MHABlock().eval()
    x = sequence()
    graph = DependencyGraph.trace(model, x)
    (heads,) = _heads(graph)
    plan = allocate(graph, {heads.id: random(heads, model, seed=0)}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    attn = pruned.attn
    assert type(attn).__name__ == "PrunedMultiheadAttention" and attn.num_heads == 2 and attn.embed_dim == 16
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    buffer = __import__("io").BytesIO()
    torch.save(pruned, buffer)  # the swapped class pickles by reference
    assert type(torch.load(__import__("io").BytesIO(buffer.getvalue()), weights_only=False).attn) is type(attn)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_pruned_multihead_attention_matches_torch(batch_first: bool, need_weights: bool) -> None:
    """The swapped forward computes what nn.MultiheadAttention computes (masks, layouts, weights)."""
    from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention

    torch.manual_seed(0)
    reference = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    ours = PrunedMultiheadAttention(8, 2, batch_first=batch_first).eval()
    ours.load_state_dict(reference.state_dict())
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[0, -1] = True
    causal = torch.ones(4, 5, dtype=torch.bool).triu(2)
    for kwargs in ({}, {"key_padding_mask": padding, "attn_mask": causal}, {"attn_mask": causal.float() * -1e4}):
        want = reference(q, kv, kv, need_weights=need_weights, **kwargs)
        got = ours(q, kv, kv, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
        if need_weights:
            torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    unbatched = q[0] if batch_first else q[:, 0]
    torch.testing.assert_close(ours(unbatched, unbatched, unbatched)[0], reference(unbatched, unbatched, unbatched)[0],
                               rtol=1e-4, atol=1e-5)


def test_mha_separate_projections_stay_separate_when_the_cut_makes_widths_equal() -> None:
    """An attention with kdim = vdim = 8 beside embed_dim 16, cut to an embedding of 8 (as a MACs
    search's candidates may be): it still holds separate q/k/v_proj_weight, no in_proj_weight, and
    its forward must use them (it read in_proj_weight and failed with 'NoneType' has no 'split')."""
    from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention

    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 4, batch_first=True, kdim=8, vdim=8).eval()
    with torch.no_grad():
        module.q_proj_weight = nn.Parameter(module.q_proj_weight[:, :8].clone())
        module.out_proj = type(module.out_proj)(16, 8)
    cut = PrunedMultiheadAttention.from_module(module).eval()
    assert cut.embed_dim == cut.kdim == cut.vdim == 8 and cut.in_proj_weight is None
    fused = PrunedMultiheadAttention(8, 4, batch_first=True, head_dim=4, out_dim=8).eval()
    with torch.no_grad():
        fused.in_proj_weight.copy_(torch.cat([module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]))
        fused.in_proj_bias.copy_(module.in_proj_bias)
        fused.out_proj.load_state_dict(module.out_proj.state_dict())
    q, kv = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    torch.testing.assert_close(cut(q, kv, kv)[0], fused(q, kv, kv)[0])
