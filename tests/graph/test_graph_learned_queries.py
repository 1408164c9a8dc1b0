"""A parameter given to a layer as its input (DETR's learned queries, a Perceiver's latents): its axis
and the columns reading it hold the same positions, so they are cut together with the channels the
parameter meets later (a residual add), never one without the other."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured import StructuredPruner
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


class QueryDecoder(nn.Module):
    """DETR's pattern: features from a conv, learned queries repeated over the batch and decoded
    against them by torch's own (sequence-first) decoder layer."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 16, 3, 2, 1)
        self.query = nn.Embedding(5, 16)
        self.decoder = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backbone(x).flatten(2).permute(2, 0, 1)
        queries = self.query.weight.unsqueeze(1).repeat(1, x.shape[0], 1)
        return self.head(self.decoder(queries, memory))


class LatentProjection(nn.Module):
    """A latent array read by a linear layer, then added to projected tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(4, 12))
        self.mix = nn.Linear(12, 12)
        self.tokens = nn.Linear(6, 12)
        self.head = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latent = self.mix(self.latents)  # (4, 12): the parameter itself is the linear layer's input
        return self.head((self.tokens(x).mean(1, keepdim=True) + self.latents + latent).mean(1))


def _example(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_learned_queries_join_the_stream_they_are_added_to() -> None:
    model, x = QueryDecoder().eval(), _example((1, 3, 8, 8))
    graph = DependencyGraph.trace(model, x)
    (stream,) = [g for g in graph.groups if ("query.weight", 1) in {(m.tensor, m.axis) for m in g.members}]
    readers = {(m.tensor, m.axis) for m in stream.by_role("consumer")}
    # NOTE: before, the self-attention's in_proj columns that read the queries were in no group
    assert ("decoder.self_attn.in_proj_weight", 1) in readers
    assert ("decoder.multihead_attn.in_proj_weight", 1) in readers
    assert stream.prunable and stream.size == 16


@pytest.mark.parametrize("seed", [0, 1])
def test_learned_queries_cut_passes_verification(seed: int) -> None:
    # NOTE: the decoder's LayerNorms mix the stream, so the check is verification's (each layer fed
    # what the masked model fed it answers the same), not the whole output against the masked model
    model, x = QueryDecoder().eval(), _example((1, 3, 8, 8))
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x, verify_result=True)
    assert pruned.query.weight.shape == (5, 8) and pruned.backbone.out_channels == 8
    assert pruned.decoder.self_attn.in_proj_weight.shape[1] == 8
    assert pruned(_example((2, 3, 12, 8))).shape == (5, 2, 3)


def test_learned_queries_heads_pruned_equals_masked() -> None:
    model, x = QueryDecoder().eval(), _example((1, 3, 8, 8))
    graph = DependencyGraph.trace(model, x)
    scores = {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}
    plan = allocate(graph, scores, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


def test_a_parameter_read_by_a_linear_layer_is_cut_with_its_columns() -> None:
    model, x = LatentProjection().eval(), _example((2, 7, 6))
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)
    assert pruned.latents.shape[1] == pruned.mix.in_features == pruned.tokens.out_features == 6
    assert pruned(_example((3, 5, 6))).shape == (3, 2)


class RelativeTable(nn.Module):
    """DeBERTa-v2's relative positions: a table normalised by the encoder's LayerNorm, then read by
    the same query projection as the hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.rel = nn.Embedding(9, 16)
        self.rel_norm = nn.LayerNorm(16)
        self.query = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        positions = self.query(self.rel_norm(self.rel.weight))  # (9, 16)
        scores = self.query(h) @ positions.t()  # (B, N, 9)
        return self.head(h + scores.softmax(-1) @ positions)[:, 0]


def test_a_normalised_parameter_is_cut_with_its_norm() -> None:
    model = RelativeTable().eval()
    ids = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NOTE: a group kept whole after verification would warn
        pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, ids)
    assert pruned.rel.weight.shape[1] == pruned.rel_norm.weight.shape[0] == pruned.query.in_features == 8
    assert pruned(torch.randint(0, 20, (3, 4))).shape == (3, 2)
