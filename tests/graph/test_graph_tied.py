"""A tensor is sliced once: where two places read the same positions of one tied tensor axis, their
channels are one group (BERT's masked-LM head reads the word embeddings after its own dense layer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured import StructuredPruner
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


class TiedHead(nn.Module):
    """Embedding -> MLP -> a dense transform -> logits read with the embedding matrix (tied)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)
        self.transform = nn.Linear(16, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + self.down(F.relu(self.up(h)))
        return F.linear(F.gelu(self.transform(h)), self.embed.weight)


def _ids() -> torch.Tensor:
    return torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(0))


def test_tied_embedding_columns_join_the_transform_group() -> None:
    graph = DependencyGraph.trace(TiedHead().eval(), _ids())
    holders = [g for g in graph.groups if ("embed.weight", 1) in {(m.tensor, m.axis) for m in g.members}]
    assert len(holders) == 1, graph.summary()  # before: the stream and the transform's output, sliced twice
    (group,) = holders
    assert {"transform.weight", "down.weight", "up.weight"} <= {m.tensor for m in group.members}
    assert group.size == 16 and group.prunable and group.exact


@pytest.mark.parametrize("seed", [0, 1])
def test_tied_head_pruned_equals_masked_dense(seed: int) -> None:
    model, ids = TiedHead().eval(), _ids()
    graph = DependencyGraph.trace(model, ids)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=ids)
    assert pruned.embed.weight.shape == (30, 8) and pruned.transform.weight.shape == (8, 8)
    torch.testing.assert_close(pruned(ids), mask(model, graph, plan)(ids), rtol=1e-4, atol=1e-5)


def test_bert_masked_lm_prunes() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                     num_hidden_layers=2, vocab_size=100, max_position_embeddings=32)
    model, ids = transformers.BertForMaskedLM(config).eval(), torch.randint(0, 100, (2, 7))
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, ids)  # verified by apply
    assert pruned.cls.predictions.decoder.weight is pruned.bert.embeddings.word_embeddings.weight
    assert pruned.config.hidden_size == 32 and pruned.cls.predictions.transform.dense.weight.shape == (32, 32)
    assert pruned(ids).logits.shape == (2, 7, 100)
