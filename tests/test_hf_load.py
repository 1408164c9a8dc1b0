"""prunekit.load of a Hugging Face folder goes through transformers' own from_pretrained with the
modules reshaped to the saved per-layer widths, so transformers' key renames (ViT's legacy
``encoder.layer.N.attention.attention.query`` names) and weight conversions (Mixtral's experts) apply."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import DataError
from prunekit.graph import DependencyGraph
from prunekit.importance import random
from prunekit.structured import allocate, apply

transformers = pytest.importorskip("transformers")


def _vit() -> tuple[nn.Module, torch.Tensor]:
    config = transformers.ViTConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
                                    image_size=16, patch_size=4, num_labels=3)
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(config).eval(), torch.randn(2, 3, 16, 16)


def _mixtral() -> tuple[nn.Module, torch.Tensor]:
    config = transformers.MixtralConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                        intermediate_size=64, num_hidden_layers=2, vocab_size=50, num_local_experts=2,
                                        max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(config).eval(), torch.randint(1, 50, (2, 5))


def _per_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Heads cut by half in layer 1 only: no config can say it."""
    graph = DependencyGraph.trace(model, x)
    heads = [g for g in graph.prunable  # NOTE: an attention projection's group (MoE widths are in blocks too)
             if "att" in g.id and any(m.inner > 1 and m.role == "producer" for m in g.members)]
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in heads}, 0.5)
    first = heads[0]
    plan = type(plan)(keep={**plan.keep, first.id: tuple(range(first.size))}, sizes=plan.sizes, meta=plan.meta)
    return apply(model, graph, plan, example_inputs=x).eval()


def _out(model: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return model.eval()(x).logits


@pytest.mark.parametrize("factory", [_vit, _mixtral])
def test_per_layer_widths_load_through_transformers_renames(factory: Any, tmp_path: Path) -> None:
    model, x = factory()
    small = _per_layer(model, x)
    assert small.config.prunekit_layer_widths
    folder = prunekit.save(small, tmp_path / "m")
    loaded = prunekit.load(folder)
    assert type(loaded) is type(small)
    torch.testing.assert_close(_out(loaded, x), _out(small, x), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(loaded.state_dict().items(), small.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_folder_of_another_shape_is_refused_not_reinitialised(tmp_path: Path) -> None:
    model, x = _vit()
    folder = prunekit.save(_per_layer(model, x), tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    tensors = manifest["layout"]["tensors"]
    assert tensors["vit.layers.1.attention.q_proj.weight"]["shape"] == [16, 32]
    tensors["vit.layers.1.attention.q_proj.weight"]["shape"] = [8, 32]  # a width the file does not hold
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="does not match"):
        prunekit.load(folder)


def test_renamed_output_head_loads(tmp_path: Path) -> None:
    """GPT-NeoX saves its LM head as ``embed_out``: transformers renames it to ``lm_head`` on load,
    which it does for its own classes only (the reshaping subclass must look like one)."""
    config = transformers.GPTNeoXConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                        num_hidden_layers=2, vocab_size=50, max_position_embeddings=16)
    torch.manual_seed(0)
    model, x = transformers.GPTNeoXForCausalLM(config).eval(), torch.randint(1, 50, (2, 5))
    small = _per_layer(model, x)
    loaded = prunekit.load(prunekit.save(small, tmp_path / "m"))
    torch.testing.assert_close(_out(loaded, x), _out(small, x), rtol=1e-4, atol=1e-5)


def test_a_sliced_table_that_the_config_would_make_again_is_kept(tmp_path: Path) -> None:
    """SpeechT5's decoder reads positions from a sinusoidal table (a non-persistent buffer). Its
    kept columns are not the table a narrower module makes, and the config, which cannot say the
    encoder's and decoder's widths apart, builds it at the cut shape: the table is saved anyway,
    and transformers' loader does not make it again (it used to fail on the stale width)."""
    config = transformers.SpeechT5Config(hidden_size=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                         vocab_size=40, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                         speech_decoder_prenet_units=32)
    torch.manual_seed(0)
    model = transformers.SpeechT5ForSpeechToText(config).eval()
    inputs = (torch.randn(1, 800), None, torch.randint(1, 40, (1, 5)))  # NOTE: forward(values, mask, ids)
    graph = DependencyGraph.trace(model, inputs)
    table = "speecht5.decoder.prenet.embed_positions.weights"
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    small = apply(model, graph, plan, example_inputs=inputs).eval()
    assert dict(small.named_buffers())[table].shape[1] == 16
    assert prunekit.hf.reference(small).get_buffer(table).shape[1] == 16  # NOTE: same shape, other values
    folder = prunekit.save(small, tmp_path / "m")
    assert table in json.loads((folder / "manifest.json").read_text())["layout"]["buffers"]
    loaded = prunekit.load(folder)
    assert torch.equal(dict(loaded.named_buffers())[table], dict(small.named_buffers())[table])
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs).logits, small(*inputs).logits, rtol=1e-4, atol=1e-5)


def _big_bird() -> tuple[nn.Module, torch.Tensor]:
    config = transformers.BigBirdConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
                                        vocab_size=50, max_position_embeddings=64, block_size=4, num_random_blocks=2)
    torch.manual_seed(0)
    return transformers.BigBirdForMaskedLM(config).eval(), torch.randint(1, 50, (1, 8))


def test_a_setting_the_model_changed_on_itself_is_saved_in_its_config(tmp_path: Path) -> None:
    """BigBird swaps its block-sparse attention for full attention on a short sequence and records it
    only in its modules; the saved config says so, and both loaders build the model it became."""
    model, x = _big_bird()
    _out(model, x)  # NOTE: 8 tokens <= (5 + 2 * 2) * 4: the model switches itself to full attention.
    assert model.bert.attention_type == "original_full" and model.config.attention_type == "block_sparse"
    folder = prunekit.save(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["attention_type"] == "original_full"
    assert model.config.attention_type == "original_full"
    long = torch.randint(1, 50, (1, 48))  # NOTE: long enough for block-sparse attention.
    for loaded in (prunekit.load(folder), transformers.BigBirdForMaskedLM.from_pretrained(folder)):
        assert type(loaded.bert.encoder.layer[0].attention.self) is type(model.bert.encoder.layer[0].attention.self)
        torch.testing.assert_close(_out(loaded, long), _out(model, long), rtol=1e-4, atol=1e-5)


def test_a_failed_save_leaves_the_config_as_it_was(tmp_path: Path) -> None:
    model, x = _big_bird()
    _out(model, x)
    model.bert.encoder.layer[1].output = nn.Tanh()  # NOTE: a change no record can hold.
    with pytest.raises(prunekit.errors.ConfigError, match="save: module"):
        prunekit.save(model, tmp_path / "m")
    assert model.config.attention_type == "block_sparse"
    assert not (tmp_path / "m").exists()
