"""Hugging Face results: a save_pretrained folder that transformers loads (uniform widths) and that
prunekit.load rebuilds with per-layer widths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import random
from prunekit.structured import allocate, apply

transformers = pytest.importorskip("transformers")


def _tokens(vocab: int = 100) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(0))


def _bert() -> nn.Module:
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                     num_hidden_layers=2, vocab_size=100, max_position_embeddings=32,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     attn_implementation="eager")
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def _llama() -> nn.Module:
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=100,
                                      max_position_embeddings=32, attn_implementation="eager",
                                      tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config).eval()


def _gpt2(*, uniform: bool) -> nn.Module:
    """A GPT-2 LM with tied embeddings whose FFN is cut by hand to 48 of 128 neurons (every layer,
    or layer 0 only); the Conv1D weights are (in, out)."""
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16,
                                     attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(config).eval()
    keep = torch.arange(0, 128, 128 // 48)[:48]
    for block in model.transformer.h[: 2 if uniform else 1]:
        fc, proj = block.mlp.c_fc, block.mlp.c_proj
        fc.weight, fc.bias = nn.Parameter(fc.weight[:, keep].detach()), nn.Parameter(fc.bias[keep].detach())
        fc.nf, proj.weight = 48, nn.Parameter(proj.weight[keep].detach())
    if uniform:
        model.config.n_inner = 48
    return model


def _heads(graph: DependencyGraph) -> list:  # type: ignore[type-arg]
    return [g for g in graph.prunable if any(m.inner > 1 and m.role == "producer" for m in g.members)]


def _prune(model: nn.Module, *, uniform: bool) -> nn.Module:
    x = _tokens()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    if not uniform:  # layer 0 keeps all its heads, layer 1 loses half: widths differ by layer
        first = _heads(graph)[0]
        plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    return apply(model, graph, plan, example_inputs=x).eval()


def _out(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(_tokens())
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _same_state(loaded: nn.Module, saved: nn.Module) -> None:
    want = saved.state_dict()
    assert list(loaded.state_dict()) == list(want)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, want[name]), name


def test_uniform_llama_loads_with_transformers_and_prunekit(tmp_path: Path) -> None:
    small = _prune(_llama(), uniform=True)
    assert not small.config.prunekit_layer_widths
    folder = prunekit.save(small, tmp_path / "m")
    assert {"config.json", "model.safetensors", "manifest.json"} <= {p.name for p in folder.iterdir()}
    plain = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    # NOTE: a reloaded config may pick another attention kernel (eager vs sdpa): float-close only.
    torch.testing.assert_close(_out(plain), _out(small), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(folder)
    assert type(loaded) is type(small) and loaded.lm_head.weight is loaded.model.embed_tokens.weight
    _same_state(loaded, small)
    torch.testing.assert_close(_out(loaded), _out(small), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory", [_bert, _llama])
def test_per_layer_widths_load_with_prunekit(factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    small = _prune(factory(), uniform=False)
    assert small.config.prunekit_layer_widths  # the config alone cannot describe this model
    prunekit.save(small, tmp_path / "m")
    with pytest.raises(RuntimeError, match="(?i)size|shape"):
        type(small).from_pretrained(tmp_path / "m", local_files_only=True)
    loaded = prunekit.load(tmp_path / "m")
    assert type(loaded) is type(small)
    _same_state(loaded, small)
    torch.testing.assert_close(_out(loaded), _out(small), rtol=1e-4, atol=1e-5)


def test_bert_built_without_pooler_round_trip(tmp_path: Path) -> None:
    # NOTE: BERT derives the head size from hidden_size / num_attention_heads, so pruned heads
    # never fit its config: prunekit.load rebuilds it from the recorded layout.
    small = _prune(_bert(), uniform=True)
    prunekit.save(small, tmp_path / "b")
    assert "pooler" in dict(transformers.BertModel(small.config).named_children())
    loaded = prunekit.load(tmp_path / "b")  # the recorded layout drops the pooler the class builds
    assert loaded.pooler is None
    _same_state(loaded, small)
    torch.testing.assert_close(_out(loaded), _out(small), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("uniform", [True, False])
def test_gpt2_round_trip(uniform: bool, tmp_path: Path) -> None:
    small = _gpt2(uniform=uniform)
    prunekit.save(small, tmp_path / "g")
    if uniform:
        plain = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "g", local_files_only=True)
        torch.testing.assert_close(_out(plain), _out(small), rtol=1e-4, atol=1e-5)
    loaded = prunekit.load(tmp_path / "g")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    _same_state(loaded, small)
    torch.testing.assert_close(_out(loaded), _out(small), rtol=1e-4, atol=1e-5)


def _pixels() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _pruned_vision(model: nn.Module) -> nn.Module:
    from prunekit.importance import score

    torch.manual_seed(0)
    x = _pixels()
    graph = DependencyGraph.trace(model.eval(), x)
    return apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5), example_inputs=x)


def _same_outputs(loaded: nn.Module, small: nn.Module) -> None:
    with torch.no_grad():
        got, want = loaded.eval()(_pixels()), small.eval()(_pixels())
    for key in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_siglip_pooling_head_with_pruned_heads_round_trips(tmp_path: Path) -> None:
    # NOTE: SigLIP's pooling head is an nn.MultiheadAttention; with half its heads cut it becomes
    # prunekit's PrunedMultiheadAttention, which the layout records and load rebuilds.
    from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention

    torch.manual_seed(0)
    config = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, image_size=32, patch_size=8)
    small = _pruned_vision(transformers.SiglipVisionModel(config))
    assert type(small.head.attention) is PrunedMultiheadAttention and small.head.attention.num_heads == 2
    loaded = prunekit.load(prunekit.save(small, tmp_path / "s"))
    assert type(loaded.head.attention) is PrunedMultiheadAttention and loaded.head.attention.num_heads == 2
    _same_state(loaded, small)
    _same_outputs(loaded, small)


def test_granite_docling_sliced_position_table_round_trips(tmp_path: Path) -> None:
    # NOTE: the connector's sine-cosine tables are non-persistent buffers of the projected width; cut
    # with it, they are saved beside the weights (transformers' loader would rebuild them dense).
    torch.manual_seed(0)
    config = transformers.GraniteDoclingVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, patch_size=4,
                                                     out_hidden_size=32)
    small = _pruned_vision(transformers.GraniteDoclingVisionModel(config))
    assert small.connector.coarse.pos_embed.pos_embed.shape == (4, 16)
    folder = prunekit.save(small, tmp_path / "g")
    assert (folder / "buffers.safetensors").is_file()
    loaded = prunekit.load(folder)
    for name in ("connector.coarse.pos_embed.pos_embed", "connector.fine.pos_embed.pos_embed"):
        assert torch.equal(loaded.get_buffer(name), small.get_buffer(name)), name
    _same_state(loaded, small)
    _same_outputs(loaded, small)


def test_hidden_states_of_a_model_run_before_saving_load_back(tmp_path: Path) -> None:
    # NOTE: transformers marks a model `_output_capturing_hooks_installed` on the first forward that
    # asks for hidden states; recorded in the layout, it told the loaded model its hooks were in
    # place, and hidden_states came back empty (LLaVA reads them: an IndexError after loading).
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=8)
    small = _pruned_vision(transformers.CLIPVisionModel(config))
    with torch.no_grad():
        want = small.eval()(_pixels(), output_hidden_states=True).hidden_states
    loaded = prunekit.load(prunekit.save(small, tmp_path / "c"))
    with torch.no_grad():
        got = loaded(_pixels(), output_hidden_states=True).hidden_states
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_that_derives_head_dim_again_loads_back(tmp_path: Path) -> None:
    # NOTE: UnlimitedOcr's text config sets head_dim = hidden_size // num_attention_heads when it is
    # read; half the heads cut (head_dim kept) is a width the file cannot say. The layout was taken
    # against the config in memory, so it recorded nothing and the folder did not load back.
    torch.manual_seed(0)
    config = transformers.UnlimitedOcrTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=4, vocab_size=100,
                                                 max_position_embeddings=32)
    model = transformers.UnlimitedOcrTextModel(config).eval()
    x = _tokens()
    graph = DependencyGraph.trace(model, x)
    heads = _heads(graph)
    assert heads
    small = apply(model, graph, allocate(graph, {g.id: random(g, model, seed=0) for g in heads}, 0.5),
                  example_inputs=x).eval()
    assert small.config.head_dim == 8 and small.config.num_attention_heads == 2
    loaded = prunekit.load(prunekit.save(small, tmp_path / "u"))
    _same_state(loaded, small)
    torch.testing.assert_close(_out(loaded), _out(small), rtol=0, atol=0)


def test_hierarchical_vision_model_with_per_stage_heads_saves_and_loads(tmp_path: Path) -> None:
    # NOTE: Swin lists its heads per stage; the head size written into its config (a field it does not
    # have) made transformers' own validator refuse the config (head_dim * num_heads != embed_dim) on save.
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=32, depths=[1, 1], num_heads=[2, 4],
                                     window_size=4, num_labels=10)
    model = transformers.SwinForImageClassification(config).eval()
    x = _pixels()
    graph = DependencyGraph.trace(model, x)
    small = apply(model, graph, allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact},
                                         0.5), example_inputs=x).eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    loaded = prunekit.load(prunekit.save(small, tmp_path / "s"))
    _same_state(loaded, small)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, small(x).logits, rtol=0, atol=0)


def test_a_bf16_llamas_rotary_table_comes_back_bf16(tmp_path: Path) -> None:
    small = _prune(_llama(), uniform=True).to(torch.bfloat16)
    inv_freq = small.model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.bfloat16  # NOTE: transformers builds it fp32 from the config
    loaded = prunekit.load(prunekit.save(small, tmp_path / "m"))
    got = loaded.model.rotary_emb.inv_freq
    assert got.dtype == torch.bfloat16 and torch.equal(got, inv_freq)
    _same_state(loaded, small)
    h, positions = torch.ones(1, 7, 32, dtype=torch.bfloat16), torch.arange(7)[None]
    for want, have in zip(small.model.rotary_emb(h, positions), loaded.model.rotary_emb(h, positions)):
        assert torch.equal(have, want)
    loaded.set_attn_implementation("eager")  # NOTE: a reloaded config picks sdpa, whose bf16 sums differ
    torch.testing.assert_close(_out(loaded), _out(small), rtol=0, atol=0)
