"""Multi-query attention (one key/value head for every query head: Gemma-2B, PaliGemma, CodeGemma,
any Llama-style config with ``num_key_value_heads=1``): ``repeat_kv`` expands the one head to
``num_key_value_groups`` copies, a fixed-size dim the query heads met, so no head was ever cut.
Now the repeated dim follows the query heads (the refresh keeps ``num_key_value_groups``), the
query heads are cut one by one and the key/value head stays."""

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

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))


def mqa(kind: str, attn: str = "eager") -> nn.Module:
    """A random 2-layer causal LM with 4 query heads of 16 and one key/value head."""
    sizes = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, max_position_embeddings=64, attn_implementation=attn)
    if kind == "phi3":
        config = transformers.Phi3Config(pad_token_id=0, bos_token_id=1, eos_token_id=2, **sizes)
    else:
        config = transformers.AutoConfig.for_model(kind, head_dim=16, **sizes)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


def _query_heads(graph: DependencyGraph, layer: int):  # type: ignore[no-untyped-def]
    o_proj = f"model.layers.{layer}.self_attn.o_proj.weight"
    return next(g for g in graph.groups if any(m.tensor == o_proj and m.axis == 1 for m in g.members))


@pytest.mark.parametrize(("kind", "attn"), [("llama", "eager"), ("llama", "sdpa"), ("qwen2", "eager"),
                                             ("phi3", "eager")])
def test_query_heads_of_multi_query_attention_are_cut_one_by_one(kind: str, attn: str) -> None:
    model = mqa(kind, attn)
    graph = DependencyGraph.trace(model, IDS)
    heads = _query_heads(graph, 0)
    assert heads.prunable and heads.size == 4 and all(m.inner == 16 for m in heads.members)


@pytest.mark.parametrize("kind", ["llama", "phi3"])
def test_cut_per_layer_equals_masked_dense_and_round_trips(tmp_path: Path, kind: str) -> None:
    """Layer 0 keeps its 4 query heads, layer 1 keeps 2; the key/value head stays in both."""
    model = mqa(kind)
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    first = _query_heads(graph, 0)
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    masked = mask(model, graph, plan)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verification on
    attn = [layer.self_attn for layer in pruned.model.layers]
    assert [a.o_proj.weight.shape[1] // 16 for a in attn] == [4, 2]
    assert [a.num_key_value_groups for a in attn] == [4, 2]
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    torch.testing.assert_close(_logits(loaded), _logits(pruned), rtol=1e-4, atol=1e-5)


def test_query_heads_cut_alike_load_with_transformers(tmp_path: Path) -> None:
    """Every layer keeps 2 of its 4 query heads: the config says so and transformers builds it."""
    model = mqa("llama")
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=1) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=IDS)
    assert pruned.config.num_attention_heads == 2 and pruned.config.num_key_value_heads == 1
    ours = type(pruned).from_pretrained(prunekit.save(pruned, tmp_path / "m")).eval()
    torch.testing.assert_close(_logits(ours), _logits(pruned), rtol=1e-4, atol=1e-5)


def falcon(**arch: object) -> nn.Module:
    """A random 2-layer Falcon (4 query heads of 16) with one fused q|k|v projection."""
    config = transformers.FalconConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       attn_implementation="eager", **arch)
    torch.manual_seed(0)
    return transformers.FalconForCausalLM(config).eval()


def _first_layer_kept(model: nn.Module, out_proj: str) -> tuple[nn.Module, nn.Module]:
    """(masked dense, pruned) for half of every group but layer 0's query heads, which are kept; the
    query heads of both layers (read by ``out_proj`` of each) are 4 prunable channels."""
    graph = DependencyGraph.trace(model, IDS)
    heads = [next(g for g in graph.groups if any(m.tensor == out_proj.format(i) and m.axis == 1 for m in g.members))
             for i in range(2)]
    assert all(g.prunable and g.size == 4 for g in heads)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    plan = type(plan)(keep={**plan.keep, heads[0].id: tuple(range(4))}, sizes=plan.sizes, meta=plan.meta)
    return mask(model, graph, plan), apply(model, graph, plan, example_inputs=IDS)  # verification on


def test_falcon_multi_query_heads_cut_per_layer_equal_masked_dense_and_round_trip(tmp_path: Path) -> None:
    """Falcon-7B's layout: ``query_key_value`` holds 4 query heads and one key and one value head,
    split at ``self.num_heads``; layer 0 keeps its heads, layer 1 keeps 2."""
    model = falcon(multi_query=True)
    masked, pruned = _first_layer_kept(model, "transformer.h.{}.self_attention.dense.weight")
    attn = [block.self_attention for block in pruned.transformer.h]
    assert [(a.num_heads, a.num_kv_heads, a.num_key_value_groups) for a in attn] == [(4, 1, 4), (2, 1, 2)]
    assert [a.query_key_value.weight.shape[0] for a in attn] == [96, 64]
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    torch.testing.assert_close(_logits(loaded), _logits(pruned), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("multi_query", [True, False])
def test_gpt_bigcode_heads_cut_equal_masked_dense_and_round_trip(tmp_path: Path, multi_query: bool) -> None:
    """StarCoder's GPT-BigCode: ``c_attn`` split at ``(embed_dim, kv_dim, kv_dim)`` (multi-query) or
    viewed as ``num_heads`` heads of q|k|v; the query width, head counts and key/value width follow."""
    config = transformers.GPTBigCodeConfig(vocab_size=128, n_embd=64, n_head=4, n_layer=2, n_positions=64,
                                           multi_query=multi_query, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.GPTBigCodeForCausalLM(config).eval()
    masked, pruned = _first_layer_kept(model, "transformer.h.{}.attn.c_proj.weight")
    attn = [block.attn for block in pruned.transformer.h]
    kv = 1 if multi_query else 2
    assert [(a.num_heads, a.kv_heads, a.embed_dim) for a in attn] == [(4, 1 if multi_query else 4, 64), (2, kv, 32)]
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    torch.testing.assert_close(_logits(loaded), _logits(pruned), rtol=1e-4, atol=1e-5)
