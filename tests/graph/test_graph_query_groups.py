"""``num_key_value_groups`` follows the query heads cut from multi-query attention whichever
attention the trace ran. SDPA with ``enable_gqa`` broadcasts the one key/value head without
``repeat_kv``, so a trace there never met the stored count; an attention class without a refresh of
its own (Gemma's, Gemma 3's) kept the old count, and eager attention or a padding mask (which makes
SDPA call ``repeat_kv``) failed on the pruned model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.graph.registry import REFRESH
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

transformers = pytest.importorskip("transformers")

IDS = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(0))
PADDED = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])  # the first sequence left-padded


def _mqa(kind: str, attn: str) -> nn.Module:
    """A random 2-layer causal LM with 4 query heads of 16 and one key/value head."""
    config = transformers.AutoConfig.for_model(
        kind, vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, pad_token_id=0, attn_implementation=attn)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _logits(model: nn.Module, attn: str) -> torch.Tensor:
    model.set_attn_implementation(attn)
    with torch.no_grad():
        return model.eval()(IDS, attention_mask=PADDED).logits


def _heads(model: nn.Module) -> list[tuple[int, int, int]]:
    """Per layer: query heads, key/value heads (from the weights) and the stored ``num_key_value_groups``."""
    return [(a.q_proj.weight.shape[0] // a.head_dim, a.k_proj.weight.shape[0] // a.head_dim, a.num_key_value_groups)
            for a in (layer.self_attn for layer in model.model.layers)]


@pytest.mark.parametrize(("kind", "traced"), [("gemma", "sdpa"), ("gemma3_text", "sdpa"), ("gemma2", "eager")])
def test_query_groups_follow_the_cut_heads_whichever_attention_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, traced: str) -> None:
    """Every group cut, the hidden width too: Gemma's config then keeps its old widths on purpose
    (its embedding scale reads ``hidden_size``), so nothing rebuilt from it corrects the count."""
    model = _mqa(kind, traced)
    monkeypatch.delitem(REFRESH, type(model.model.layers[0].self_attn), raising=False)  # NOTE: as in a fresh
    graph = DependencyGraph.trace(model, IDS)  # process (an earlier eager trace registers a refresh for the class)
    pruned = apply(model, graph, allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5),
                   example_inputs=IDS)
    assert pruned.model.embed_tokens.weight.shape[1] < 64 and pruned.config.hidden_size == 64  # kept stale
    assert _heads(pruned) == [(2, 1, 2), (2, 1, 2)]
    eager = _logits(pruned, "eager")
    if traced == "sdpa":  # NOTE: Gemma 2 has no SDPA in transformers; padding positions attend to
        real = PADDED.bool()  # nothing, which the two implementations fill differently
        torch.testing.assert_close(_logits(pruned, "sdpa")[real], eager[real], rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    assert _heads(loaded) == _heads(pruned)
    torch.testing.assert_close(_logits(loaded, "eager"), eager, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["gemma", "gemma3_text"])
def test_cut_query_heads_equal_masked_dense_with_eager_attention_and_padding(kind: str) -> None:
    """The query heads cut on an SDPA trace (with the MLP's neurons): eager and SDPA attention over a
    left-padded batch give the dense model's outputs with the removed heads' weights zeroed."""
    model = _mqa(kind, "sdpa")
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned, masked = apply(model, graph, plan, example_inputs=IDS), mask(model, graph, plan)
    assert _heads(pruned) == [(2, 1, 2), (2, 1, 2)]
    for attn in ("eager", "sdpa"):
        torch.testing.assert_close(_logits(pruned, attn), _logits(masked, attn), rtol=1e-4, atol=1e-5)
