"""Mamba-2 heads (Mamba-2, Codestral Mamba, and the hybrids that copy its mixer: Bamba, Nemotron-H,
Zamba2, Falcon-H1, Granite 4.0): the mixer splits ``in_proj``'s rows into z | x,B,C | dt, splits the
conv's channels again into x | B | C, views x in heads and repeats each B/C group over its heads
(``repeat_interleave(num_heads // n_groups)``), all inside kernel wrappers (``Func`` modules) that
hold nothing of their own. Every split froze, so no head was ever cut (Mamba-2 kept 53 % of its
parameters at ratio 0.5). Now each group of heads is cut with its B and C channels (the count of
heads per group stays), and with one group the heads are cut one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))  # 7 tokens: chunks of 4, padded


def mamba2(groups: int) -> nn.Module:
    """A random 2-layer Mamba-2 LM: 4 heads of 16 channels, ``groups`` B/C groups of state 8."""
    config = transformers.Mamba2Config(vocab_size=128, hidden_size=32, num_heads=4, head_dim=16, expand=2,
                                       n_groups=groups, state_size=8, num_hidden_layers=2, chunk_size=4)
    torch.manual_seed(0)
    return transformers.Mamba2ForCausalLM(config).eval()


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


def _heads(graph: DependencyGraph, layer: int, mixer: str = "backbone.layers.{}.mixer"):  # type: ignore[no-untyped-def]
    a_log = mixer.format(layer) + ".A_log"
    return next(g for g in graph.groups if any(m.tensor == a_log for m in g.members))


@pytest.mark.parametrize(("groups", "unit"), [(4, 1), (2, 2)])
def test_groups_of_heads_are_cut_with_their_b_and_c(groups: int, unit: int) -> None:
    """One unit per B/C group: its heads (``unit`` of them, 16 channels each in x, z and out_proj)
    and its state channels in B and C (8 each, in in_proj and the conv)."""
    graph = DependencyGraph.trace(mamba2(groups), IDS)
    heads = _heads(graph, 0)
    assert heads.prunable and heads.exact and heads.size == groups
    inner = {(m.tensor.split(".mixer.")[1], m.axis, m.inner) for m in heads.members}
    assert {("A_log", 0, unit), ("D", 0, unit), ("dt_bias", 0, unit), ("out_proj.weight", 1, 16 * unit),
            ("norm.weight", 0, 16 * unit), ("conv1d.weight", 0, 16 * unit), ("conv1d.weight", 0, 8)} <= inner


@pytest.mark.parametrize("groups", [4, 2])
def test_cut_equals_masked_dense_and_loads_with_transformers(tmp_path: Path, groups: int) -> None:
    model = mamba2(groups)
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    masked = mask(model, graph, plan)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verification on
    mixers = [layer.mixer for layer in pruned.backbone.layers]
    assert [(m.num_heads, m.n_groups, m.intermediate_size) for m in mixers] == [(2, groups // 2, 32)] * 2
    assert [m.norm.group_size for m in mixers] == [32 // (groups // 2)] * 2
    assert (pruned.config.num_heads, pruned.config.n_groups) == (2, groups // 2)
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
    folder = prunekit.save(pruned, tmp_path / "m")
    torch.testing.assert_close(_logits(prunekit.load(folder)), _logits(pruned), rtol=1e-4, atol=1e-5)
    reloaded = transformers.Mamba2ForCausalLM.from_pretrained(folder).eval()
    torch.testing.assert_close(_logits(reloaded), _logits(pruned), rtol=1e-4, atol=1e-5)


def test_one_group_serves_every_head_so_heads_are_cut_one_by_one(tmp_path: Path) -> None:
    """With one B/C group the heads are cut singly (the group stays); the gated norm then
    normalises fewer channels, so the cut is inexact: verified, and the norm's group follows."""
    model = mamba2(1)
    graph = DependencyGraph.trace(model, IDS)
    heads = _heads(graph, 0)
    assert heads.prunable and not heads.exact and heads.size == 4 and {m.inner for m in heads.members} == {1, 16}
    plan = allocate(graph, {heads.id: random(heads, model, seed=0)}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verification on
    mixers = [layer.mixer for layer in pruned.backbone.layers]
    assert [(m.num_heads, m.n_groups, m.norm.group_size) for m in mixers] == [(2, 1, 32), (4, 1, 64)]
    assert _logits(pruned).shape == (2, 7, 128)
    folder = prunekit.save(pruned, tmp_path / "m")
    torch.testing.assert_close(_logits(prunekit.load(folder)), _logits(pruned), rtol=1e-4, atol=1e-5)


def test_bamba_mixer_heads_are_cut() -> None:
    """A hybrid's copy of the mixer (Bamba: Mamba-2 layers and an attention layer)."""
    config = transformers.BambaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, mamba_n_heads=4, mamba_d_head=16,
                                      mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4, attn_layer_indices=[1])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    heads = _heads(graph, 0, "model.layers.{}.mamba")
    assert heads.prunable and heads.exact and heads.size == 2
    plan = allocate(graph, {heads.id: random(heads, model, seed=0)}, 0.5)
    masked = mask(model, graph, plan)
    pruned = apply(model, graph, plan, example_inputs=IDS)
    assert pruned.model.layers[0].mamba.num_heads == 2
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
