"""Each graph pattern: the pruned model equals the masked dense model (DESIGN.md's invariant)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import l2, random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

from _models import (PATTERNS, ChannelShuffle, ChannelsLast, Chunked, Concat, CustomAutograd, EmbeddingMLP,
                             Residual, TokensWithClassToken, example)


def _prune(model: torch.nn.Module, x: torch.Tensor, ratio: float, seed: int = 0):  # type: ignore[no-untyped-def]
    graph = DependencyGraph.trace(model, x)
    scores = {g.id: random(g, model, seed=seed) for g in graph.prunable}
    plan = allocate(graph, scores, ratio)
    return graph, plan, apply(model, graph, plan, example_inputs=x)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@settings(max_examples=6, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_pruned_equals_masked_dense(pattern: str, ratio: float, seed: int) -> None:
    factory, shape = PATTERNS[pattern]
    torch.manual_seed(seed)
    model = factory().eval()
    x = example(shape, seed)
    graph, plan, pruned = _prune(model, x, ratio, seed)
    want = mask(model, graph, plan)(x)
    got = pruned(x)
    assert got.shape == want.shape
    exact = all(graph.group(g).exact for g in plan.sizes if plan.removed(g))
    if exact:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if ratio >= 0.5 and any(g.size >= 4 for g in graph.prunable):
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_ratio_zero_is_identity() -> None:
    model = TokensWithClassToken().eval()
    x = example((2, 3, 8, 8))
    _, plan, pruned = _prune(model, x, 0.0)
    assert plan.ratio == 0.0
    torch.testing.assert_close(pruned(x), model(x))


def test_model_is_left_untouched() -> None:
    model = Residual().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _prune(model, example((2, 3, 16, 16)), 0.5)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_residual_stream_is_one_group() -> None:
    graph = DependencyGraph.trace(Residual().eval(), example((2, 3, 16, 16)))
    stream = graph.groups_of("b")
    producers = {m.tensor for g in stream for m in g.by_role("producer")}
    assert {"stem.weight", "b.weight"} <= producers  # the add ties them together
    group = next(g for g in stream if "stem.weight" in {m.tensor for m in g.members})
    assert {"bn.weight", "bn_b.running_var", "a.weight", "head.weight"} <= {m.tensor for m in group.members}


def test_concat_maps_consumer_columns_with_offsets() -> None:
    graph = DependencyGraph.trace(Concat().eval(), example((2, 3, 16, 16)))
    left = next(g for g in graph.groups if g.id == "left.weight:0")
    right = next(g for g in graph.groups if g.id == "right.weight:0")
    assert [(m.tensor, m.start) for m in left.by_role("consumer")] == [("mix.weight", 0)]
    assert [(m.tensor, m.start) for m in right.by_role("consumer")] == [("mix.weight", 5)]


def test_flatten_consumer_has_spatial_inner() -> None:
    graph = DependencyGraph.trace(Concat().eval(), example((2, 3, 16, 16)))
    group = graph.group("mix.weight:0")
    fc = [m for m in group.members if m.tensor == "fc.weight"]
    assert fc and fc[0].inner == 16 and fc[0].axis == 1


def test_chunk_halves_are_cut_alike() -> None:
    graph = DependencyGraph.trace(Chunked().eval(), example((2, 3, 16, 16)))
    (group,) = graph.groups_of("conv")
    assert group.size == 4 and group.prunable
    assert sorted(m.start for m in group.by_role("producer") if m.tensor == "conv.weight") == [0, 4]


def test_model_output_and_input_channels_are_never_cut() -> None:
    graph = DependencyGraph.trace(Residual().eval(), example((2, 3, 16, 16)))
    head = graph.group("head.weight:0")
    assert not head.prunable and "model output" in head.reasons[0]


def test_channel_shuffle_cuts_the_same_positions_of_each_half() -> None:
    # NOTE: view(n, 2, c // 2, h, w).transpose(1, 2): channel d of each half lands next to the other's
    # d; the pruned model interleaves what it kept, so both halves must keep the same positions
    model, x = ChannelShuffle().eval(), example((2, 3, 8, 8))
    graph, plan, pruned = _prune(model, x, 0.5)
    group = graph.group("a.weight:0")
    assert group.prunable and group.size == 4
    removed = set(plan.removed(group.id))
    rows = {m.start + c for m in group.members if m.tensor == "a.weight" for c in removed}
    assert rows == removed | {c + 4 for c in removed}
    assert pruned.a.out_channels == pruned.b.in_channels == 4
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    other = example((1, 3, 5, 7), seed=1)  # NOTE: c // 2 is read at run time: other sizes run too
    torch.testing.assert_close(pruned(other), mask(model, graph, plan)(other), rtol=1e-4, atol=1e-5)


def test_a_group_norm_written_by_hand_keeps_its_groups_equal() -> None:
    class HandGroupNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.Conv2d(12, 5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            n, c, h, w = y.shape
            g = y.view(n, 3, -1)
            g = (g - g.mean(-1, keepdim=True)) / (g.var(-1, keepdim=True) + 1e-5).sqrt()
            return self.b(torch.relu(g.view(n, c, h, w))).mean((2, 3))

    model, x = HandGroupNorm().eval(), example((2, 3, 6, 6))
    graph = DependencyGraph.trace(model, x)
    group = graph.group("a.weight:0")
    assert group.prunable and group.size == 4 and not group.exact  # NOTE: the statistics mix each group
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.a.out_channels == pruned.b.in_channels == 6
    assert pruned(example((1, 3, 4, 5))).shape == (1, 5)


def test_attention_heads_at_a_literal_count_are_not_cut_inside() -> None:
    # NOTE: tokens-first attention at a literal head count: the head size sets the softmax scale, so
    # cutting inside every head would change the function; the heads stay frozen
    class LiteralHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = torch.nn.Linear(8, 24), torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            q, k, v = (t.view(b, n, 2, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return self.out(y.transpose(1, 2).reshape(b, n, -1))

    graph = DependencyGraph.trace(LiteralHeads().eval(), example((1, 5, 8)))
    assert not graph.group("qkv.weight:0").prunable


def test_custom_autograd_flip_freezes_the_channels() -> None:
    graph = DependencyGraph.trace(CustomAutograd().eval(), example((2, 3, 8, 8)))
    group = graph.group("a.weight:0")
    assert not group.prunable
    assert any("flip" in r or "no rule" in r for r in group.reasons), group.reasons


def test_embedding_columns_are_prunable() -> None:
    model = EmbeddingMLP().eval()
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    graph, plan, pruned = _prune(model, ids, 0.5)
    assert pruned.emb.embedding_dim == pruned.emb.weight.shape[1] < 8
    torch.testing.assert_close(pruned(ids), mask(model, graph, plan)(ids), rtol=1e-4, atol=1e-5)


def test_attributes_follow_the_weights() -> None:
    model = Residual().eval()
    _, _, pruned = _prune(model, example((2, 3, 16, 16)), 0.5)
    assert pruned.a.out_channels == pruned.a.weight.shape[0] == pruned.b.in_channels
    assert pruned.bn.num_features == pruned.bn.weight.shape[0] == pruned.stem.out_channels
    assert pruned.head.in_features == pruned.head.weight.shape[1]


def test_unknown_op_is_named_in_blocked() -> None:
    class Unknown(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 1)
            self.b = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.nn.functional.channel_shuffle(self.a(x), 2)).mean((2, 3))

    graph = DependencyGraph.trace(Unknown().eval(), example((1, 3, 4, 4)))
    assert any("channel_shuffle" in b and "root module" in b for b in graph.blocked), graph.blocked
    assert not graph.group("a.weight:0").prunable


def test_l2_scores_are_pure_and_shaped() -> None:
    model = Residual().eval()
    graph = DependencyGraph.trace(model, example((2, 3, 16, 16)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for group in graph.prunable:
        first, second = l2(group, model), l2(group, model)
        assert first.shape == (group.size,) and torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_verification_catches_a_wrong_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a dependency were missed, apply must raise instead of returning a wrong model."""
    import contextlib
    import importlib

    from prunekit.structured.apply import VerificationError

    verify_module = importlib.import_module("prunekit.structured.verify")
    model = Residual().eval()
    x = example((2, 3, 16, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: l2(g, model) for g in graph.prunable}, 0.5)
    real_zeroed = verify_module.zeroed  # NOTE: how verify builds its masked dense reference

    @contextlib.contextmanager
    def wrong_mask(m, *args, **kwargs):  # type: ignore[no-untyped-def]
        with real_zeroed(m, *args, **kwargs), torch.no_grad():
            saved = m.head.bias.clone()
            m.head.bias.add_(1.0)  # the "reference" now disagrees with the pruned model
            try:
                yield m
            finally:
                m.head.bias.copy_(saved)

    monkeypatch.setattr(verify_module, "zeroed", wrong_mask)
    with pytest.raises(VerificationError, match="differs from the masked dense model"):
        apply(model, graph, plan, example_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_inexact_plan_still_checks_its_exact_groups() -> None:
    model = ChannelsLast().eval()
    x = example((2, 3, 16, 16))
    graph = DependencyGraph.trace(model, x)
    assert any(not g.exact for g in graph.prunable) and any(g.exact for g in graph.prunable)
    plan = allocate(graph, {g.id: l2(g, model) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.up.out_features == 8 and pruned.norm.normalized_shape == (4,)
    assert pruned(x).shape == model(x).shape


class CausalMix(torch.nn.Module):
    """Channels on dim 1 of ``[B, C, L, L]`` position scores made causal with ``tril`` (the leading
    dims pass), or channels on the last two dims of a ``[B, C, C]`` product (zeroed by position)."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.inp, self.out = torch.nn.Conv1d(3, 8, 1), torch.nn.Conv1d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # [B, C, L]
        if self.channels_last:
            return self.out(torch.tril(h @ h.transpose(1, 2)) @ h)
        scores = torch.tril(h.unsqueeze(-1) * h.unsqueeze(-2))  # [B, C, L, L]
        return self.out(scores.sum(-1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_tril_passes_leading_channels_and_freezes_its_own(channels_last: bool) -> None:
    torch.manual_seed(0)
    model, x = CausalMix(channels_last).eval(), torch.randn(2, 3, 5)
    graph = DependencyGraph.trace(model, x)
    group = next(g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members))
    if channels_last:
        assert not group.prunable and any("diagonal" in r for r in group.reasons)
        return
    assert group.prunable and group.exact
    graph, plan, pruned = _prune(model, x, 0.5)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
