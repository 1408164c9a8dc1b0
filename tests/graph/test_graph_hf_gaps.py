"""Attention heads and widths that Hugging Face models hid from the graph (issue 19, coverage gap):
a mask broadcast to the heads by ``expand_as``, a uniform tensor sized by a head count read from a
shape, a parameter viewed into heads, a LayerNorm without affine weight whose ``normalized_shape``
is a module attribute, and GPT-1 / ImageGPT's fused q|k|v split at a stored size. Each kept its
heads (or width) whole before the fix; now they are cut and the pruned model equals the masked one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.graph.groups import ChannelGroup
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class _Heads(nn.Module):
    """Attention of 2 heads of 4 over a width of 8, with the scores handed to ``scores_hook``."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.d = dim // heads
        self.inp = nn.Linear(3, dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.out = nn.Linear(dim, 2)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], -1, self.d).transpose(1, 2)  # [B, H, T, d]

    def scores_hook(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = self.scores_hook(q @ k.transpose(-1, -2) / self.d ** 0.5, q, k)
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.out(self.o(o) + x)


class MaskExpandedToScores(_Heads):
    """XLM / FlauBERT: ``mask.view(B, 1, 1, T).expand_as(scores)`` then ``scores.masked_fill_``;
    the expanded mask is as wide as the heads it is applied to."""

    def scores_hook(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(scores.shape[0], scores.shape[-1], dtype=torch.long)
        keep[:, -1] = 0
        m = (keep == 0).view(scores.shape[0], 1, 1, -1).expand_as(scores)
        return scores.masked_fill_(m, -1e4)


class ZerosSizedByHeads(_Heads):
    """GPT-NeoX-Japanese: ``torch.zeros(B * heads, q, k)`` with ``heads`` read from ``q.size()``,
    then ``torch.baddbmm(zeros, q, k^T)``."""

    def scores_hook(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        b, h, t, d = q.size()
        base = torch.zeros(b * h, t, k.size(-2), dtype=q.dtype)
        out = torch.baddbmm(base, q.reshape(b * h, t, d), k.flatten(0, 1).transpose(1, 2), alpha=d ** -0.5)
        return out.view(b, h, t, -1)


class ParameterViewedIntoHeads(_Heads):
    """Dory: a per-channel query scale viewed into heads, ``q * self.sqk.view(-1, 1, d)``."""

    def __init__(self) -> None:
        super().__init__()
        self.sqk = nn.Parameter(torch.rand(8) + 0.5)

    def scores_hook(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q = q * self.sqk.view(-1, 1, self.d)
        return q @ k.transpose(-1, -2) / self.d ** 0.5


class FoldedByTheQueryHeads(_Heads):
    """YOSO: ``k.reshape(B * heads, T, d)`` with ``heads`` read from ``q.size()``, and the mask
    ``mask.unsqueeze(1).repeat_interleave(heads, dim=1).reshape(B * heads, T).int()``."""

    def scores_hook(self, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        b, h, t, d = q.size()
        keep = torch.ones(b, t)
        keep[:, -1] = 0
        m = keep.unsqueeze(1).repeat_interleave(h, dim=1).reshape(b * h, t).int()
        s = q.reshape(b * h, t, d) @ k.reshape(b * h, t, d).transpose(1, 2) / d ** 0.5
        return (s - 1e4 * (1 - m[:, None, :])).view(b, h, t, t)


class FoldedByAnotherWidth(nn.Module):
    """MobileViT's folding: features unfolded to tokens, mixed by a Linear (new channels), folded
    back with ``reshape(B * C, H, W)``, ``C`` read from the features before the Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        b, c, h, w = f.shape
        tokens = self.mix(f.reshape(b, c, h * w).transpose(1, 2))  # [B, HW, C]
        folded = tokens.transpose(1, 2).reshape(b * c, h, w)
        return self.head(folded.view(b, -1, h, w))


class CachedDepthwise(nn.Module):
    """LFM's short conv: a state sized by the width read from the input (``torch.zeros(B, C, 2)``)
    is written with ``copy_``, and the depthwise weight is viewed ``squeeze(1)`` .. ``unsqueeze(1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.conv = nn.Conv1d(8, 8, 3, groups=8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x).transpose(1, 2)  # [B, C, T]
        b, c, t = h.shape
        state = torch.zeros(b, c, 2)
        state.copy_(h[:, :, :2])
        weight = self.conv.weight.squeeze(1)
        y = F.conv1d(torch.cat([state, h], -1), weight.unsqueeze(1), self.conv.bias, groups=c)
        return self.out(y[:, :, -t:].transpose(1, 2))


class _CheckedEmbed(nn.Module):
    """PVT's patch embedding: ``if num_channels != self.num_channels: raise ValueError``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.num_channels = channels
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_channels:
            raise ValueError("the channels of the input do not match the configuration")
        return self.proj(x)


class CheckedWidth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.embed = _CheckedEmbed(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embed(torch.relu(self.stem(x)))))


class PositionTables(nn.Module):
    """Sinusoidal position tables (non-persistent buffers) read by position ids: CTRL's
    ``table[ids, :]`` and XGLM's ``weights.index_select(0, ids).view(B, T, self.weights.shape[-1])``,
    in a module where two attributes hold the width too (XGLM's ``num_positions``, ``embedding_dim``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.register_buffer("table", torch.randn(6, 8), persistent=False)
        self.register_buffer("weights", torch.randn(6, 8), persistent=False)
        self.num_positions, self.embedding_dim = 8, 8
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        pos = torch.arange(t).unsqueeze(0).expand(b, t)
        h = self.emb(ids) + self.table[pos, :]
        h = h + self.weights.index_select(0, pos.reshape(-1)).view(b, t, self.weights.shape[-1])
        return self.out(h + self.fc2(torch.relu(self.fc1(h))))


class _StageConfig:
    """A config with a width per stage (a Hugging Face vision config's ``hidden_sizes``)."""

    def __init__(self) -> None:
        self.hidden_sizes = [4, 8]

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


class ViewToAStageWidth(nn.Module):
    """SegFormer / PVT-v2: ``reshape(B, -1, self.config.hidden_sizes[-1])`` in the root module."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _StageConfig()
        self.stem, self.down = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 8, 1)
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.relu(self.stem(x)))
        tokens = h.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.config.hidden_sizes[-1])
        return self.classifier(tokens.mean(1))


class GroupedExperts(nn.Module):
    """Mixtral-style experts (transformers' ``grouped_mm_experts_forward``): rows sorted by expert,
    ``torch._grouped_mm(x, w.transpose(-2, -1), offs)`` with 3-d weights [experts, out, in]."""

    def __init__(self, experts: int = 2, dim: int = 8, inner: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(3, dim)
        self.up = nn.Parameter(torch.randn(experts, inner, dim) * 0.3)
        self.down = nn.Parameter(torch.randn(experts, dim, inner) * 0.3)
        self.out = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        offs = torch.tensor([x.shape[0] // 2, x.shape[0]], dtype=torch.int32)
        a = torch.relu(torch._grouped_mm(h, self.up.transpose(-2, -1), offs=offs))
        return self.out(h + torch._grouped_mm(a, self.down.transpose(-2, -1), offs=offs))


class ExpertsAddedBack(nn.Module):
    """JetMoE / OpenAI privacy filter: expert outputs added back to their tokens with
    ``zeros(T, C).index_add(0, token_ids, expert_out)``, ``C`` read from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.expert = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # [T, C]
        ids = torch.arange(h.shape[0]).flip(0)
        y = torch.zeros(h.shape[0], h.shape[1]).index_add(0, ids, self.expert(h[ids]))
        return self.out(h + y)


class _StoredWidthExperts(nn.Module):
    """JetMoE's ``torch.zeros((B * T, self.input_size)).index_add(0, ids, out)``: the width is an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.input_size = 8
        self.expert, self.router = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(h.shape[0]).flip(0)
        gate = torch.softmax(self.router(h), -1).type_as(h)  # NOTE: type_as lends a dtype, not positions
        return torch.zeros((h.shape[0], self.input_size)).index_add(0, ids, self.expert(h[ids]) * gate[:, :1])


class StoredWidthExperts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.moe = _StoredWidthExperts()
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.moe(h))


class InterleavedGLU(nn.Module):
    """GPT-OSS's experts: ``gate, up = gate_up[..., ::2], gate_up[..., 1::2]``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.gate_up, self.down = nn.Linear(8, 32), nn.Linear(16, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        gu = self.gate_up(h)
        gate, up = gu[..., ::2], gu[..., 1::2]
        return self.out(h + self.down(F.silu(gate) * up))


class GateViewedAsHeads(_Heads):
    """Beam: ``gate = self.g(x).view_as(o) + self.gate_bias[None, None, :, None]``, ``o`` [B, T, H, d]."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Linear(8, 8)
        self.gate_bias = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        o = ((q @ k.transpose(-1, -2) / self.d ** 0.5).softmax(-1) @ v).transpose(1, 2)  # [B, T, H, d]
        gate = self.g(x).view_as(o) + self.gate_bias[None, None, :, None]
        o = (o * torch.sigmoid(gate)).reshape(x.shape[0], x.shape[1], -1)
        return self.out(self.o(o) + x)


class NoAffineNorm(nn.Module):
    """OLMo's LayerNorm: no weight, ``F.layer_norm(x, self.normalized_shape, None, None)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.normalized_shape = (width,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, eps=1e-5)


class NoAffineNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.norm = NoAffineNorm(8)
        self.torch_norm = nn.LayerNorm(8, elementwise_affine=False)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = x + self.fc2(torch.relu(self.fc1(self.norm(x))))
        return self.out(self.torch_norm(x))


def _prune(model: nn.Module, x: torch.Tensor, *, exact: bool = True) -> tuple[nn.Module, DependencyGraph]:
    """Pruned at 0.5 with verification; where every cut is exact, the output equals the masked model's."""
    torch.manual_seed(0)
    model.eval()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # verifies (by value where a norm mixes)
    if exact:
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return pruned, graph


def _group_of(graph: DependencyGraph, tensor: str) -> ChannelGroup:
    return next(g for g in graph.groups if (tensor, 0) in {(m.tensor, m.axis) for m in g.members})


@pytest.mark.parametrize("klass", [MaskExpandedToScores, ZerosSizedByHeads, ParameterViewedIntoHeads,
                                   GateViewedAsHeads])
def test_heads_are_cut_through_a_broadcast_a_sized_tensor_and_a_viewed_parameter(klass: type) -> None:
    torch.manual_seed(0)
    model, x = klass(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x)
    heads = _group_of(graph, "q.weight")
    assert heads.prunable, heads.reasons
    assert {m.inner for m in heads.members if m.tensor == "q.weight"} == {4}  # whole heads of 4
    assert pruned.q.out_features == pruned.k.out_features == pruned.v.out_features == 4
    if klass is ParameterViewedIntoHeads:
        assert pruned.sqk.shape == (4,)  # sliced with the heads it scales
    if klass is GateViewedAsHeads:
        assert pruned.g.out_features == 4 and pruned.gate_bias.shape == (1,)  # one gate bias per head


def test_a_view_sized_by_another_tensors_heads_ties_the_two() -> None:
    torch.manual_seed(0)
    model, x = FoldedByTheQueryHeads(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x)
    heads = _group_of(graph, "q.weight")
    assert heads.prunable and ("k.weight", 0) in {(m.tensor, m.axis) for m in heads.members}  # cut together
    assert pruned.q.out_features == pruned.k.out_features == 4


def test_a_fold_sized_by_another_width_ties_the_two() -> None:
    torch.manual_seed(0)
    model, x = FoldedByAnotherWidth(), torch.randn(2, 3, 4, 4)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "conv.weight")
    assert width.prunable, width.reasons
    assert ("mix.weight", 0) in {(m.tensor, m.axis) for m in width.members}  # the folded tokens: the same cut
    assert pruned.conv.out_channels == pruned.mix.out_features == pruned.head.in_channels == 4


def test_a_state_sized_by_a_width_and_a_viewed_depthwise_weight_follow_the_cut() -> None:
    torch.manual_seed(0)
    model, x = CachedDepthwise(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "inp.weight")
    assert width.prunable, width.reasons
    assert pruned.inp.out_features == pruned.conv.out_channels == pruned.conv.groups == 4


def test_a_width_checked_against_a_stored_count_rewrites_the_count() -> None:
    torch.manual_seed(0)
    model, x = CheckedWidth(), torch.randn(2, 3, 4, 4)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "stem.weight")
    assert width.prunable, width.reasons
    assert {a[1] for a in width.size_attributes()} == {"num_channels"}
    assert pruned.embed.num_channels == pruned.stem.out_channels == 4 and model.embed.num_channels == 8


def test_position_tables_read_by_ids_are_sliced_with_the_width() -> None:
    torch.manual_seed(0)
    model, ids = PositionTables(), torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(0))
    pruned, graph = _prune(model, ids)
    width = next(g for g in graph.groups if ("emb.weight", 1) in {(m.tensor, m.axis) for m in g.members})
    assert width.prunable, width.reasons
    assert pruned.table.shape == pruned.weights.shape == (6, 4) and pruned.emb.weight.shape == (10, 4)


def test_a_view_to_a_per_stage_config_width_rewrites_that_entry() -> None:
    torch.manual_seed(0)
    model, x = ViewToAStageWidth(), torch.randn(2, 3, 4, 4)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "down.weight")
    assert width.prunable, width.reasons
    assert pruned.config.hidden_sizes[-1] == pruned.down.out_channels == 4  # the entry the forward reads
    assert model.config.hidden_sizes == [4, 8] and all(type(v) is int for v in model.config.hidden_sizes)


def test_experts_multiplied_by_grouped_mm_are_cut_for_every_expert() -> None:
    torch.manual_seed(0)
    model, x = GroupedExperts(), torch.randn(6, 3)
    pruned, graph = _prune(model, x)
    inner = next(g for g in graph.groups if ("up", 1) in {(m.tensor, m.axis) for m in g.members})
    assert inner.prunable and ("down", 2) in {(m.tensor, m.axis) for m in inner.members}
    assert pruned.up.shape == (2, 8, 4) and pruned.down.shape == (2, 4, 8)  # experts kept, widths halved


def test_outputs_added_back_to_their_rows_keep_their_channels() -> None:
    torch.manual_seed(0)
    model, x = ExpertsAddedBack(), torch.randn(6, 3)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "inp.weight")
    assert width.prunable and ("expert.weight", 0) in {(m.tensor, m.axis) for m in width.members}
    assert pruned.inp.out_features == pruned.expert.out_features == 4


def test_a_uniform_tensor_sized_by_a_stored_width_rewrites_it() -> None:
    torch.manual_seed(0)
    model, x = StoredWidthExperts(), torch.randn(6, 3)
    pruned, graph = _prune(model, x)
    width = _group_of(graph, "inp.weight")
    assert width.prunable and ("moe.expert.weight", 0) in {(m.tensor, m.axis) for m in width.members}
    assert {a[1] for a in width.size_attributes()} == {"input_size"}
    assert pruned.moe.input_size == pruned.moe.expert.out_features < 8 and model.moe.input_size == 8


def test_interleaved_gate_and_up_are_cut_in_pairs() -> None:
    torch.manual_seed(0)
    model, x = InterleavedGLU(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x)
    inner = _group_of(graph, "gate_up.weight")
    assert inner.prunable and {m.inner for m in inner.members if m.tensor == "gate_up.weight"} == {2}
    assert pruned.gate_up.out_features == 16 and pruned.down.in_features == 8


def _transformers_module(**children: nn.Module) -> nn.Module:
    """A module that looks like a transformers class (its ``__module__``), with int attributes."""
    klass = type("Mixer", (nn.Module,), {"__module__": "transformers.models.fake.modeling_fake"})
    module = klass()
    for name, child in children.items():
        module.add_module(name, child)
    return module


def test_a_fused_in_proj_is_attention_only_when_it_holds_q_k_and_v() -> None:
    """DeBERTa's ``in_proj`` is 3 x heads x head_dim rows; a Mamba-2 mixer's ``in_proj`` (with its own
    ``num_heads`` and ``head_dim``) is not attention: refreshing its head count broke Falcon-H1."""
    from prunekit.graph.handlers.hf_modules import is_attention

    deberta = _transformers_module(in_proj=nn.Linear(8, 24))
    deberta.num_attention_heads, deberta.attention_head_size = 2, 4
    mamba = _transformers_module(in_proj=nn.Linear(8, 42))
    mamba.num_heads, mamba.head_dim = 2, 4
    assert is_attention(deberta) and not is_attention(mamba)


def test_a_layer_norm_without_weight_shrinks_its_stored_shape() -> None:
    torch.manual_seed(0)
    model, x = NoAffineNormNet(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x, exact=False)
    width = _group_of(graph, "inp.weight")
    assert width.prunable and not width.exact  # the statistics change: checked by value
    assert {a[1] for a in width.size_attributes()} == {"normalized_shape"}
    assert pruned.norm.normalized_shape == pruned.torch_norm.normalized_shape == (pruned.inp.out_features,)
    assert pruned.inp.out_features < 8 and model.norm.normalized_shape == (8,)  # the user's model is unchanged
    with torch.no_grad():  # the stored shape is what the forward normalises over: the kept width
        h = pruned.norm(pruned.inp(x))
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


def test_a_stored_norm_shape_held_twice_stays_frozen() -> None:
    model = NoAffineNormNet()
    model.norm.other = (8,)  # which attribute the forward reads is unknown
    graph = DependencyGraph.trace(model.eval(), torch.randn(2, 5, 3))
    width = _group_of(graph, "inp.weight")
    assert not width.prunable and any("without affine weight" in r for r in width.reasons)


class AdaptiveNorm(nn.Module):
    """WavTokenizer's adaptive LayerNorm: ``F.layer_norm(x, (self.dim,))``, then a scale and a shift
    looked up per condition (an int attribute, the shape built around it at each call)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dim = width
        self.scale, self.shift = nn.Embedding(2, width), nn.Embedding(2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        condition = torch.zeros(x.shape[:-1], dtype=torch.long)
        return F.layer_norm(x, (self.dim,), eps=1e-5) * self.scale(condition) + self.shift(condition)


def test_a_layer_norm_over_a_stored_int_shrinks_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), AdaptiveNorm(8), nn.Linear(8, 2))
    x = torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x, exact=False)
    width = _group_of(graph, "0.weight")
    assert width.prunable and not width.exact, width.reasons
    assert pruned[1].dim == pruned[0].out_features < 8 and model[1].dim == 8
    with torch.no_grad():
        h = F.layer_norm(pruned[0](x), (pruned[1].dim,))
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


transformers = pytest.importorskip("transformers")


def _gpt1_like() -> list[tuple[type, object]]:
    t = transformers
    small = {"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}
    return [(t.OpenAIGPTLMHeadModel, t.OpenAIGPTConfig(**small)),
            (t.ImageGPTForCausalImageModeling, t.ImageGPTConfig(**small))]


@pytest.mark.parametrize("index", [0, 1], ids=["openai-gpt", "imagegpt"])
def test_fused_qkv_split_at_a_stored_size_is_cut_in_heads(index: int, tmp_path: Path) -> None:
    """OpenAI GPT and ImageGPT split ``c_attn`` at ``self.split_size`` (GPT-2's code, copied; GPT-1
    stores no head size): the heads are cut alike in q, k and v, and the config rebuilds the model."""
    import prunekit.hf

    klass, config = _gpt1_like()[index]
    torch.manual_seed(0)
    model = klass(config).eval()
    ids = torch.randint(1, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    qkv = next(g for g in graph.groups if ("transformer.h.0.attn.c_attn.weight", 1) in
               {(m.tensor, m.axis) for m in g.members})
    assert qkv.prunable, qkv.reasons
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(ids,))
    attn = pruned.transformer.h[0].attn
    assert attn.c_attn.weight.shape == (16, 48) and attn.split_size == 16
    assert (attn.n_head if hasattr(attn, "n_head") else attn.num_heads) == 2
    assert pruned.config.n_head == 2
    with torch.no_grad():  # (the hidden width passes LayerNorms: apply checked the values it must keep)
        want = pruned(ids).logits
    pruned.save_pretrained(tmp_path)
    theirs = klass.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, want, rtol=1e-4, atol=1e-5)
    assert prunekit.hf.reference(pruned).transformer.h[0].attn.c_attn.weight.shape == (16, 48)


def _named_attention() -> dict[str, tuple[type, object, str]]:
    t = transformers
    bert_like = {"vocab_size": 50, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
                 "num_hidden_layers": 2, "max_position_embeddings": 16}
    return {
        "deberta": (t.DebertaForMaskedLM, t.DebertaConfig(**bert_like), "deberta.encoder.layer.0.attention.self"),
        "deberta-v2": (t.DebertaV2ForMaskedLM, t.DebertaV2Config(**bert_like),
                       "deberta.encoder.layer.0.attention.self"),
        "cpmant": (t.CpmAntForCausalLM, t.CpmAntConfig(vocab_size=128, hidden_size=32, num_attention_heads=4,
                                                       dim_head=8, dim_ff=64, num_hidden_layers=2,
                                                       position_bias_num_buckets=32, position_bias_max_distance=64),
                   "cpmant.encoder.layers.0.self_att.self_attention"),
    }


@pytest.mark.parametrize("name", ["deberta", "deberta-v2", "cpmant"])
def test_attention_named_in_proj_query_proj_or_project_q_is_cut_in_heads(name: str) -> None:
    """DeBERTa's fused ``in_proj``, DeBERTa-v2's ``query_proj`` and CPM-Ant's ``project_q`` with
    ``dim_head`` are attention modules: their stored head count follows the cut."""
    klass, config, path = _named_attention()[name]
    torch.manual_seed(0)
    model = klass(config).eval()
    ids = torch.randint(1, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(ids,))  # verified
    attn = pruned.get_submodule(path)
    heads = next(vars(attn)[n] for n in ("num_attention_heads", "num_heads") if n in vars(attn))
    assert heads == 2
    with torch.no_grad():
        assert pruned(ids).logits.shape == model(ids).logits.shape


def test_a_position_bias_sized_by_the_stored_head_count_follows_the_heads(tmp_path: Path) -> None:
    """T5's cross-attention adds ``torch.zeros((1, self.n_heads, q, k))`` to its scores; the refresh
    keeps ``n_heads``, so those heads are cut too and transformers rebuilds the model."""
    t = transformers
    config = t.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=1, num_decoder_layers=1)
    torch.manual_seed(0)
    model = t.T5ForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids, dec = torch.randint(1, 50, (1, 8), generator=gen), torch.randint(1, 50, (1, 5), generator=gen)
    graph = DependencyGraph.trace(model, (ids, None, dec))
    cross = _group_of(graph, "decoder.block.0.layer.1.EncDecAttention.q.weight")
    assert cross.prunable, cross.reasons
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(ids, None, dec))
    assert pruned.decoder.block[0].layer[1].EncDecAttention.n_heads == 2
    pruned.save_pretrained(tmp_path)
    theirs = t.T5ForConditionalGeneration.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids, decoder_input_ids=dec).logits,
                                   pruned(ids, decoder_input_ids=dec).logits, rtol=1e-4, atol=1e-5)


class SharedProjectionOnZeros(nn.Module):
    """Zaya's delayed value: ``self.v(x)`` and ``self.v(x.new_zeros(B, 1, 8))`` (Zaya's ``8`` is its
    ``self.hidden_size``, which the config refresh may not follow): the projection also reads data of
    a fixed width, so its input columns (the residual) keep their width."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.v, self.out = nn.Linear(3, 8), nn.Linear(8, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        start = self.v(h.new_zeros(h.shape[0], 1, 8))
        return self.out(torch.cat([start, self.v(h)[:, :-1]], dim=1))


def test_a_weight_that_also_reads_fixed_width_data_keeps_its_columns() -> None:
    torch.manual_seed(0)
    model, x = SharedProjectionOnZeros(), torch.randn(2, 5, 3)
    pruned, graph = _prune(model, x)  # verified: cutting the columns broke the zeros' matmul
    width = _group_of(graph, "inp.weight")
    assert not width.prunable and any("fixed width" in r for r in width.reasons)
    assert pruned.v.in_features == 8


@pytest.mark.parametrize("arch", [{"multi_query": True}, {"new_decoder_architecture": True, "num_kv_heads": 2}])
def test_falcon_keeps_its_head_counts_when_only_the_width_is_cut(arch: dict) -> None:
    """Falcon's one fused projection holds H query and KV key and value heads ((H + 2 KV) heads of
    rows), not three equal thirds: once its ``x @ weight.T`` is followed, the residual width is cut
    too, and the head counts must not be read as a third of the rows."""
    transformers = pytest.importorskip("transformers")
    config = transformers.FalconConfig(vocab_size=50, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                       **arch)
    torch.manual_seed(0)
    model = transformers.FalconForCausalLM(config).eval()
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, (ids,))
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(ids,))  # verified
    attention = pruned.transformer.h[0].self_attention
    rows = attention.query_key_value.weight.shape[0]
    assert rows == (attention.num_heads + 2 * attention.num_kv_heads) * attention.head_dim
    if arch.get("multi_query"):  # NOTE: one key/value head: the query heads are cut one by one, it stays
        assert (attention.num_heads, attention.num_kv_heads, attention.num_key_value_groups) == (2, 1, 2)
    else:  # NOTE: key/value groups are cut whole, each with its query heads
        assert attention.num_heads == 2 * attention.num_kv_heads
    assert pruned.transformer.word_embeddings.embedding_dim < 64
    assert pruned(ids).logits.shape == (1, 8, 50)
