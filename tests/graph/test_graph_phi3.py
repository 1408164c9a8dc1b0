"""Hugging Face Phi-3: one fused ``qkv_proj`` sliced apart at constant bounds
(``qkv[..., :query_pos]``, ``query_pos = self.config.num_attention_heads * self.head_dim``).
The slices froze the whole projection, so no head was ever cut. Now the slices are sections of
their own (query heads grouped per key/value head, key and value heads alike), the bounds follow
the pruned heads (a layer's own view of the config where layers keep different counts), and the
result saves and loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import DataError
from prunekit.graph import DependencyGraph
from prunekit.graph.constraints import ConstraintStore, Segment, Tracked
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))


def phi3(kv_heads: int = 2) -> nn.Module:
    """A random Phi-3 (4 query heads of 16, ``kv_heads`` key/value heads, MLP 128, 2 layers)."""
    config = transformers.Phi3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.Phi3ForCausalLM(config).eval()


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


def _qkv_groups(graph: DependencyGraph, layer: int) -> list:  # type: ignore[type-arg]
    name = f"model.layers.{layer}.self_attn.qkv_proj.weight"
    return [g for g in graph.groups if any(m.tensor == name and m.axis == 0 for m in g.members)]


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_fused_qkv_is_cut_in_whole_key_value_groups(kv_heads: int) -> None:
    """Each prunable qkv group is one key/value head with its query heads: (4 / KV) query heads of
    16 rows, then 16 key rows and 16 value rows, all in one group."""
    graph = DependencyGraph.trace(phi3(kv_heads), IDS)
    groups = _qkv_groups(graph, 0)
    assert len(groups) == 1 and groups[0].prunable and groups[0].size == kv_heads
    rows = [m for m in groups[0].members if m.tensor.endswith("qkv_proj.weight")]
    assert sorted((m.start, m.inner) for m in rows) == [(0, 64 // kv_heads), (64, 16), (64 + 16 * kv_heads, 16)]


@pytest.mark.parametrize("seed", [0, 1])
def test_heads_pruned_per_layer_equal_masked_dense_and_round_trip(tmp_path: Path, seed: int) -> None:
    """Layer 0 keeps its heads, layer 1 loses one key/value group: each layer slices its own bounds,
    the result equals the masked dense model, and prunekit.save/load give the same logits."""
    model = phi3()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable if g.exact}, 0.5)
    first = _qkv_groups(graph, 0)[0]
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    masked = mask(model, graph, plan)
    pruned = apply(model, graph, plan, example_inputs=IDS)  # verification on
    attn = [layer.self_attn for layer in pruned.model.layers]
    assert [a.qkv_proj.weight.shape[0] for a in attn] == [128, 64]
    assert [(a.config.num_attention_heads, a.num_key_value_heads) for a in attn] == [(4, 2), (2, 1)]
    assert attn[0].config is pruned.config and pruned.config.num_attention_heads == 4
    assert attn[1].config._attn_implementation == pruned.config._attn_implementation  # read from the model's
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m"))
    assert loaded.model.layers[1].self_attn.config.num_attention_heads == 2
    torch.testing.assert_close(_logits(loaded), _logits(pruned), rtol=1e-4, atol=1e-5)


def test_a_layer_config_naming_a_class_outside_prunekit_is_refused(tmp_path: Path) -> None:
    """The layout names the class a layer's own config view is rebuilt with; a manifest naming any
    class outside prunekit is refused in one line, without importing it."""
    model = phi3()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    first = _qkv_groups(graph, 0)[0]
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    folder = prunekit.save(apply(model, graph, plan, example_inputs=IDS), tmp_path / "m")
    record = json.loads((folder / "manifest.json").read_text())
    view = record["layout"]["attributes"]["model.layers.1.self_attn"]["config"]
    assert view == {"object": "prunekit.graph.handlers.hf_modules.LayerConfig",
                    "fields": {"num_attention_heads": 2, "num_key_value_heads": 1}}
    view["object"] = "subprocess.Popen"
    (folder / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"manifest.json: attribute 'config' of module 'model.layers.1.self_attn' is "
                                        r"recorded as a 'subprocess.Popen', which is not a prunekit class with "
                                        r"from_layout"):
        prunekit.load(folder)


def test_heads_pruned_alike_load_with_transformers(tmp_path: Path) -> None:
    """Every layer loses the same heads: the model's config says them, and transformers' own loader
    builds the pruned model."""
    model = phi3()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=IDS)
    assert pruned.config.num_attention_heads == 2 and pruned.config.num_key_value_heads == 1
    folder = prunekit.save(pruned, tmp_path / "m")
    ours = type(pruned).from_pretrained(folder).eval()
    torch.testing.assert_close(_logits(ours), _logits(pruned), rtol=1e-4, atol=1e-5)


def test_phi4_multimodal_attention_is_cut_like_phi3() -> None:
    """Phi-4-multimodal's text attention is Phi-3's, copied: the same cut, per layer, equals the
    masked dense model (each Phi-3 attention swapped for one holding its weights)."""
    phi4 = pytest.importorskip("transformers.models.phi4_multimodal.modeling_phi4_multimodal")
    model = phi3()
    for i, layer in enumerate(model.model.layers):
        attention = phi4.Phi4MultimodalAttention(model.config, layer_idx=i)
        attention.load_state_dict(layer.self_attn.state_dict())
        layer.self_attn = attention.eval()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    first = _qkv_groups(graph, 0)[0]
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    masked = mask(model, graph, plan)
    pruned = apply(model, graph, plan, example_inputs=IDS)
    assert [layer.self_attn.config.num_attention_heads for layer in pruned.model.layers] == [4, 2]
    torch.testing.assert_close(_logits(pruned), _logits(masked), rtol=1e-4, atol=1e-5)


class SlicedQKV(nn.Module):
    """A user's attention-free block slicing a fused projection at constant bounds: nothing refreshes
    the bounds, so the projection stays whole."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(8, 12), nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.qkv(x)
        return self.out(y[..., :4] * y[..., 4:8] + y[..., 8:])


def test_constant_slices_outside_a_refreshed_module_still_freeze() -> None:
    graph = DependencyGraph.trace(SlicedQKV(), torch.randn(2, 8))
    (group,) = [g for g in graph.groups if any(m.tensor == "qkv.weight" for m in g.members)]
    assert not group.prunable and any("constant slice" in r for r in group.reasons)


def test_a_section_splits_its_source_and_constraints_read_the_parts() -> None:
    """A producer's 12 rows sliced 0:4 | 4:12: the use recorded before the split (the producer's
    rows) and an equality recorded after it (rows 4:8 against a second source) land on the parts."""
    store = ConstraintStore()
    fused = store.new_source(12, "qkv")
    store.use(fused, "qkv.weight", 0, "producer")
    head, rest = store.section(fused, 0, 4), store.section(fused, 4, 8)
    assert isinstance(head, Tracked) and isinstance(rest, Tracked)
    other = store.new_source(4, "other")
    store.use(other, "other.weight", 0, "producer")
    store.unify(Tracked((Segment(fused.segments[0].source, 4, 4),)), other, "add")
    groups = {tuple(sorted((m.tensor, m.start) for m in g.members)) for g in store.solve()}
    assert (("qkv.weight", 0),) in groups
    assert (("other.weight", 0), ("qkv.weight", 4)) in groups
    assert (("qkv.weight", 8),) in groups
