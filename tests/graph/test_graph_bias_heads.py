"""Heads of attention that adds a per-head bias built by the model for all its heads (ALiBi in BLOOM
and MPT; issue 19's coverage).

The model builds the bias once from its own head count and passes it to every layer; its slopes
follow each head's index, so a layer cannot rebuild it for fewer heads. The bias meeting a layer's
heads froze them (BLOOM and MPT kept 35 % of their parameters at ratio 0.5 against 27 % ideal). Now a
layer's heads are cut and the layer keeps its heads' rows of the full bias (``kept_heads``), the
model's head count stays in the config (transformers' own loader refuses the folder rather than
building other slopes), the result equals the masked dense model, and it saves, loads, copies and
pickles.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask

transformers = pytest.importorskip("transformers")

IDS = torch.randint(4, 128, (1, 8), generator=torch.Generator().manual_seed(0))
MODELS = {
    "bloom": (lambda: transformers.BloomForCausalLM(transformers.BloomConfig(vocab_size=128, hidden_size=64,
                                                                             n_layer=2, n_head=4)),
              lambda m: [block.self_attention for block in m.transformer.h], "n_head"),
    "mpt": (lambda: transformers.MptForCausalLM(transformers.MptConfig(vocab_size=128, d_model=64, n_layers=2,
                                                                       n_heads=4, max_seq_len=64)),
            lambda m: [block.attn for block in m.transformer.blocks], "n_heads"),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name][0]().eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_that_read_a_shared_per_head_bias_are_cut_and_keep_their_rows_of_it(name: str, tmp_path: Path) -> None:
    """Heads 1 and 3 of 4 kept in every layer (not a prefix, so keeping the first rows of the bias
    would be wrong): the pruned model equals the masked one, before and after save and load."""
    model = _model(name)
    graph = DependencyGraph.trace(model, IDS)
    heads = [g for g in graph.groups if g.prunable and g.size == 4]
    assert len(heads) == 2 and all(g.exact for g in heads)
    plan = allocate(graph, {g.id: torch.tensor([0.0, 1.0, 0.0, 1.0]) for g in heads}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))  # verified
    layers = MODELS[name][1](pruned)
    assert [layer.kept_heads.tolist() for layer in layers] == [[1, 3], [1, 3]]
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    assert [layer.kept_heads.tolist() for layer in MODELS[name][1](loaded)] == [[1, 3], [1, 3]]
    with torch.no_grad():
        out = pruned(IDS).logits
        torch.testing.assert_close(out, mask(model, graph, plan)(IDS).logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(IDS).logits, out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_model_keeps_the_head_count_its_bias_is_built_from(name: str) -> None:
    """Every group cut by half (the width too): the layers hold 2 heads, but the config and the model
    keep 4, the count the bias's slopes come from; the per-layer table says 2. A deep copy and a
    pickled copy run alike."""
    model = _model(name)
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))  # verified
    field = MODELS[name][2]
    assert getattr(pruned.config, field) == 4 and pruned.transformer.num_heads == 4
    # NOTE: the hidden width stays dense too, so that from_pretrained refuses what it would build wrong
    assert list(pruned.config.prunekit_layer_widths.values()) == [[2], [32]]
    assert [layer.kept_heads.numel() for layer in MODELS[name][1](pruned)] == [2, 2]
    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    pickled = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        out = pruned(IDS).logits
        torch.testing.assert_close(copy.deepcopy(pruned)(IDS).logits, out)
        torch.testing.assert_close(pickled(IDS).logits, out)
