"""A Hugging Face config with per-layer fields (transformers' heterogeneous configs: EmbeddingGemma 2,
Gemma 4) refuses to say a global ``num_key_value_heads`` or ``head_dim``. Pruning read every width
field globally to refresh the config and failed before slicing; now such a config is left as it is
(its layers' widths differ anyway) and the saved layout carries the pruned widths.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply

transformers = pytest.importorskip("transformers")

IDS = torch.randint(4, 128, (1, 8), generator=torch.Generator().manual_seed(0))


def test_a_per_layer_config_is_left_as_is_and_the_pruned_model_round_trips(tmp_path: Path) -> None:
    config = transformers.CONFIG_MAPPING["embedding_gemma2_text"](
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, head_dim=16)
    assert config.is_heterogeneous
    torch.manual_seed(0)
    model = transformers.EmbeddingGemma2TextModel(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))  # verification on
    assert pruned.config.to_dict() == model.config.to_dict()
    assert pruned.layers[0].mlp.up_proj.weight.shape[0] == 64  # the MLP width is cut (128 -> 64)
    folder = prunekit.save(pruned, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(prunekit.load(folder).eval()(IDS).last_hidden_state,
                                   pruned(IDS).last_hidden_state, rtol=1e-4, atol=1e-5)
