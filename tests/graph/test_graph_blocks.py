"""A width viewed as a constant number of equal blocks, each block cut at the same positions
(issue 19's coverage): per-layer inputs (Gemma 4, Gemma 3n, EmbeddingGemma 2) and Zamba's per-head scan.

Gemma's per-layer inputs give every layer ``hidden_size_per_layer_input`` features, packed as one
embedding (or projection) of ``num_layers * D`` columns and viewed ``[..., num_layers, D]`` with the
layer count from the config; Zamba's mixer views its inner channels ``[n_mamba_heads, mamba_head_dim]``
and scans each head in a Python loop over the stored count. A constant block count froze the packed
width, and with it the largest table of the model (Gemma 4 kept 100 % of its parameters at ratio 0.5,
Zamba 46 %). Now the same positions of every block are cut, the block size follows in every module
that stores it, the result is verified and the saved folder loads back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask

transformers = pytest.importorskip("transformers")

LAYERS, D = 2, 8
IDS = torch.randint(4, 64, (1, 6), generator=torch.Generator().manual_seed(0))


def _group_of(graph: DependencyGraph, tensor: str, axis: int):  # type: ignore[no-untyped-def]
    return next(g for g in graph.groups if (tensor, axis) in {(m.tensor, m.axis) for m in g.members})


def _cut_per_layer_inputs(model: torch.nn.Module, packed: str, axis: int, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Half of the per-layer features cut (L2), verified; the packed tensor's members are the layers'
    blocks at the same positions, and its kept columns are the same in every block. Returns the
    pruned model."""
    graph = DependencyGraph.trace(model, IDS)
    group = _group_of(graph, packed, axis)
    assert group.prunable and group.size == D, group.reasons
    offsets = sorted(m.start for m in group.members if m.tensor == packed and m.axis == axis)
    assert offsets == [k * D for k in range(LAYERS)]
    plan = allocate(graph, {group.id: score(graph, model, "l2")[group.id]}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))  # verified
    kept = plan.keep[group.id]
    assert len(kept) == D // 2
    packed_weight = dict(model.named_parameters())[packed]
    rows = [k * D + i for k in range(LAYERS) for i in kept]
    torch.testing.assert_close(dict(pruned.named_parameters())[packed],
                               packed_weight.index_select(axis, torch.tensor(rows)))
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        out = pruned(IDS)
        first = out.logits if hasattr(out, "logits") else out.last_hidden_state
        again = loaded(IDS)
        torch.testing.assert_close(again.logits if hasattr(again, "logits") else again.last_hidden_state, first,
                                   rtol=1e-4, atol=1e-5)
    return pruned


def test_gemma4_per_layer_embeddings_are_cut_at_the_same_features_in_every_layer(tmp_path: Path) -> None:
    config = transformers.Gemma4TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=16, hidden_size_per_layer_input=D,
        vocab_size_per_layer_input=64, layer_types=["sliding_attention", "full_attention"], sliding_window=16)
    torch.manual_seed(0)
    model = transformers.Gemma4ForCausalLM(config).eval()
    pruned = _cut_per_layer_inputs(model, "model.embed_tokens_per_layer.weight", 1, tmp_path)
    text = pruned.model
    assert text.embed_tokens_per_layer.weight.shape == (64, LAYERS * D // 2)
    assert text.per_layer_model_projection.weight.shape == (LAYERS * D // 2, 32)
    assert text.hidden_size_per_layer_input == D // 2
    assert [layer.hidden_size_per_layer_input for layer in text.layers] == [D // 2] * LAYERS
    assert [tuple(layer.per_layer_input_gate.weight.shape) for layer in text.layers] == [(D // 2, 32)] * LAYERS


def test_embedding_gemma2_projected_per_layer_inputs_are_cut_alike(tmp_path: Path) -> None:
    config = transformers.EmbeddingGemma2TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, hidden_size_per_layer_input=D, sliding_window=16, embedding_dim=24,
        layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = transformers.EmbeddingGemma2TextModel(config).eval()
    pruned = _cut_per_layer_inputs(model, "ple.per_layer_model_projection.weight", 0, tmp_path)
    assert pruned.ple.hidden_size_per_layer_input == D // 2
    assert pruned.ple.per_layer_projection_norm.weight.shape == (D // 2,)
    assert [layer.ple_block.hidden_size_per_layer_input for layer in pruned.layers] == [D // 2] * LAYERS


def test_zamba_mixer_is_cut_at_the_same_channels_of_every_head(tmp_path: Path) -> None:
    """The head count stays (the scan loops over it); each head loses the same channels, with their
    conv, per-channel step, decay and skip weights; the pruned model equals the masked one."""
    config = transformers.ZambaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, n_mamba_heads=2, mamba_expand=2, mamba_d_state=4, mamba_dt_rank=4,
        layers_block_type=["hybrid", "hybrid"], )
    torch.manual_seed(0)
    model = transformers.ZambaForCausalLM(config).eval()
    graph = DependencyGraph.trace(model, IDS)
    inner = _group_of(graph, "model.layers.0.mamba_decoder.mamba.D", 1)
    assert inner.prunable and inner.size == 16 and inner.exact, inner.reasons
    starts = {(m.tensor.rsplit("mamba.", 1)[-1], m.axis, m.start) for m in inner.members}
    assert {("out_proj.weight", 1, 0), ("out_proj.weight", 1, 16), ("D", 1, 0)} <= starts
    plan = allocate(graph, {inner.id: score(graph, model, "l2")[inner.id]}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=(IDS,))  # verified
    mixer = pruned.model.layers[0].mamba_decoder.mamba
    assert (mixer.n_mamba_heads, mixer.mamba_head_dim, mixer.intermediate_size) == (2, 8, 16)
    assert mixer.out_proj.weight.shape == (16, 16) and mixer.conv1d.weight.shape[0] == 16
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    with torch.no_grad():
        out = pruned(IDS).logits
        torch.testing.assert_close(out, mask(model, graph, plan)(IDS).logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(IDS).logits, out, rtol=1e-4, atol=1e-5)
