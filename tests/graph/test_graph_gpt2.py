"""Hugging Face GPT-2: whole heads cut alike in the q, k and v thirds of the fused ``c_attn``, the
stored widths (``Conv1D.nf``, ``split_size``, ``num_heads``) and the config follow the layers, and
the result loads with transformers and with prunekit. Also: no transformers class prunekit
registers (GPT-2, Llama, BERT) keeps a stale stored width after pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured import StructuredPruner
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask

transformers = pytest.importorskip("transformers")


def gpt2(attn: str = "eager", *, head: bool = True, **config: Any) -> nn.Module:
    """A random GPT-2 (4 heads of 16, MLP 256, 2 layers); the LM head is tied to ``wte``."""
    config = transformers.GPT2Config(vocab_size=100, n_embd=64, n_head=4, n_layer=2, n_positions=32,
                                     attn_implementation=attn, **config)
    return (transformers.GPT2LMHeadModel if head else transformers.GPT2Model)(config).eval()


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(seed))


def _logits(model: nn.Module, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(ids, **kwargs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _heads(graph: DependencyGraph) -> list:  # type: ignore[type-arg]
    return [g for g in graph.prunable if any(m.inner > 1 and m.role == "producer" for m in g.members)]


def test_fused_qkv_heads_are_one_group_cut_alike_in_q_k_v() -> None:
    graph = DependencyGraph.trace(gpt2(), _ids())
    heads = graph.group("transformer.h.0.attn.c_attn.weight:0")
    assert heads.size == 4 and heads.exact and heads.prunable
    members = sorted((m.tensor.removeprefix("transformer.h.0.attn."), m.axis, m.start, m.inner, m.role)
                     for m in heads.members)  # head h: rows h*16.. of each of q, k and v, in c_attn's columns
    assert members == [("c_attn.bias", 0, s, 16, "passive") for s in (0, 64, 128)] + [
        ("c_attn.weight", 1, s, 16, "producer") for s in (0, 64, 128)] + [("c_proj.weight", 0, 0, 16, "consumer")]
    mlp = graph.group("transformer.h.0.mlp.c_fc.weight:0")
    assert mlp.size == 256 and mlp.exact and mlp.prunable
    assert len(_heads(graph)) == 2


def test_a_constant_split_outside_gpt2_still_freezes() -> None:
    """Only a module whose refresh keeps its split size (GPT-2's attention) splits adaptively."""

    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(4, 24), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).split(8, dim=-1)
            return self.out(F.scaled_dot_product_attention(q, k, v))

    group = DependencyGraph.trace(Fused().eval(), torch.randn(2, 3, 4)).group("qkv.weight:0")
    assert not group.prunable and any("split at constant sizes" in r for r in group.reasons)


def _check_exact(model: nn.Module, ratio: float, seed: int) -> None:
    """Prune the exact groups (heads, MLP) with random scores: pruned == masked dense, with a
    padded attention mask too."""
    ids = _ids(seed)
    graph = DependencyGraph.trace(model, ids)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable if g.exact}, ratio)
    pruned = apply(model, graph, plan, example_inputs=ids)
    dense = mask(model, graph, plan)
    padding = torch.ones_like(ids)
    padding[0, -2:] = 0
    for kwargs in ({}, {"attention_mask": padding}):
        torch.testing.assert_close(_logits(pruned, ids, **kwargs), _logits(dense, ids, **kwargs),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_heads_and_mlp_pruned_equal_masked_dense(attn: str) -> None:
    _check_exact(gpt2(attn), 0.5, 0)


@pytest.mark.parametrize("options", [{"reorder_and_upcast_attn": True},
                                     {"scale_attn_by_inverse_layer_idx": True}])
def test_gpt2_attention_variants_equal_masked_dense(options: dict[str, bool]) -> None:
    _check_exact(gpt2(**options), 0.5, 1)


def test_decision_transformer_heads_are_cut_like_gpt2() -> None:
    """DecisionTransformer's GPT-2 (its attention a copy of GPT-2's): heads cut, equal masked dense."""
    config = transformers.DecisionTransformerConfig(state_dim=5, act_dim=3, hidden_size=64, n_head=4, n_layer=2,
                                                    n_inner=128, max_ep_len=16, n_positions=64)
    torch.manual_seed(0)
    model = transformers.DecisionTransformerModel(config).eval()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 6, 5, generator=g), torch.randn(1, 6, 3, generator=g), torch.randn(1, 6, 1, generator=g),
              torch.randn(1, 6, 1, generator=g), torch.arange(6).unsqueeze(0))
    graph = DependencyGraph.trace(model, inputs)
    heads = [grp for grp in graph.prunable if any(m.inner == 16 and "c_attn" in m.tensor for m in grp.members)]
    assert len(heads) == 2 and all(grp.size == 4 for grp in heads)
    plan = allocate(graph, {grp.id: random(grp, model, seed=0) for grp in graph.prunable if grp.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=inputs)
    assert [block.attn.num_heads for block in pruned.encoder.h] == [2, 2]
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs).state_preds, mask(model, graph, plan)(*inputs).state_preds,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000), attn=st.sampled_from(["eager", "sdpa"]))
def test_heads_and_mlp_pruned_equal_masked_dense_random(ratio: float, seed: int, attn: str) -> None:
    torch.manual_seed(seed)
    _check_exact(gpt2(attn), ratio, seed)


