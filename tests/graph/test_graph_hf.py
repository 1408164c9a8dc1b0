"""Hugging Face architectures beyond GPT-2/BERT/Llama: pruned at 0.5, every config field that records
a width follows (``d_model``, ``dim``/``hidden_dim``/``n_heads``, ``ffn_dim``, a derived
``head_dim`` written out), and transformers' own ``from_pretrained`` rebuilds the same model from
``save_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import prunekit
import prunekit.hf
from prunekit.graph import DependencyGraph
from prunekit.graph.handlers.hf_modules import same_head_dims
from prunekit.importance import random
from prunekit.structured import StructuredPruner, allocate, apply

transformers = pytest.importorskip("transformers")


def _configs() -> dict[str, tuple[Any, Any]]:
    t = transformers
    small = {"vocab_size": 100, "max_position_embeddings": 32}
    return {
        "distilbert": (t.DistilBertForMaskedLM, t.DistilBertConfig(dim=64, n_heads=4, hidden_dim=128, n_layers=2,
                                                                    **small)),
        "vit": (t.ViTForImageClassification, t.ViTConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                         num_hidden_layers=2, image_size=16, patch_size=4,
                                                         num_labels=3)),
        "qwen2": (t.Qwen2ForCausalLM, t.Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                                     intermediate_size=128, num_hidden_layers=2, **small)),
        "opt": (t.OPTForCausalLM, t.OPTConfig(hidden_size=64, num_attention_heads=4, ffn_dim=128, num_hidden_layers=2,
                                              word_embed_proj_dim=64, **small)),
        "gpt_neox": (t.GPTNeoXForCausalLM, t.GPTNeoXConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                           num_hidden_layers=2, **small)),
    }


def _inputs(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if name == "vit":
        return torch.randn(2, 3, 16, 16, generator=gen)
    return torch.randint(1, 100, (2, 7), generator=gen)


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).logits


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["distilbert", "vit", "qwen2", "opt", "gpt_neox"])
def test_config_follows_and_transformers_reloads(name: str, tmp_path: Path) -> None:
    klass, config = _configs()[name]
    torch.manual_seed(0)
    model, x = klass(config).eval(), _inputs(name)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)  # verified by apply
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    assert _shapes(prunekit.hf.reference(pruned)) == _shapes(pruned)  # the config builds the pruned shapes
    assert same_head_dims(pruned, pruned.config) and not pruned.config.prunekit_layer_widths
    pruned.save_pretrained(tmp_path, safe_serialization=True)
    theirs = klass.from_pretrained(tmp_path, local_files_only=True)
    torch.testing.assert_close(_out(theirs, x), _out(pruned, x), rtol=1e-4, atol=1e-5)


def test_every_width_field_of_distilbert_follows() -> None:
    klass, config = _configs()["distilbert"]
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(klass(config).eval(), _inputs("distilbert"))
    c = pruned.config
    assert (c.dim, c.n_heads, c.hidden_dim) == (32, 2, 64)
    attn = pruned.distilbert.transformer.layer[0].attention
    assert (attn.n_heads, attn.dim, attn.attention_head_size) == (2, 32, 16)


def test_a_derived_head_size_is_written_out() -> None:
    """Qwen2 derives head_dim = hidden_size / heads: pruned, 2 heads of 16 in width 32 (not 4 of 8)."""
    klass, config = _configs()["qwen2"]
    assert getattr(config, "head_dim", None) is None
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(klass(config).eval(), _inputs("qwen2"))
    c = pruned.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) == \
        (32, 2, 1, 16, 64)


def test_t5_heads_read_as_a_constant_are_cut_and_refreshed() -> None:
    """T5's attention views with ``self.n_heads``: its structure (a head count, a head size, a query
    Linear) marks it as refreshed, so heads are cut whole and ``n_heads`` / ``inner_dim`` follow."""
    from prunekit.graph import DependencyGraph
    from prunekit.importance.magnitude import random
    from prunekit.structured.allocate import allocate
    from prunekit.structured.apply import apply, mask

    config = transformers.T5Config(d_model=32, num_heads=4, d_kv=8, d_ff=64, num_layers=1, vocab_size=50,
                                   dropout_rate=0.0)
    model = transformers.T5EncoderModel(config).eval()
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    heads = graph.group("encoder.block.0.layer.0.SelfAttention.k.weight:0")
    assert heads.size == 4 and heads.prunable and heads.exact
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable if g.exact}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=ids)
    attn = pruned.encoder.block[0].layer[0].SelfAttention
    assert (attn.n_heads, attn.inner_dim, attn.key_value_proj_dim) == (2, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).last_hidden_state, mask(model, graph, plan)(ids).last_hidden_state,
                                   rtol=1e-4, atol=1e-5)


def test_a_sequence_as_long_as_the_head_count_does_not_pin_the_heads(tmp_path: Path) -> None:
    """T5's decoder views its (4, 4) causal mask to (1, 1, 4, 4) inside the attention: with 4 heads
    that read as a view of untracked data to the stored head count, and every decoder self-attention
    kept its heads (and the config its old count, so transformers could not load the folder)."""
    config = transformers.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                   num_heads=4, decoder_start_token_id=0, dropout_rate=0.0)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    ids = torch.randint(1, 50, (2, 4), generator=torch.Generator().manual_seed(0))  # NOTE: 4 tokens, 4 heads
    small = StructuredPruner({"ratio": 0.5}, ignore=["lm_head"], round_to=1).fit_transform(model, (ids, None, ids))
    assert {layer.layer[0].SelfAttention.n_heads for layer in small.decoder.block} == {2}
    assert small.config.num_heads == 2
    prunekit.save(small, tmp_path / "t5")
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, decoder_input_ids=ids).logits,
                                   small(input_ids=ids, decoder_input_ids=ids).logits)


def test_a_width_that_sets_a_constant_is_not_written_to_the_config(tmp_path: Path) -> None:
    """Gemma scales its embeddings by sqrt(hidden_size): a config saying the pruned width would make
    transformers build another function, so the config keeps the old width (its loader then refuses
    the folder loudly) and prunekit.load rebuilds the pruned model exactly."""
    config = transformers.GemmaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      intermediate_size=128, num_hidden_layers=2, vocab_size=100,
                                      max_position_embeddings=32)
    torch.manual_seed(0)
    model, x = transformers.GemmaForCausalLM(config).eval(), _inputs("gemma")
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)
    assert pruned.model.embed_tokens.weight.shape[1] == 32 and pruned.config.hidden_size == 64
    assert pruned.config.prunekit_constants == ["model.embed_tokens.scalar_embed_scale"]
    assert pruned.config.prunekit_layer_widths["hidden_size"] == [32]
    folder = prunekit.save(pruned, tmp_path / "g")
    with pytest.raises(RuntimeError, match="(?i)size|shape"):
        transformers.GemmaForCausalLM.from_pretrained(folder, local_files_only=True)
    torch.testing.assert_close(_out(prunekit.load(folder), x), _out(pruned, x), rtol=1e-4, atol=1e-5)


def test_attention_reading_its_width_from_the_input_is_cut_safely() -> None:
    """FSMT's attention reads ``embed_dim`` from its input's shape and reshapes its output to it: the
    heads are tied to that width (cut together) instead of breaking the reshape; verified by apply."""
    config = transformers.FSMTConfig(langs=["en", "de"], src_vocab_size=50, tgt_vocab_size=50, d_model=64,
                                     encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     max_position_embeddings=32, dropout=0.0)
    torch.manual_seed(0)
    model = transformers.FSMTForConditionalGeneration(config).eval()
    ids = torch.randint(4, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, (ids, torch.ones_like(ids), ids[:, :4]))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


class _Seq2SeqLogits(nn.Module):
    """An EncoderDecoderModel read for its logits only (so its encoder's width is no output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, decoder_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, decoder_input_ids=decoder_ids).logits


def test_an_encoder_decoder_without_a_projection_keeps_its_two_widths_equal() -> None:
    """EncoderDecoderModel projects the encoder's output only when the two configs' hidden_size
    differ, a branch the trace does not see: the two widths are one group, so a cut leaves them
    equal and the forward takes the same branch (it used to call a projection that does not exist)."""
    bert = dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**bert), transformers.BertConfig(**bert, is_decoder=True, add_cross_attention=True))
    torch.manual_seed(0)
    model = _Seq2SeqLogits(transformers.EncoderDecoderModel(config=config)).eval()
    x = (torch.randint(1, 40, (1, 7)), torch.randint(1, 40, (1, 5)))
    graph = DependencyGraph.trace(model, x)
    width = [g for g in graph.groups if any(m.tensor == "model.encoder.embeddings.word_embeddings.weight"
                                             and m.axis == 1 for m in g.members)]
    assert len(width) == 1 and width[0].prunable
    assert any(m.tensor == "model.decoder.bert.embeddings.word_embeddings.weight" for m in width[0].members)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # NOTE: verified against the masked dense model
    assert pruned.model.encoder.config.hidden_size == pruned.model.decoder.config.hidden_size == 16
    assert not hasattr(pruned.model, "enc_to_dec_proj")


