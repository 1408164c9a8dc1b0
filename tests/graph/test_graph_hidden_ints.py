"""Widths that reach the forward as plain ints the trace must follow: sizes computed from a shape
(``C // self.num_heads``), depthwise ``groups`` stored at ``__init__``, and parameters that meet an
activation at fixed positions. Each model was pruned wrongly (verification failed) before the fix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class ComputedHeadSize(nn.Module):
    """Swin-V2-CR / VOLO: ``qkv(x).view(B, N, 3, self.heads, C // self.heads)`` with ``C`` read from
    ``x``: the head size changes with ``x``'s width, so ``x`` must keep its width."""

    def __init__(self, dim: int = 8, heads: int = 2, stored: bool = True) -> None:
        super().__init__()
        self.heads = heads if stored else None  # NOTE: not stored: the view's count is a literal below
        self.inp = nn.Linear(4, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 16), nn.Linear(16, dim)
        self.out = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        b, n, c = x.shape
        heads = self.heads or 2
        q, k, v = self.qkv(x).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.out(self.proj(o) + x + self.fc2(torch.relu(self.fc1(x))))


class StoredGroups(nn.Module):
    """timm's BlurPool2d: a fixed filter buffer per channel, ``groups=self.channels``."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", torch.full((channels, 1, 3, 3), 1 / 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.filt, stride=2, groups=self.channels)


class BlurNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.blur = StoredGroups(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blur(torch.relu(self.conv(x))))


class ParamAtFixedPositions(nn.Module):
    """EfficientViM's HSM-SSD: ``dt`` comes from a split at a stored size, ``A`` is added to it, and
    the sum is contracted with the tokens: ``A`` does not produce channels of its own."""

    def __init__(self, dim: int = 8, state: int = 6) -> None:
        super().__init__()
        self.state = state
        self.inp = nn.Conv1d(3, dim, 1)
        self.bcdt = nn.Conv1d(dim, 2 * state, 1)
        self.A = nn.Parameter(torch.randn(state))
        self.mix = nn.Conv1d(dim, dim, 1)
        self.out = nn.Conv1d(dim, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)                                                    # [B, dim, N]
        b, dt = torch.split(self.bcdt(x), [self.state, self.state], dim=1)  # [B, state, N] each
        a = (dt + self.A.view(1, -1, 1)).softmax(-1) * b
        h = x @ a.transpose(-2, -1)                                        # [B, dim, state]
        y = self.mix(h) @ a                                                # [B, dim, N]
        return self.out(y)


def _prune(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, DependencyGraph, object]:
    model.eval()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    assert plan.ratio > 0, graph.summary()
    pruned = apply(model, graph, plan, example_inputs=x)  # verifies against the masked model
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return pruned, graph, plan


def test_size_computed_from_a_width_freezes_that_width() -> None:
    torch.manual_seed(0)
    model, x = ComputedHeadSize(stored=False), torch.randn(2, 5, 4)
    pruned, graph, _ = _prune(model, x)
    width = next(g for g in graph.groups if "inp.weight" in {m.tensor for m in g.members})
    assert not width.prunable
    assert any("size computed from the width" in r for r in width.reasons)
    assert pruned.inp.out_features == 8 and pruned.fc1.out_features == 8


def test_size_computed_from_a_width_with_a_stored_head_count_cuts_whole_heads() -> None:
    """With ``self.heads`` stored, ``C // self.heads`` stays the head size when ``x``'s width is cut
    in whole heads together with the heads of q, k and v, and ``apply`` rewrites ``heads``."""
    torch.manual_seed(0)
    model, x = ComputedHeadSize(), torch.randn(2, 5, 4)
    pruned, graph, _ = _prune(model, x)
    width = next(g for g in graph.groups if "inp.weight" in {m.tensor for m in g.members})
    assert width.prunable and width.size == 2  # two heads of 4 channels
    assert pruned.heads == 1 and pruned.inp.out_features == 4 and model.heads == 2


def test_depthwise_groups_stored_at_init_follow_the_cut() -> None:
    torch.manual_seed(0)
    model, x = BlurNet(), torch.randn(1, 3, 8, 8)
    pruned, graph, _ = _prune(model, x)
    group = next(g for g in graph.groups if "conv.weight" in {m.tensor for m in g.members})
    assert group.prunable and [a[1] for a in group.size_attributes()] == ["channels"]
    assert pruned.blur.channels == pruned.conv.out_channels == pruned.blur.filt.shape[0] < 8
    assert model.blur.channels == 8  # the user's model is unchanged


def test_depthwise_groups_held_by_no_attribute_are_frozen() -> None:
    class Anonymous(StoredGroups):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, self.filt, groups=8)

    model = BlurNet()
    model.blur = Anonymous(8)
    del model.blur.channels  # the 8 is a literal: nothing apply could rewrite
    graph = DependencyGraph.trace(model, torch.randn(1, 3, 8, 8))
    group = next(g for g in graph.groups if "conv.weight" in {m.tensor for m in g.members})
    assert not group.prunable and any("constant groups=8" in r for r in group.reasons)


def test_parameter_meeting_fixed_positions_is_not_a_producer() -> None:
    torch.manual_seed(0)
    model, x = ParamAtFixedPositions(), torch.randn(2, 3, 7)
    pruned, graph, _ = _prune(model, x)
    assert not any(m.tensor == "A" and m.role == "producer" for g in graph.groups for m in g.members)
    assert pruned.A.shape == (6,) and pruned.mix.out_channels < 8  # the state meets fixed sizes in a matmul


class AssembledHead(nn.Module):
    """MobileBERT's LM head: ``h @ cat([embedding.weight.t(), dense.weight])``, the embedding tied to
    the input; the assembled matrix follows the cut of both parameters it is made of."""

    def __init__(self, vocab: int = 12, embed: int = 6, hidden: int = 10) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.up = nn.Linear(embed, hidden)
        self.mlp1, self.mlp2 = nn.Linear(hidden, 16), nn.Linear(16, hidden)
        self.dense = nn.Linear(vocab, hidden - embed, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.up(self.embedding(ids))
        h = h + self.mlp2(torch.relu(self.mlp1(h)))
        return h.matmul(torch.cat([self.embedding.weight.t(), self.dense.weight], dim=0))


def test_a_matrix_assembled_from_parameters_follows_their_cut() -> None:
    """The hidden channels meet the assembled matrix in a contraction (zero-safe, not a plain
    consumer): the pruned model equals the dense one whose cut hidden channels are zero."""
    torch.manual_seed(0)
    model, ids = AssembledHead().eval(), torch.randint(0, 12, (2, 5), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    hidden = [g for g in graph.groups if ("up.weight", 0) in {(m.tensor, m.axis) for m in g.members}]
    assert all(g.prunable and g.zero_exact for g in hidden)  # the embedding part and the dense part
    assert {("dense.weight", 0), ("embedding.weight", 1)} <= {(m.tensor, m.axis) for g in hidden for m in g.members}
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=ids)
    reference = mask(model, graph, plan)
    cut = [next(m.start for m in g.members if (m.tensor, m.axis) == ("up.weight", 0)) + i
           for g in hidden for i in plan.removed(g.id)]
    with torch.no_grad():  # zero the cut hidden channels where they are made
        for i in cut:
            for layer in (reference.up, reference.mlp2):
                layer.weight[i] = 0
                layer.bias[i] = 0
    assert cut and pruned.up.out_features == 10 - len(cut) and pruned.dense.out_features < 4
    torch.testing.assert_close(pruned(ids), reference(ids), rtol=1e-4, atol=1e-5)


class SplitByAnotherWidth(nn.Module):
    """FocalNet's modulation: ``q, ctx, gates = split(f(x), (C, C, 3))`` with ``C`` read from ``x``."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(4, dim)
        self.f = nn.Linear(dim, 2 * dim + 3)
        self.fc1, self.fc2 = nn.Linear(dim, 16), nn.Linear(16, dim)
        self.out, self.out2 = nn.Linear(dim, 2), nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        c = x.shape[-1]
        q, ctx, gates = torch.split(self.f(x), (c, c, 3), -1)
        y = q * ctx * gates.sum(-1, keepdim=True)
        return self.out(y) + self.out2(x + self.fc2(torch.relu(self.fc1(x))))


def test_split_sizes_read_from_another_tensor_tie_its_width_to_those_sections() -> None:
    """Each section of size ``C`` is as wide as ``x`` after pruning: both sections are cut with ``x``'s
    channels (frozen whole before, which kept FocalNet at 69 % of its params); the constant section
    of 3 gates stays."""
    torch.manual_seed(0)
    model, x = SplitByAnotherWidth(), torch.randn(2, 5, 4)
    pruned, graph, _ = _prune(model, x)
    width = next(g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert width.prunable and {m.start for m in width.members if m.tensor == "f.weight"} == {0, 8}
    assert pruned.inp.out_features == 4 and pruned.f.out_features == 4 + 4 + 3


class Experts(nn.Module):
    """JetMoE's parallel experts: one 3-d parameter ``[experts, out, in]``, ``F.linear(x, w[i])``."""

    def __init__(self, experts: int = 3, dim: int = 6, hidden: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(4, dim)
        self.up = nn.Parameter(torch.randn(experts, hidden, dim))
        self.down = nn.Parameter(torch.randn(experts, dim, hidden))
        self.out = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        y = sum(F.linear(torch.relu(F.linear(h, self.up[i])), self.down[i]) for i in range(self.up.shape[0]))
        return self.out(h + y)


def test_an_expert_slice_of_a_3d_parameter_is_cut_on_its_own_axes() -> None:
    torch.manual_seed(0)
    model, x = Experts(), torch.randn(2, 5, 4)
    pruned, graph, _ = _prune(model, x)
    hidden = next(g for g in graph.groups if ("up", 1) in {(m.tensor, m.axis) for m in g.members})
    assert {("up", 1), ("down", 2)} <= {(m.tensor, m.axis) for m in hidden.members}
    assert pruned.up.shape[0] == 3 and pruned.up.shape[1] == pruned.down.shape[2] < 8


class TwoAxesProducer(nn.Module):
    """One parameter produces channels along both axes (NeoMME's embedding projection): its columns
    are the looked-up embedding's channels, its rows a bias over the vocabulary."""

    def __init__(self, vocab: int = 10, dim: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.vec = nn.Parameter(torch.randn(dim, 1))
        self.mid = nn.Linear(dim, 8)
        self.out = nn.Linear(8, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(self.emb(ids)))) + (self.emb.weight @ self.vec).squeeze(-1)


def test_group_ids_stay_unique_when_a_parameter_produces_along_two_axes() -> None:
    torch.manual_seed(0)
    model, ids = TwoAxesProducer(), torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    assert len({g.id for g in graph.groups}) == len(graph.groups)
    assert "emb.weight[0]:0" in {g.id for g in graph.groups}
    pruned, _, _ = _prune(model, ids)
    assert pruned.mid.out_features < 8


class SoftTokens(nn.Module):
    """Ovis2's visual vocabulary: a softmax over the head's logits picks soft rows of a table (a
    matmul with it), and its last rows, the indicator tokens, are looked up by index from a stored
    vocabulary size. The head's outputs are the table's rows, and the indices name positions."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 12)
        self.table = nn.Embedding(14, 8)
        self.vocab = 14

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = torch.cat([self.head(x).softmax(-1), x.new_zeros(*x.shape[:-1], 2)], -1)
        indicators = self.table(torch.arange(self.vocab - 2, self.vocab))
        return soft @ self.table.weight + indicators.sum(0)


def test_rows_looked_up_by_index_are_not_cut_where_they_are_channels() -> None:
    """The head's outputs (the table's first 12 rows) stay whole: a cut would shift the indicator
    rows the stored indices name. Before, the head was cut and the lookup read past the table."""
    model, x = SoftTokens().eval(), torch.randn(2, 3, 8)
    graph = DependencyGraph.trace(model, x)
    rows = next(g for g in graph.groups if any(m.tensor == "head.weight" and m.axis == 0 for m in g.members))
    assert not rows.prunable and any("rows looked up by index" in r for r in rows.reasons)
    assert ("table.weight", 0) in {(m.tensor, m.axis) for m in rows.members}


class WidthScaledAttention(nn.Module):
    """A VAE / Vocos attention block: one head over all channels, scaled by ``channels ** -0.5`` read
    from the query's shape; a cut of q and k would change the scale."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv1d(3, 8, 1)
        self.q, self.k, self.v, self.out = (nn.Conv1d(8, 8, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        _, channels, _ = q.shape
        weights = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * channels ** -0.5, dim=2)
        return self.out(torch.bmm(v, weights.permute(0, 2, 1)))


class CodebookLookup(nn.Module):
    """A vector quantiser (WavTokenizer): features scored against a codebook buffer, the nearest
    codes looked up from it and decoded. The codebook's width is summed against the features."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("codebook", torch.randn(16, 6))
        self.decode = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = (x @ self.codebook.t()).argmax(-1)
        return self.decode(F.embedding(codes, self.codebook))


def test_a_scale_computed_from_the_width_keeps_those_channels() -> None:
    """q and k stay whole: the pruned model would scale its scores by its new width (the cut used
    to pass the graph and fail verification by 3e-3); v and the input width are still cut."""
    torch.manual_seed(0)
    model, x = WidthScaledAttention().eval(), torch.randn(2, 3, 5)
    graph = DependencyGraph.trace(model, x)
    qk = next(g for g in graph.groups if any(m.tensor == "q.weight" and m.axis == 0 for m in g.members))
    assert not qk.prunable and any("scale computed from the channel count" in r for r in qk.reasons)
    assert {g.modules[0] for g in graph.prunable} >= {"inp", "v"}
    apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=x)  # NOTE: verified


def test_a_codebook_summed_against_plain_features_keeps_its_width() -> None:
    """The codebook's columns meet features whose width is no channel: the decoded width stays
    whole (it used to be cut on the lookup side only, and the scoring matmul failed)."""
    model, x = CodebookLookup().eval(), torch.randn(2, 6)
    graph = DependencyGraph.trace(model, x)
    width = next(g for g in graph.groups if any(m.tensor == "codebook" and m.axis == 1 for m in g.members))
    assert not width.prunable and any("summed against a fixed-size tensor" in r for r in width.reasons)


class LearnedQuery(nn.Module):
    """A learned query scored against each position (Inkling 2's block attention residual): the
    parameter is viewed to ``(-1, C)`` with ``C`` read from the features' shape."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(3, 8), nn.Linear(8, 2)
        self.query = nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        channels = h.shape[-1]
        weights = torch.softmax(h @ self.query.view(-1, channels).t(), dim=1)  # [B, N, 1] over positions
        return self.out((weights * h).sum(1))


def test_a_parameter_viewed_to_a_width_read_from_a_shape_follows_it() -> None:
    """The query's axis is the features' channels (it was frozen: a width read from a shape used
    as a size for other data); the cut slices it with them, verified, and runs."""
    torch.manual_seed(0)
    model, x = LearnedQuery().eval(), torch.randn(2, 5, 3)
    graph = DependencyGraph.trace(model, x)
    width = next(g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members))
    assert width.prunable, width.reasons
    assert ("query", 0) in {(m.tensor, m.axis) for m in width.members}
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # NOTE: verified
    assert pruned.query.shape[0] == pruned.inp.out_features < 8
    assert pruned(x).shape == (2, 2)


class NormedScaledScores(nn.Module):
    """Position scores over normalised features, scaled by their width read from the shape
    (``h @ h.T * C ** -0.5`` after a LayerNorm): the norm already changes values when the width is
    cut, so the scale is one more such change."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.inp(x))
        channels = h.shape[-1]
        weights = torch.softmax(h @ h.transpose(1, 2) * channels ** -0.5, dim=-1)
        return self.out(weights @ h)


def test_a_scale_computed_from_a_normalised_width_lets_it_be_cut() -> None:
    """Unlike the exact attention above, whose q and k stay whole, a width whose values a norm
    changes anyway is cut (inexact, verified layer by layer)."""
    torch.manual_seed(0)
    model, x = NormedScaledScores().eval(), torch.randn(2, 5, 3)
    graph = DependencyGraph.trace(model, x)
    width = next(g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members))
    assert width.prunable and not width.exact, width.reasons
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=x)  # verified
    assert pruned.inp.out_features < 8 and pruned(x).shape == (2, 5, 2)
