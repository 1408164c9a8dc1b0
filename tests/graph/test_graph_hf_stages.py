"""Hugging Face vision models with per-stage widths: a stage with one attention head (PVT, PVT-v2,
SegFormer, GLPN view ``[B, N, C] -> [B, N, 1, C]``) is one head, not C free channels, and a width the
forward reads from a per-stage config list (``config.hidden_sizes[-1]``) is not cut. Before, both
were cut and verification failed."""

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


def test_one_head_stages_and_a_config_list_width_are_kept() -> None:
    model = _pvt_v2()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, (x,))
    one_head = next(g for g in graph.groups if ("pvt_v2.encoder.layers.0.blocks.0.attention.query.weight", 0)
                    in {(m.tensor, m.axis) for m in g.members})
    assert one_head.size == 1 and {m.inner for m in one_head.by_role("producer")} == {16}
    last = next(g for g in graph.groups if "classifier.weight" in {m.tensor for m in g.members if m.axis == 1})
    assert not last.prunable and any("constant size 32" in r for r in last.reasons)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    assert plan.ratio > 0
    pruned = apply(model, graph, plan, example_inputs=(x,))  # verified against the masked dense model
    attn = pruned.pvt_v2.encoder.layers[0].blocks[0].attention
    assert attn.num_attention_heads == 1 and attn.query.weight.shape[0] == 16
    assert pruned(x).logits.shape == (1, 3)
