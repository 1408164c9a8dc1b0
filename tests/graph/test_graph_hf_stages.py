"""Hugging Face vision models with per-stage widths: a stage with one attention head (PVT, PVT-v2,
SegFormer, GLPN view ``[B, N, C] -> [B, N, 1, C]``) is one head, not C free channels, and a width the
forward reads from a per-stage config list (``config.hidden_sizes[-1]``) is cut with that entry
rewritten. Before, both were cut and verification failed; then the list width was kept whole."""

from __future__ import annotations

import pytest
import torch

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply

transformers = pytest.importorskip("transformers")


def _pvt_v2() -> torch.nn.Module:
    config = transformers.PvtV2Config(hidden_sizes=[16, 32], num_attention_heads=[1, 2], depths=[1, 1],
                                      num_encoder_blocks=2, sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2],
                                      mlp_ratios=[2, 2], num_labels=3)
    torch.manual_seed(0)
    return transformers.PvtV2ForImageClassification(config).eval()


def test_one_head_stages_are_kept_and_a_config_list_width_follows() -> None:
    model = _pvt_v2()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, (x,))
    one_head = next(g for g in graph.groups if ("pvt_v2.encoder.layers.0.blocks.0.attention.query.weight", 0)
                    in {(m.tensor, m.axis) for m in g.members})
    assert one_head.size == 1 and {m.inner for m in one_head.by_role("producer")} == {16}
    last = next(g for g in graph.groups if "classifier.weight" in {m.tensor for m in g.members if m.axis == 1})
    assert last.prunable and [a[1:3] for a in last.size_attributes()] == [("config.hidden_sizes", 1)]
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    assert plan.ratio > 0
    pruned = apply(model, graph, plan, example_inputs=(x,))  # verified against the masked dense model
    attn = pruned.pvt_v2.encoder.layers[0].blocks[0].attention
    assert attn.num_attention_heads == 1 and attn.query.weight.shape[0] == 16
    assert pruned(x).logits.shape == (1, 3)
    assert pruned.config.hidden_sizes[-1] == pruned.classifier.in_features < 32 and model.config.hidden_sizes[-1] == 32


def test_convbert_heads_are_cut_through_its_span_conv_and_the_model_loads_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ConvBERT views its span-conv branch (data after ``F.unfold``, im2col: each channel becomes
    ``kernel`` consecutive channels) to the stored head count: with ``unfold`` followed, the heads
    are cut whole through it; and a config whose ``embedding_size`` and ``hidden_size`` would no
    longer be equal would build an extra ``embeddings_project``: ``prunekit.load`` rebuilds the model."""
    import prunekit

    config = transformers.ConvBertConfig(vocab_size=50, hidden_size=32, embedding_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.ConvBertForMaskedLM(config).eval()
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, (ids,))
    query = next(g for g in graph.groups if ("convbert.encoder.layer.0.attention.self.query.weight", 0)
                 in {(m.tensor, m.axis) for m in g.members})
    assert query.prunable and query.size == 2  # the 4 heads are split 2 + 2 (head_ratio 2) with the span conv
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(ids,))  # verified
    assert pruned.convbert.encoder.layer[0].intermediate.dense.out_features < 64
    assert pruned.convbert.encoder.layer[0].attention.self.num_attention_heads < 2
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, pruned(ids).logits, rtol=1e-4, atol=1e-5)
