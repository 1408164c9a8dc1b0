"""Configs of pruned Hugging Face models that transformers' own loader reads: a config that cannot say
the pruned model (BLOOM's and MPT's pinned ALiBi head count) builds other shapes so ``from_pretrained``
refuses it, never the same shapes computing something else; Gemma's stale ``hidden_size`` is warned
about; per-stream FFN fields (BART's encoder and decoder, Funnel's ``d_inner``) follow their layers;
widths read by transformers' ``grouped_mm`` experts kernel stay aligned to it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.structured import StructuredPruner, Target

transformers = pytest.importorskip("transformers")

V = 128


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ids(n: int = 12) -> torch.Tensor:
    return torch.randint(0, V, (1, n), generator=torch.Generator().manual_seed(0))


def _alibi(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    t = transformers
    if name == "bloom":
        return t.BloomForCausalLM(t.BloomConfig(vocab_size=V, hidden_size=64, n_layer=2, n_head=4)).eval()
    return t.MptForCausalLM(
        t.MptConfig(vocab_size=V, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
    ).eval()


@pytest.mark.parametrize("name", ["bloom", "mpt"])
def test_alibi_head_prune_is_refused_by_from_pretrained_not_loaded_wrong(name: str, tmp_path: Path) -> None:
    ids = _ids()
    small = StructuredPruner(Target(ratio=0.5), ignore=["lm_head"]).fit_transform(_alibi(name), ids).eval()
    with torch.no_grad():
        expected = small(ids).logits
    prunekit.save(small, tmp_path)
    with torch.no_grad():
        assert torch.equal(prunekit.load(tmp_path)(ids).logits, expected)
    with pytest.raises(
        RuntimeError, match="ignore_mismatched_sizes"
    ):  # not 4 heads of 8 in 2 heads of 16's place
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)


def test_gemma_stale_hidden_size_warns_once() -> None:
    torch.manual_seed(0)
    model = transformers.GemmaForCausalLM(
        transformers.GemmaConfig(
            vocab_size=V,
            hidden_size=64,
            num_hidden_layers=2,
            max_position_embeddings=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
        )
    ).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = StructuredPruner(Target(ratio=0.5), ignore=["lm_head"]).fit_transform(model, _ids())
    said = [str(w.message) for w in caught if "from_pretrained will refuse" in str(w.message)]
    assert len(said) == 1 and "hidden_size=64" in said[0] and "prunekit.load" in said[0]
    assert small.config.hidden_size == 64 and small.config.prunekit_layer_widths["hidden_size"] == [32]
    assert small.config.intermediate_size == 64  # NOTE: no constant depends on it: it follows


def _bart() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.BartForConditionalGeneration(
        transformers.BartConfig(
            vocab_size=V,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=96,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
        )
    ).eval()


def test_bart_ffn_fields_follow_each_stream_when_heads_cannot() -> None:
    ids = _ids()
    inputs = {"input_ids": ids[:, :10], "decoder_input_ids": ids[:, :6]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = StructuredPruner(Target(ratio=0.5), ignore=["lm_head"]).fit_transform(_bart(), inputs)
    config = small.config
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim) == (64, 48)
    assert config.encoder_attention_heads == 4 and config.prunekit_layer_widths["num_attention_heads"] == [2]


def test_bart_ffn_prune_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    model, ids = _bart(), _ids()
    inputs = {"input_ids": ids[:, :10], "decoder_input_ids": ids[:, :6]}
    attention = [n for n, _ in model.named_modules() if n.endswith(("self_attn", "encoder_attn"))]
    small = (
        StructuredPruner(Target(ratio=0.5), ignore=["lm_head", "model.shared", *attention])
        .fit_transform(model, inputs)
        .eval()
    )
    small.save_pretrained(tmp_path)
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert [layer.fc1.out_features for layer in again.model.encoder.layers] == [64, 64]
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, small(**inputs).logits)


def test_funnel_d_inner_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = transformers.FunnelModel(
        transformers.FunnelConfig(
            vocab_size=V,
            d_model=64,
            n_head=4,
            d_head=16,
            d_inner=128,
            block_sizes=[1, 1],
            num_decoder_layers=1,
        )
    ).eval()
    ids = _ids(8)
    small = StructuredPruner(Target(ratio=0.5), ignore=["embeddings"]).fit_transform(model, ids).eval()
    assert small.config.d_inner == 64
    small.save_pretrained(tmp_path)
    again = transformers.AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids).last_hidden_state, small(ids).last_hidden_state)


def _mixtral() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(
        transformers.MixtralConfig(
            vocab_size=V,
            hidden_size=64,
            num_hidden_layers=1,
            max_position_embeddings=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
        )
    ).eval()


@pytest.mark.parametrize("target", [Target(ratio=0.3), Target(macs=0.6)])
def test_grouped_mm_expert_widths_stay_aligned(target: Target) -> None:
    model, ids = _mixtral(), _ids()
    assert model.config._experts_implementation == "grouped_mm"
    pruner = StructuredPruner(target, ignore=["lm_head"], round_to=1)
    small = pruner.fit_transform(model, ids)  # NOTE: verified by running the grouped_mm kernel
    experts = small.model.layers[0].mlp.experts
    shapes = [tuple(p.shape[1:]) for p in experts.parameters()]
    assert all(size % 4 == 0 for shape in shapes for size in shape)  # 16 bytes of float32
    assert shapes != [(256, 64), (64, 128)] or small.model.embed_tokens.weight.shape[1] < 64
    assert small(ids).logits.shape == (1, 12, V)
