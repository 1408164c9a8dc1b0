"""Hugging Face transformers classes: refreshes of their stored widths, and their config fields.

A transformers module records sizes at construction (GPT-2's ``Conv1D.nf`` and ``split_size``,
BERT's ``all_head_size``) and some forwards read them as constants, so after slicing they must
follow the weights. A model's config follows its layers too (``num_attention_heads``,
``intermediate_size`` or ``n_inner``, ``hidden_size``), so that transformers can rebuild it. The
classes are registered by ``attention_modules.register_libraries`` only once transformers is
imported: prunekit never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["TRANSFORMERS", "WIDTHS", "KEEP_HEADS", "KEEP_SPLIT"]

WIDTHS: dict[type, Callable[[nn.Module], dict[str, int]]] = {}  # class -> its config widths


def _refresh_config(model: nn.Module) -> None:
    """A Hugging Face model's config follows its layers' widths (``num_attention_heads``, ...).

    When every layer agrees the config field is set; otherwise the field keeps its old value and
    ``config.prunekit_layer_widths[field]`` lists the width of each layer (None: not found, or two
    modules of the layer disagree).
    """
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if config is None or not layers:
        return
    _refresh_hidden_size(model, config)
    per_layer: dict[str, list[int | None]] = {}
    seen: set[tuple[str, int]] = set()
    for name, module in model.named_modules():
        widths, layer = WIDTHS.get(type(module)), _layer_of(name)
        if widths is None or layer is None or layer >= layers:
            continue
        for field_name, value in widths(module).items():
            values = per_layer.setdefault(field_name, [None] * layers)
            # NOTE: one config field for two modules of a layer (GPT-2's cross-attention heads).
            values[layer] = value if (field_name, layer) not in seen or values[layer] == value else None
            seen.add((field_name, layer))
    table = dict(getattr(config, "prunekit_layer_widths", None) or {})
    for field_name, values in per_layer.items():
        if len(set(values)) == 1 and values[0] is not None:
            setattr(config, field_name, values[0])
            table.pop(field_name, None)
        else:
            table[field_name] = values
    config.prunekit_layer_widths = table or None


def _refresh_hidden_size(model: nn.Module, config: Any) -> None:
    """``hidden_size`` follows the residual stream, which the input embedding writes (GPT-2's
    ``n_embd`` through its config's ``attribute_map``).

    NOTE: configs with a separate ``embedding_size`` (ALBERT) project embeddings into the stream,
    so their embedding width says nothing about ``hidden_size``; they are left alone.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    if (not isinstance(weight, torch.Tensor) or weight.dim() != 2 or getattr(config, "embedding_size", None)
            or not isinstance(getattr(config, "hidden_size", None), int)):
        return
    config.hidden_size = int(weight.shape[1])


def _layer_of(name: str) -> int | None:
    """The layer index in a module name (``encoder.layer.3.attention.self`` -> 3)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers", "h", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


# -- BERT and Llama ------------------------------------------------------------------------------

def _refresh_bert_attention(module: nn.Module) -> None:
    module.all_head_size = module.query.weight.shape[0]
    module.num_attention_heads = module.all_head_size // module.attention_head_size


def _refresh_llama_attention(module: nn.Module) -> None:
    heads = module.q_proj.weight.shape[0] // module.head_dim
    module.num_key_value_groups = heads // (module.k_proj.weight.shape[0] // module.head_dim)  # unchanged


def _refresh_llama_mlp(module: nn.Module) -> None:
    module.hidden_size = module.up_proj.weight.shape[1]
    module.intermediate_size = module.up_proj.weight.shape[0]


def _refresh_llama_layer(module: nn.Module) -> None:
    module.hidden_size = module.input_layernorm.weight.shape[0]  # NOTE: unread by forward, kept true


# -- GPT-2 ---------------------------------------------------------------------------------------

def _refresh_conv1d(module: nn.Module) -> None:
    """transformers' ``Conv1D`` (GPT-2 family): weight (nx, nf); its forward reshapes to ``self.nf``."""
    module.nx, module.nf = (int(s) for s in module.weight.shape)


def _gpt2_parts(module: nn.Module) -> int:
    """How many equal parts ``c_attn``'s output holds: q|k|v, or k|v for cross-attention."""
    return 2 if getattr(module, "is_cross_attention", False) else 3


def _refresh_gpt2_attention(module: Any) -> None:
    """Whole heads are cut alike in each part of the fused ``c_attn`` (the graph unifies the
    parts of its equal split), so ``split_size`` is one part and ``num_heads`` its heads."""
    module.split_size = module.c_attn.weight.shape[1] // _gpt2_parts(module)
    module.num_heads = module.split_size // module.head_dim
    module.embed_dim = module.c_proj.weight.shape[1]  # the residual width it writes


def _refresh_gpt2_model(module: Any) -> None:
    """``GPT2Model`` is a PreTrainedModel: its config follows too (when it is the model pruned)."""
    module.embed_dim = module.wte.weight.shape[1]
    _refresh_config(module)


def _gpt2_heads(module: Any) -> dict[str, int]:
    return {"num_attention_heads": module.c_attn.weight.shape[1] // _gpt2_parts(module) // module.head_dim}


# NOTE: a refresh may return a replacement module (a real, importable class) or None.
_Refresh = Callable[[nn.Module], "nn.Module | None"]
# module name -> (class name, refresh, config widths) registered once that module is imported
TRANSFORMERS: dict[str, list[tuple[str, _Refresh | None, Callable[..., dict[str, int]] | None]]] = {
    "transformers.modeling_utils": [("PreTrainedModel", _refresh_config, None)],
    "transformers.pytorch_utils": [("Conv1D", _refresh_conv1d, None)],
    "transformers.models.bert.modeling_bert": [
        ("BertSelfAttention", _refresh_bert_attention, lambda m: {"num_attention_heads": m.query.weight.shape[0]
                                                                  // m.attention_head_size}),
        ("BertIntermediate", None, lambda m: {"intermediate_size": m.dense.weight.shape[0]})],
    "transformers.models.llama.modeling_llama": [
        ("LlamaAttention", _refresh_llama_attention, lambda m: {
            "num_attention_heads": m.q_proj.weight.shape[0] // m.head_dim,
            "num_key_value_heads": m.k_proj.weight.shape[0] // m.head_dim}),
        ("LlamaMLP", _refresh_llama_mlp, lambda m: {"intermediate_size": m.up_proj.weight.shape[0]}),
        ("LlamaDecoderLayer", _refresh_llama_layer, None)],
    "transformers.models.gpt2.modeling_gpt2": [
        ("GPT2Attention", _refresh_gpt2_attention, _gpt2_heads),
        ("GPT2MLP", None, lambda m: {"n_inner": m.c_fc.weight.shape[1]}),
        ("GPT2Model", _refresh_gpt2_model, None)],
}
# Refreshes that keep the head count a forward reads as a constant, or the size it splits at.
KEEP_HEADS: tuple[_Refresh, ...] = (_refresh_gpt2_attention,)
KEEP_SPLIT: dict[_Refresh, Callable[[nn.Module], int]] = {_refresh_gpt2_attention: _gpt2_parts}