def test_a_tokenizer_dict_is_passed_to_forward_by_name() -> None:
    """GPT-2's forward is (input_ids, past_key_values, attention_mask, ...): the dict a tokenizer
    returns reaches it by name (the tuple (ids, mask) would put the mask in past_key_values)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0  # NOTE: left padding: the mask changes the second row's logits
    pruner = StructuredPruner({"ratio": 0.5}, ignore=["lm_head"]).fit(model, {"input_ids": ids, "attention_mask": mask})
    args = pruner.example_inputs_
    assert args[0] is ids and args[1] is None and args[-1] is mask
    small = pruner.transform(model)  # NOTE: verified on the masked inputs
    assert small.config.n_head == 2
    with torch.no_grad():
        masked = small(input_ids=ids, attention_mask=mask).logits
        assert not torch.allclose(masked[1], small(input_ids=ids).logits[1])


def test_a_dict_without_a_required_input_is_refused_in_one_line() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)) * mask)

    with pytest.raises(prunekit.errors.ConfigError, match=r"names \['mask'\] but not 'x', which Masked.forward "
                                                          r"needs before them. Add 'x' to the dict."):
        StructuredPruner({"ratio": 0.5}).fit(Masked(), {"mask": torch.ones(1, 1)})
    small = StructuredPruner({"ratio": 0.5}).fit_transform(Masked(), {"mask": torch.ones(1, 1), "x": torch.randn(1, 4)})
    assert small.a.out_features == 4
