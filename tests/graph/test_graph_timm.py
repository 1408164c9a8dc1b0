"""timm vision transformers: whole heads are cut where the attention forward reads its stored head
count (timm's ``Attention``: ViT, DeiT, ...), ``num_heads`` / ``attn_dim`` follow, ``head_dim`` and
the per-head ``scale`` stay, and the pruned model equals the masked dense one."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.importance.magnitude import random
from prunekit.structured import StructuredPruner
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

timm = pytest.importorskip("timm")


def _vit(name: str = "vit_tiny_patch16_224", **overrides: Any) -> nn.Module:
    """A random 2-block ViT on 32x32 inputs (3 heads of 64 for vit_tiny)."""
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, img_size=32, depth=2, **overrides).eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_timm_attention_heads_are_one_prunable_exact_group() -> None:
    graph = DependencyGraph.trace(_vit(), _x())
    heads = graph.group("blocks.0.attn.qkv.weight:0")
    assert heads.size == 3 and heads.exact and heads.prunable
    rows = sorted((m.tensor.removeprefix("blocks.0.attn."), m.axis, m.start, m.inner)
                  for m in heads.members if m.tensor.endswith("weight"))  # head h: 64 rows of each of q, k, v
    assert rows == [("proj.weight", 1, 0, 64)] + [("qkv.weight", 0, s, 64) for s in (0, 192, 384)]


@pytest.mark.parametrize("overrides", [{}, {"qk_norm": True}, {"class_token": False, "global_pool": "avg"},
                                       {"reg_tokens": 2}])
def test_heads_pruned_equal_masked_dense(overrides: dict[str, Any]) -> None:
    model, x = _vit(**overrides), _x()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=1) for g in graph.prunable if g.exact}, 0.5)
    assert plan.removed("blocks.1.attn.qkv.weight:0")
    pruned = apply(model, graph, plan, example_inputs=x)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


def test_pruner_cuts_heads_and_the_attributes_follow() -> None:
    model = _vit()
    pruned = StructuredPruner({"ratio": 0.5}, ignore=["head"]).fit_transform(model, _x())  # verified by apply
    for block in pruned.blocks:
        attn = block.attn
        heads = attn.qkv.weight.shape[0] // 3 // 64
        assert heads < 3 and attn.num_heads == heads and attn.attn_dim == heads * 64
        assert attn.head_dim == 64 and attn.scale == 64 ** -0.5 and attn.proj.weight.shape[1] == heads * 64
    assert model.blocks[0].attn.num_heads == 3  # the input is untouched
    assert pruned(_x()).shape == (2, 10)


def test_an_unlisted_timm_attention_class_is_cut_by_head_with_its_relative_position_bias() -> None:
    """ViT-RelPos's attention is in no list: recognised by its shape (``num_heads``, ``qkv``, ``scale``),
    its heads are cut with the input width; the RelPosMlp's per-head outputs, ``num_heads`` and
    ``bias_shape`` follow (its ``view(-1, self.num_heads)`` runs inside the attention's forward)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_relpos_small_patch16_224", pretrained=False, num_classes=10, img_size=32, depth=1,
                              embed_dim=64, num_heads=4).eval()
    graph = DependencyGraph.trace(model, _x())
    heads = next(g for g in graph.groups if ("blocks.0.attn.qkv.weight", 0) in {(m.tensor, m.axis) for m in g.members})
    assert heads.prunable and heads.size == 4, heads.reasons
    assert "blocks.0.attn.rel_pos.mlp.fc2.weight" in {m.tensor for m in heads.members}
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(_x(),))  # verified (heads meet LayerNorms: inexact)
    attn = pruned.blocks[0].attn
    assert attn.num_heads == attn.rel_pos.num_heads == 2 and attn.rel_pos.bias_shape[-1] == 2
    assert attn.qkv.weight.shape == (96, 32) and model.blocks[0].attn.num_heads == 4
    assert pruned(_x()).shape == (2, 10)


def test_heads_tied_to_the_input_width_are_cut_with_it() -> None:
    """PVT-v2's attention reads ``B, N, C = x.shape`` and reshapes its output to ``C``: heads are cut
    together with the stage width (in units of a head), and ``num_heads`` follows."""
    torch.manual_seed(0)
    model = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, x)
    heads = next(g for g in graph.groups if ("stages.1.blocks.0.attn.q.weight", 0) in
                 {(m.tensor, m.axis) for m in g.members})  # one group with the stage's width
    assert heads.prunable and heads.size == 2  # stage 1: 64 channels, 2 heads of 32
    assert any(m.tensor == "stages.1.blocks.0.norm1.weight" for m in heads.members)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)  # verified by apply
    attn = pruned.stages[1].blocks[0].attn
    assert attn.num_heads == 1 and attn.q.weight.shape == (32, 32) and attn.head_dim == 32
    assert pruned(x).shape == (1, 10)


class _RmsNormed(nn.Module):
    """A width normalised by torch's nn.RMSNorm and by timm's RmsNorm and SimpleNorm, which are no
    nn.LayerNorm but pass their stored normalized_shape to F.rms_norm (Gemma 4's and DeepSeek's ViTs)."""

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import RmsNorm, SimpleNorm

        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)
        self.norms = nn.Sequential(nn.RMSNorm(8), RmsNorm(8), SimpleNorm(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.norms(self.a(x)))


def test_rms_norms_follow_the_cut_width() -> None:
    """Each norm's normalized_shape follows its weight (it stayed 8 against a weight of 4, so the
    pruned model failed and the width was kept whole by the fallback)."""
    model, x = _RmsNormed().eval(), torch.randn(2, 4)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)
    assert [tuple(n.normalized_shape) for n in pruned.norms] == [(4,)] * 3
    assert pruned.a.out_features == 4