def test_pruner_halves_every_layer_and_the_config_follows() -> None:
    model, ids = gpt2(), _ids()
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, ids)  # verified by apply
    for block in pruned.transformer.h:
        attn, mlp = block.attn, block.mlp
        assert attn.c_attn.weight.shape == (32, 96) and attn.c_proj.weight.shape == (32, 32)
        assert (attn.num_heads, attn.head_dim, attn.split_size, attn.embed_dim) == (2, 16, 32, 32)
        assert (attn.c_attn.nx, attn.c_attn.nf, attn.c_proj.nx, attn.c_proj.nf) == (32, 96, 32, 32)
        assert mlp.c_fc.weight.shape == (32, 128) and (mlp.c_fc.nf, mlp.c_proj.nx) == (128, 128)
    config = pruned.config
    assert (config.n_embd, config.hidden_size, config.n_head, config.n_inner) == (32, 32, 2, 128)
    assert not config.prunekit_layer_widths and pruned.transformer.embed_dim == 32
    assert model.config.n_embd == 64 and model.transformer.h[0].attn.c_attn.nf == 192  # the input is untouched
    assert _logits(pruned, ids).shape == (2, 7, 100)


def _hf_models() -> dict[str, Any]:
    bert = transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
                                   vocab_size=100, max_position_embeddings=32)
    llama = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                     intermediate_size=128, num_hidden_layers=2, vocab_size=100,
                                     max_position_embeddings=32)
    return {"gpt2": gpt2, "llama": lambda: transformers.LlamaForCausalLM(llama).eval(),
            "bert": lambda: transformers.BertForSequenceClassification(bert).eval()}


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_stored_widths_match_a_model_built_from_the_config(name: str) -> None:
    """Uniformly pruned, a model's every stored int width equals the one transformers builds from
    its refreshed config: none is stale, and the config describes the model."""
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(_hf_models()[name](), _ids())
    fresh = dict(type(pruned)(pruned.config).named_modules())
    stale = [(n, k, v, getattr(fresh[n], k, None)) for n, module in pruned.named_modules()
             for k, v in vars(module).items()
             if isinstance(v, int) and not isinstance(v, bool) and getattr(fresh[n], k, None) != v]
    assert not stale
    shapes = {k: v.shape for k, v in type(pruned)(pruned.config).state_dict().items()}
    assert {k: v.shape for k, v in pruned.state_dict().items()} == shapes


def test_saved_folder_loads_with_transformers_and_prunekit(tmp_path: Path) -> None:
    ids = _ids(3)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(gpt2("sdpa"), ids)
    folder = prunekit.save(pruned, tmp_path / "g")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert theirs.config.n_head == 2 and theirs.config.n_inner == 128 and theirs.config.n_embd == 32
    torch.testing.assert_close(_logits(theirs, ids), _logits(pruned, ids), rtol=1e-4, atol=1e-5)
    ours = prunekit.load(folder)
    assert type(ours) is type(pruned) and ours.lm_head.weight is ours.transformer.wte.weight
    torch.testing.assert_close(_logits(ours, ids), _logits(pruned, ids), rtol=1e-4, atol=1e-5)


def test_per_layer_heads_are_recorded_and_load_with_prunekit(tmp_path: Path) -> None:
    """Layer 0 keeps its heads, layer 1 loses half: the config lists the widths per layer."""
    model, ids = gpt2(), _ids()
    graph = DependencyGraph.trace(model, ids)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    first = graph.group("transformer.h.0.attn.c_attn.weight:0")
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    pruned = apply(model, graph, plan, example_inputs=ids)
    assert pruned.config.prunekit_layer_widths == {"num_attention_heads": [4, 2]}
    assert pruned.config.n_head == 4 and pruned.config.n_inner == 128
    assert [b.attn.split_size for b in pruned.transformer.h] == [64, 32]
    prunekit.save(pruned, tmp_path / "g")
    loaded = prunekit.load(tmp_path / "g")
    torch.testing.assert_close(_logits(loaded, ids), _logits(pruned, ids), rtol=1e-4, atol=1e-5)


def test_cross_attention_heads_follow() -> None:
    """GPT-2 as a decoder: the cross-attention splits ``c_attn`` into k|v halves, its queries come
    from ``q_attn``; both follow the pruned heads."""

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(5, 64)
            self.gpt = gpt2(head=False, add_cross_attention=True)

        def forward(self, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
            return self.gpt(ids, encoder_hidden_states=self.encoder(features)).last_hidden_state

    model = Decoder().eval()
    x = (_ids(), torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)))
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(*x), mask(model, graph, plan)(*x), rtol=1e-4, atol=1e-5)
    cross = pruned.gpt.h[0].crossattention
    assert (cross.split_size, cross.num_heads, cross.q_attn.nf, cross.c_attn.nf) == (32, 2, 32, 64)
