"""Hugging Face transformers classes: refreshes of their stored widths, and their config fields.

A transformers module records sizes at construction (GPT-2's ``Conv1D.nf`` and ``split_size``,
BERT's ``all_head_size``) and some forwards read them as constants, so after slicing they must
follow the weights. A model's config follows its layers too (``num_attention_heads``,
``intermediate_size`` or ``n_inner``, ``hidden_size``), so that transformers can rebuild it. The
classes are registered by ``attention_modules.register_libraries`` only once transformers is
imported: prunekit never imports it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.graph.groups import ChannelGroup, Member, joined
from prunekit.graph.handlers import bias_heads, timm_modules
from prunekit.graph.registry import refresh_for, register_group_tie, register_refresh

__all__ = ["TRANSFORMERS", "WIDTHS", "KEEP_HEADS", "KEEP_SPLIT", "BLOCKS", "SECTIONS", "TIED", "LayerConfig",
           "aligned_experts", "config_widths", "inner_width", "is_attention",
           "keeps_query_groups", "refresh_attention", "same_head_dims", "tied_widths"]

WIDTHS: dict[type, Callable[[nn.Module], dict[str, int]]] = {}  # class -> its config widths

# Config fields that record a width; each is refreshed when the model has it (aliases included).
WIDTH_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "n_head", "n_heads", "num_heads", "n_embd", "n_inner", "dim", "hidden_dim", "ffn_dim", "d_model",
                "d_ff", "d_kv", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads",
                "decoder_attention_heads", "num_decoder_heads", "embed_dim", "word_embed_proj_dim",
                "moe_intermediate_size", "shared_expert_intermediate_size", "mlp_dim", "ffn_hidden_size",
                "hidden_sizes", "embedding_size", "projection_dim", "q_lora_rank", "kv_lora_rank", "index_n_heads",
                "d_inner", "pooler_hidden_size",  # Funnel's FFN width; DeBERTa's pooler
                # state-space mixers (Mamba-2 and the hybrids built on it): heads and B/C groups
                "n_groups", "mamba_n_heads", "mamba_num_heads", "n_mamba_heads", "mamba_n_groups", "mamba_ngroups",
                "expand", "mamba_expand", "mamba_d_ssm",
                # per-layer inputs (Gemma 3n, Gemma 4): one block of features per layer
                "hidden_size_per_layer_input")
_HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
_HEAD_DIM = ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim", "attn_head_size", "dim_head")
_QUERY = ("q_proj", "query", "q_lin", "q", "to_q", "wq", "query_proj", "project_q", "wq_b")  # wq_b: DSA indexers
_KEY = ("k_proj", "key", "k_lin", "k", "to_k", "wk", "key_proj", "project_k")
_FUSED = ("qkv", "query_key_value", "Wqkv", "qkv_proj")
_IN_PROJ = ("in_proj",)  # DeBERTa's fused q|k|v; Mamba mixers' in_proj is no attention (checked by size)
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
_INNER = ("all_head_size", "inner_dim")


def config_widths(config: Any) -> set[int]:
    """The widths a config holds: its scalar width fields (``WIDTH_FIELDS``) and each head count times
    a head size (Funnel's ``n_head * d_head``, which its refresh keeps per layer). A heterogeneous
    config that refuses a global value for a per-layer field (EmbeddingGemma 2) holds none there."""
    ints = {name: value for name in (*WIDTH_FIELDS, "d_head") if type(value := _field(config, name)) is int}
    inner = {ints[h] * ints[d] for h in _HEADS if h in ints for d in ("head_dim", "d_head", "d_kv") if d in ints}
    return set(ints.values()) | inner


def inner_width(module: nn.Module) -> int | None:
    """A transformers attention's heads times its head size, from its own stored ints (Idefics2's
    perceiver ``reshape(B, N, self.num_heads * self.head_dim)``): its refresh keeps the head count,
    so a view to that product follows the cut. None for any other module."""
    if not is_attention(module):
        return None
    heads, head_dim = _int_attr(module, _HEADS), _int_attr(module, _HEAD_DIM)
    return vars(module)[heads] * vars(module)[head_dim] if heads and head_dim else None


def _field(config: Any, name: str) -> Any:
    """``config.name``, or None where the config has no such field or refuses a global value."""
    try:
        return getattr(config, name, None)
    except Exception:
        return None


@register_group_tie
def tied_widths(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with the encoder's and the decoder's width joined where the forward needs them
    equal: EncoderDecoderModel (and its speech and vision kin) projects the encoder's output for
    the decoder only when their configs' ``hidden_size`` differ, a Python decision the trace does
    not see; with no projection a cut that left them apart would take the branch to a missing layer."""
    for module in model.modules():
        config, encoder, decoder = (getattr(module, n, None) for n in ("config", "encoder", "decoder"))
        if (not (hasattr(config, "encoder") and hasattr(config, "decoder")) or not isinstance(encoder, nn.Module)
                or not isinstance(decoder, nn.Module) or hasattr(module, "enc_to_dec_proj")
                or getattr(getattr(decoder, "config", None), "cross_attention_hidden_size", None) is not None):
            continue
        a, b = (_width_group(model, part, groups) for part in (encoder, decoder))
        if a is None or b is None or a is b or a.size != b.size:
            continue
        one = joined(a, b, "the encoder's and the decoder's widths must stay equal (the forward compares their "
                           "configs' hidden_size and has no projection between them)")
        groups = tuple(one if g is a else g for g in groups if g is not b)
    return groups


GROUPED_MM_ALIGNMENT = 16  # bytes: torch's grouped_mm refuses strides that are not a multiple of this


@register_group_tie
def aligned_experts(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with every width that transformers' ``grouped_mm`` experts kernel reads (the
    non-expert axes of a fused experts module's 3-d weights, Mixtral's and Qwen2-MoE's) cut in blocks of
    16 bytes of channels (4 float32, 8 bfloat16): the kernel refuses other strides, so a cut width
    runs with the model's own experts kernel. Every plan, a budget search's candidates included,
    then keeps whole blocks; a group whose size is no whole number of blocks is kept."""
    experts = _grouped_experts(model)
    return tuple(_aligned(g, experts) for g in groups) if experts else groups


def _grouped_experts(model: nn.Module) -> dict[str, int]:
    """Expert weights (fqn) that a transformers experts module runs through ``grouped_mm`` (its config's
    ``_experts_implementation``) -> the channels one aligned stride holds."""
    found: dict[str, int] = {}
    for name, module in model.named_modules():
        config = vars(module).get("config")
        if (not type(module).__module__.startswith("transformers.")
                or type(vars(module).get("is_transposed")) is not bool
                or getattr(config, "_experts_implementation", None) != "grouped_mm"):
            continue
        for attr, weight in module.named_parameters(recurse=False):
            if weight.dim() == 3:
                found[f"{name}.{attr}" if name else attr] = max(1, GROUPED_MM_ALIGNMENT // weight.element_size())
    return found


def _aligned(group: ChannelGroup, experts: dict[str, int]) -> ChannelGroup:
    """``group`` in units of as many channels as make each of its expert-weight members an aligned width."""
    factor = 1
    for m in group.members:
        align = experts.get(m.tensor)
        if align is not None and m.axis > 0:  # NOTE: axis 0 counts the experts, which are not cut
            factor = math.lcm(factor, align // math.gcd(align, m.inner))
    if factor == 1:
        return group
    if group.size % factor:
        return dataclasses.replace(group, prunable=False, reasons=group.reasons + (
            f"the grouped_mm experts kernel reads widths in multiples of {factor} channels and the group's "
            f"{group.size} are not (set experts_implementation='eager' in the config to cut it)",))
    return dataclasses.replace(group, size=group.size // factor, members=_coarser(group.members, factor),
                               attrs=_coarser(group.attrs, factor))


def _coarser(members: tuple[Member, ...], factor: int) -> tuple[Member, ...]:
    """``members`` in units ``factor`` times as wide (each unit holds ``factor`` of the old ones)."""
    return tuple(dataclasses.replace(m, inner=m.inner * factor) for m in members)


def _width_group(model: nn.Module, part: nn.Module, groups: tuple[ChannelGroup, ...]) -> ChannelGroup | None:
    """The group of ``part``'s width: its input embedding's output channels (a table's columns, a
    patch projection's rows)."""
    embeddings = _input_embeddings(part)
    name = next((n for n, m in model.named_modules() if m is embeddings), None) if embeddings is not None else None
    if name is None or not isinstance(getattr(embeddings, "weight", None), torch.Tensor):
        return None
    axis = 1 if isinstance(embeddings, nn.Embedding) else 0
    return next((g for g in groups if any(m.tensor == f"{name}.weight" and m.axis == axis for m in g.members)), None)


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    """``model.get_input_embeddings()``, or None where it has none (some models raise instead)."""
    try:
        found = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:
        return None
    return found if isinstance(found, nn.Module) else None


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``module`` stores as a plain int."""
    return next((n for n in names if type(vars(module).get(n)) is int), None)


def _rows(module: nn.Module, names: tuple[str, ...]) -> int | None:
    """Output rows of the first child named in ``names`` that holds a Linear-like 2-d weight
    (``nn.Linear``, I-BERT's ``QuantLinear``; GPT-2's ``Conv1D`` stores it transposed)."""
    for name in names:
        child = module._modules.get(name)
        weight = getattr(child, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            return int(weight.shape[1] if type(child).__name__ == "Conv1D" else weight.shape[0])
    return None


def is_attention(module: nn.Module) -> bool:
    """A transformers attention module by its structure: a stored head count and head size, and a
    query (or fused q|k|v) Linear whose rows are whole heads."""
    heads, head_dim = _int_attr(module, _HEADS), _int_attr(module, _HEAD_DIM)
    if not type(module).__module__.startswith("transformers.") or heads is None or head_dim is None:
        return False
    if _rows(module, _QUERY) is not None or _rows(module, _FUSED) is not None:
        return True
    return _rows(module, _IN_PROJ) == 3 * vars(module)[heads] * vars(module)[head_dim]


def refresh_attention(module: nn.Module) -> None:
    """Head counts (and the inner width where stored) from the sliced projections; the head size stays.

    Whole heads are cut, so ``heads = query rows / head size`` (a third of a fused projection's rows).
    """
    head_dim = vars(module)[_int_attr(module, _HEAD_DIM)]  # type: ignore[index]
    rows = _rows(module, _QUERY)
    fused = _rows(module, _FUSED) or _rows(module, _IN_PROJ) or 0
    stored = vars(module)[_int_attr(module, _HEADS)]  # type: ignore[index]
    kv = _int_attr(module, _KV_HEADS)
    if rows is None and kv is not None and _rows(module, _KEY) is None and stored % vars(module)[kv] == 0:
        # NOTE: one fused projection of H query and KV key and value heads ((H + 2 KV) rows of heads:
        # Falcon, Phi-3): key/value groups are cut whole, so H / KV stays
        per = stored // vars(module)[kv]
        setattr(module, kv, fused // ((per + 2) * head_dim))
        heads = per * vars(module)[kv]
    else:
        heads = rows // head_dim if rows is not None else fused // 3 // head_dim
    old = stored * head_dim
    if type(vars(module).get("embed_dim")) is int and module.embed_dim == old:  # NOTE: read as the inner width
        module.embed_dim = heads * head_dim  # (InternVL's reshape(B, N, self.embed_dim))
    for name in _HEADS:
        if type(vars(module).get(name)) is int:
            setattr(module, name, heads)
    for name in _INNER:
        if type(vars(module).get(name)) is int:
            setattr(module, name, heads * head_dim)
    key = _rows(module, _KEY)
    if key is not None and kv is not None:
        setattr(module, kv, key // head_dim)
    if key is not None and type(vars(module).get("num_key_value_groups")) is int:
        module.num_key_value_groups = heads // max(key // head_dim, 1)


def _refresh_config(model: nn.Module) -> None:
    """A Hugging Face model's config follows its layers' widths (every field of ``WIDTH_FIELDS``).

    Each field is probed on the meta device: a model built with the field doubled shows which
    tensor sizes and stored int attributes it sets (those set by this field alone, linearly); the
    pruned model's values there give the field's new value, layer by layer. When every layer
    agrees the config field is set; otherwise the field keeps its old value and
    ``config.prunekit_layer_widths[field]`` lists the width of each layer (None: not found, or two
    modules of the layer disagree). Stored attention widths (head counts) are refreshed first, and
    when the new config builds the pruned shapes, every stored int attribute takes the value the
    config builds (``hidden_size`` of a layer, ``embed_dim`` of an attention, ...).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    for module in model.modules():
        if is_attention(module):
            refresh_attention(module)
        elif _llama_layout(module) and refresh_for(module) not in QUERY_GROUPS_KEPT:
            _refresh_llama_attention(module)  # NOTE: whichever attention the trace ran (see its docstring)
    if getattr(config, "is_heterogeneous", False):  # NOTE: per-layer fields (Gemma 4, EmbeddingGemma 2) refuse a
        return                                        # global value; the saved layout records the widths
    before = {name: getattr(config, name, None) for name in WIDTH_FIELDS}
    _refresh_hidden_size(model, config)  # NOTE: first guesses; the probes below decide
    _registered_widths(model, config)
    _explicit_head_dim(model, config)
    try:
        base = _features(_meta_build(model, config))
    except Exception:  # NOTE: a model its own config does not rebuild (BERT's head count must divide the
        _undo_guesses(config, before)  # guessed hidden_size): the guesses go back, the layout records the widths
        return
    pruned = _features(model)
    probes = {name: _probe(model, config, name, base) for name in _fields(config)}
    owners: dict[Any, set[str]] = {}
    for name, changed in probes.items():
        for key in changed:
            owners.setdefault(key, set()).add(_alias(config, name))
    # NOTE: whole heads are cut, so a head size never changes; a field solved unchanged is known too.
    unchanged = {_alias(config, n) for n in probes if n in _HEAD_DIM_FIELDS}
    solved: dict[str, int] = {}
    per_layer: dict[str, list[int | None]] = {}
    for _ in range(3):  # a field solved unchanged can pin another that shares its tensors
        for name, changed in probes.items():
            if name in solved or name in per_layer:
                continue
            found = _solve(getattr(config, name), changed, owners, unchanged | {_alias(config, name)}, base, pruned)
            if not found:
                continue
            values = set().union(*found.values())
            if len(values) == 1:
                solved[name] = values.pop()
                if solved[name] == getattr(config, name):
                    unchanged.add(_alias(config, name))
            else:
                layers = max(found) + 1
                widths = [next(iter(found[i])) if len(found.get(i, ())) == 1 else None for i in range(layers)]
                if any(w not in (None, getattr(config, name)) for w in widths):  # NOTE: else only ambiguous
                    per_layer[name] = widths
    _kv_heads_follow(config, solved, per_layer)
    old_values = {name: getattr(config, name) for name in solved}
    for name, value in solved.items():
        setattr(config, name, value)
    if solved and _structure_changes(model, config):  # NOTE: ConvBERT builds embeddings_project only
        for name, value in old_values.items():         # while embedding_size != hidden_size
            if solved[name] != value:
                per_layer[_fields_name(config, name)] = [solved[name]]
            setattr(config, name, value)
        solved = {}
    _search_heads(model, config, [n for n in probes if n not in solved and n not in per_layer], pruned)
    constants = changed_constants(model, config)
    if constants:  # NOTE: e.g. Gemma's embedding scale sqrt(hidden_size): those widths stay, loudly stale
        stale = _keep_constants(model, config, before)
        for name, (_, now) in stale.items():
            per_layer[name] = [now]
            solved = {n: v for n, v in solved.items() if _alias(config, n) != _alias(config, name)}
        if not getattr(config, "prunekit_constants", None):  # NOTE: once: the inner model shares the config
            _warn_constants(model, {name: old for name, (old, _) in stale.items()}, constants)
        config.prunekit_constants = constants
    for name in bias_heads.pinned_fields(model):  # NOTE: the head count the model builds its per-head
        now, old = getattr(config, name, None), before.get(name)  # bias from (ALiBi) stays; layers differ
        if type(old) is int and now != old:
            setattr(config, name, old)
            per_layer[_fields_name(config, name)] = [now]
            solved = {n: v for n, v in solved.items() if _alias(config, n) != _alias(config, name)}
    table = dict(getattr(config, "prunekit_layer_widths", None) or {})
    for name in solved:
        table.pop(name, None)
    table.update(per_layer)
    config.prunekit_layer_widths = table or None
    if not _valid(config) or _loads_otherwise(model, config, pruned):
        _undo_guesses(config, before)  # NOTE: BLOOM's pinned n_head over a solved hidden_size builds 4 heads of 8
    _refresh_stored_widths(model, config, pruned)  # of the same shapes where its layers keep 2 heads of 16


def _keep_constants(model: nn.Module, config: Any, before: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Put back the changed width fields that ``config`` builds a changed constant from (Gemma's
    ``hidden_size``, a BART attention's ``scaling`` from ``d_model / heads``), the others (an FFN width)
    keeping their new values; all of them where no single field is to blame. Returns field -> (old, new)."""
    changed: dict[str, tuple[int, int]] = {}
    for name, value in before.items():
        now = getattr(config, name, None)
        if now != value and type(now) is int and type(value) is int:
            changed.setdefault(_fields_name(config, name), (value, now))
    found = set(changed_constants(model, config))
    blamed: dict[str, tuple[int, int]] = {}
    for name, (old, now) in changed.items():
        setattr(config, name, old)
        if set(changed_constants(model, config)) < found:
            blamed[name] = (old, now)
        setattr(config, name, now)
    for name, (old, _) in blamed.items():
        setattr(config, name, old)
    if not blamed or changed_constants(model, config):
        blamed = changed
        for name, (old, _) in changed.items():
            setattr(config, name, old)
    return blamed


def _loads_otherwise(model: nn.Module, config: Any, pruned: dict[Any, int]) -> bool:
    """Whether ``config`` builds every tensor of the pruned shapes but computes otherwise (other head
    sizes, other constants): transformers would load the weights with no complaint into another
    function, where a config of other shapes makes it refuse them."""
    try:
        built = _features(_meta_build(model, config))
    except Exception:  # NOTE: a config its model refuses loads nothing
        return False
    if any(built.get(key) != size for key, size in pruned.items() if key[1] >= 0):
        return False
    return not same_head_dims(model, config) or bool(changed_constants(model, config))


def _warn_constants(model: nn.Module, stale: dict[str, int], constants: list[str]) -> None:
    """Say that the config keeps dense widths (``stale``) because the model computes ``constants`` from
    them, so transformers' own loader refuses the saved folder while prunekit.load rebuilds it."""
    import warnings

    fields = ", ".join(f"{name}={value}" for name, value in stale.items()) or "its widths"
    warnings.warn(f"{type(model.config).__name__} keeps the dense {fields} (the pruned widths are in "
                  f"config.prunekit_layer_widths) because the architecture computes a constant from them "
                  f"({constants[0]}{', ...' if len(constants) > 1 else ''}); transformers' from_pretrained "
                  f"will refuse the saved folder. Load it with prunekit.load.", stacklevel=2)


def _kv_heads_follow(config: Any, solved: dict[str, int], per_layer: dict[str, Any]) -> None:
    """A key/value head count no tensor says (multi-head latent attention builds its keys from
    ``num_attention_heads``, and stores ``num_key_value_groups = heads // kv_heads``) keeps its
    ratio to the head count, so the config does not build a group count of 0 (HY-V4)."""
    heads, kv = "num_attention_heads", "num_key_value_heads"
    old_heads, old_kv = getattr(config, heads, None), getattr(config, kv, None)
    if (heads not in solved or kv in solved or kv in per_layer or type(old_heads) is not int
            or type(old_kv) is not int or old_kv <= 0 or old_heads % old_kv):
        return
    per_group = old_heads // old_kv
    if solved[heads] % per_group == 0:
        solved[kv] = solved[heads] // per_group


def _valid(config: Any) -> bool:
    """Whether a strict config (one with ``validate``) accepts its fields: ``save_pretrained`` checks."""
    try:
        getattr(config, "validate", lambda: None)()
    except Exception:  # NOTE: any validator's error: the fields disagree
        return False
    return True


def _undo_guesses(config: Any, before: dict[str, Any]) -> None:
    """Fields guessed from the pruned model go back to their values, their new ones listed in
    ``config.prunekit_layer_widths``: a config that no longer validates could not be saved (Bamba's
    ``mamba_n_heads`` must divide ``mamba_expand * hidden_size``, and the Mamba width is not cut)."""
    table = dict(getattr(config, "prunekit_layer_widths", None) or {})
    for name, value in before.items():
        now = getattr(config, name, None)
        if now != value and type(now) is int and type(value) is int:
            setattr(config, name, value)
            table[_fields_name(config, name)] = [now]
    config.prunekit_layer_widths = table or None


_HEADS_FIELDS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
                 "decoder_attention_heads")


def _search_heads(model: nn.Module, config: Any, unsolved: list[str], pruned: dict[Any, int]) -> None:
    """A head count no size or stored int says (GPT-NeoX derives its head size from
    ``hidden_size / heads`` and stores no head count): the count, at most the old one, whose
    built model has the pruned shapes and head sizes."""
    for name in unsolved:
        if name not in _HEADS_FIELDS:
            continue
        value = getattr(config, name)
        for heads in range(value, 0, -1):
            setattr(config, name, heads)
            try:
                built = _features(_meta_build(model, config))
            except Exception:  # NOTE: a count its model refuses
                continue
            if all(built.get(k) == v for k, v in pruned.items() if k[1] >= 0) and same_head_dims(model, config):
                break
        else:
            setattr(config, name, value)


def _head_dims(model: nn.Module) -> dict[str, int]:
    """Module name -> the head size stored by each attention module (a query Linear and a head size)."""
    found: dict[str, int] = {}
    for name, module in model.named_modules():
        attr = _int_attr(module, _HEAD_DIM)
        if attr is not None and (_rows(module, _QUERY) is not None or _rows(module, _FUSED) is not None):
            found[name] = vars(module)[attr]
    return found


def _explicit_head_dim(model: nn.Module, config: Any) -> None:
    """A config that derives the head size (``head_dim = None``: ``hidden_size / heads``) gets it
    written out: pruning keeps each head's size, so heads and width can then be cut apart."""
    if getattr(config, "head_dim", None) is not None:
        return
    sizes = set(_head_dims(model).values())
    if len(sizes) != 1:
        return
    had, validate = "head_dim" in vars(config), getattr(config, "validate", None)
    config.head_dim = sizes.pop()
    try:  # NOTE: a config without the field may check it against per-stage head lists (Swin:
        if callable(validate):  # head_dim * num_heads == embed_dim) and so refuse itself
            validate()
    except Exception:
        if had:
            config.head_dim = None
        else:
            del config.head_dim


def _registered_widths(model: nn.Module, config: Any) -> None:
    """Fields the registered classes report (``WIDTHS``) that every layer agrees on are set, so a
    field left unset in the config (GPT-2's ``n_inner`` = None) gets its explicit value."""
    values: dict[str, set[int]] = {}
    for module in model.modules():
        widths = WIDTHS.get(type(module))
        for field_name, value in (widths(module) if widths is not None else {}).items():
            values.setdefault(field_name, set()).add(int(value))
    for field_name, found in values.items():
        if len(found) == 1:
            setattr(config, field_name, found.pop())


_HEAD_DIM_FIELDS = ("head_dim", "d_kv", "attention_head_size", "head_size")


def _solve(value: int, changed: dict[Any, int], owners: dict[Any, set[str]], known: set[str],
           base: dict[Any, int], pruned: dict[Any, int]) -> dict[int, set[int]]:
    """Layer -> the values of a field (``value`` before pruning) that its features give.

    A feature counts when every other field it depends on is known unchanged; it is taken as
    linear in the field (a size of 2x the field's value when the field is doubled).
    """
    for attributes in (False, True):  # NOTE: tensor sizes first; stored ints only where no size says
        found: dict[int, set[int]] = {}
        for key, probed in changed.items():
            if (key[1] == -1) != attributes or key not in pruned or not owners[key] <= known:
                continue
            step, delta = probed - base[key], pruned[key] - base[key]
            if not step or delta * value % step or value + delta * value // step <= 0:
                continue
            layer = _layer_of(key[0])
            found.setdefault(-1 if layer is None else layer, set()).add(value + delta * value // step)
        if found:
            return found
    return {}


def _alias(config: Any, name: str) -> str:
    """The field ``name`` stands for (GPT-2's ``n_embd`` is ``hidden_size``)."""
    return str((getattr(config, "attribute_map", {}) or {}).get(name, name))


def _fields_name(config: Any, name: str) -> str:
    """The name ``_fields`` uses for the field ``name`` stands for."""
    return next((n for n in _fields(config) if _alias(config, n) == _alias(config, name)), name)


def _fields(config: Any) -> list[str]:
    """The width fields this config has as plain ints (an alias and its target both count)."""
    names: dict[str, str] = {}  # NOTE: one name per field, the first of WIDTH_FIELDS
    for name in WIDTH_FIELDS:
        if type(getattr(config, name, None)) is int and getattr(config, name) > 0:
            names.setdefault(_alias(config, name), name)
    return list(names.values())


def _structure_changes(model: nn.Module, config: Any) -> bool:
    """Whether ``config`` builds other parameters than the model has (a module built only while two
    widths differ, and pruning made them equal); then the config keeps its old widths."""
    try:
        built = {name for name, _ in _meta_build(model, config).named_parameters()}
    except Exception:  # NOTE: a config its model refuses is no better
        return True
    return built != {name for name, _ in model.named_parameters()}


def _meta_build(model: nn.Module, config: Any) -> nn.Module:
    """What ``config`` builds for the model's class, on the meta device (no memory, no init)."""
    import copy

    with torch.device("meta"):
        return type(model)(copy.deepcopy(config))


def _probe(model: nn.Module, config: Any, name: str, base: dict[Any, int]) -> dict[Any, int]:
    """The features that change when ``name`` is doubled, with their doubled values."""
    import copy

    probe = copy.deepcopy(config)
    try:
        setattr(probe, name, getattr(config, name) * 2)
        built = _features(_meta_build(model, probe))
    except Exception:  # NOTE: a value its model refuses (a head count that must divide a width)
        return {}
    return {k: v for k, v in built.items() if k in base and base[k] != v}


def _features(model: nn.Module) -> dict[Any, int]:
    """Every tensor size (name, axis) and stored int attribute (module name, attribute) of ``model``."""
    found: dict[Any, int] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        for axis, size in enumerate(tensor.shape):
            found[(name, axis)] = int(size)
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if type(value) is int and not attr.startswith("_") and attr != "layer_idx":
                found[(f"{name}.{attr}" if name else attr, -1)] = value
    return found


def changed_constants(model: nn.Module, config: Any) -> list[str]:
    """Float constants (module attributes, 0-d buffers) that ``config`` would build differently
    from ``model``'s: a config that says the pruned widths would then change what the model
    computes (Gemma scales embeddings by ``sqrt(hidden_size)``), so transformers must not load it."""
    try:
        built = _meta_build(model, config)
    except Exception:
        return []
    mine, theirs = _constants(model), _constants(built)
    return sorted(k for k, v in mine.items() if k in theirs and theirs[k] is not None and v is not None
                  and abs(theirs[k] - v) > 1e-6 * max(1.0, abs(v)))


def _constants(model: nn.Module) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if type(value) is float:
                found[f"{name}.{attr}"] = value
    for name, buffer in model.named_buffers():
        if buffer.dim() == 0 and buffer.is_floating_point():
            found[name] = None if buffer.is_meta else float(buffer)
    return found


def same_head_dims(model: nn.Module, config: Any) -> bool:
    """Whether ``config`` builds attention modules with ``model``'s head sizes (equal shapes alone
    do not tell 4 heads of 8 from 2 heads of 16)."""
    try:
        built = _head_dims(_meta_build(model, config))
    except Exception:
        return False
    return all(built.get(name, size) == size for name, size in _head_dims(model).items())


def _refresh_stored_widths(model: nn.Module, config: Any, pruned: dict[Any, int]) -> None:
    """When the config builds exactly the pruned shapes, stored int widths take the built values."""
    try:
        reference = _features(_meta_build(model, config))
    except Exception:
        return
    shapes = {k: v for k, v in pruned.items() if k[1] >= 0}
    if any(reference.get(k) != v for k, v in shapes.items()) or not same_head_dims(model, config):
        return
    modules = dict(model.named_modules())
    for (name, axis), value in reference.items():
        if axis != -1 or pruned.get((name, axis)) in (None, value):
            continue
        owner, _, attr = name.rpartition(".")
        module = modules.get(owner)
        if module is not None and type(vars(module).get(attr)) is int:
            setattr(module, attr, value)


def _refresh_hidden_size(model: nn.Module, config: Any) -> None:
    """``hidden_size`` follows the residual stream, which the input embedding writes (GPT-2's
    ``n_embd`` through its config's ``attribute_map``).

    NOTE: configs with a separate ``embedding_size`` (ALBERT) project embeddings into the stream,
    so their embedding width says nothing about ``hidden_size``; they are left alone. Some models
    do not implement ``get_input_embeddings`` (they raise): the probes decide for them.
    """
    weight = getattr(_input_embeddings(model), "weight", None)
    if (not isinstance(weight, torch.Tensor) or weight.dim() != 2 or getattr(config, "embedding_size", None)
            or not isinstance(getattr(config, "hidden_size", None), int)):
        return
    config.hidden_size = int(weight.shape[1])


def _layer_of(name: str) -> int | None:
    """The layer index in a module name (``encoder.layer.3.attention.self`` -> 3, T5's ``block.3``)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("block", "layer", "layers", "h", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


# -- BERT and Llama ------------------------------------------------------------------------------

def _refresh_bert_attention(module: nn.Module) -> None:
    module.all_head_size = module.query.weight.shape[0]
    module.num_attention_heads = module.all_head_size // module.attention_head_size


def _refresh_squeezebert_attention(module: nn.Module) -> None:
    """SqueezeBERT's attention (1x1 Conv1d projections, channels first) views its projections as
    ``(N, self.num_attention_heads, self.attention_head_size, W)``: the stored count follows."""
    _refresh_bert_attention(module)


def _llama_layout(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers attention of Llama's layout: ``q_proj`` and ``k_proj``
    Linears and a stored int ``head_dim`` and ``num_key_value_groups`` (Gemma's, Mistral's, Qwen2's
    and most decoders' attention, whatever their class is called)."""
    return (type(module).__module__.startswith("transformers.")
            and all(type(vars(module).get(n)) is int for n in ("num_key_value_groups", "head_dim"))
            and all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj")))


def _query_heads(module: nn.Module) -> int | None:
    """Query heads of an attention of Llama's layout: its query projection's rows over the head size.
    None where the output projection reads another width (Qwen3-Next's query projection holds a gate
    per head too; MiMo-V2's values have a head size of their own): no count is then certain."""
    rows = module.q_proj.weight.shape[0]
    out = getattr(module, "o_proj", None)
    if isinstance(out, nn.Linear) and out.weight.shape[1] != rows:
        return None
    return int(rows) // module.head_dim


def _refresh_llama_attention(module: nn.Module) -> None:
    """``num_key_value_groups`` (what ``repeat_kv`` expands each key/value head to) and a stored
    key/value head count from the sliced projections.

    Any attention of Llama's layout gets this, also without a refresh of its own (the config
    refresh runs it): the count changes only when the one key/value head of multi-query attention
    serves fewer query heads, which SDPA with ``enable_gqa`` traces without ``repeat_kv``, while
    eager attention (or SDPA given a padding mask) calls it with the stored count.
    """
    heads = _query_heads(module)
    if heads is None:
        return
    kv = module.k_proj.weight.shape[0] // module.head_dim
    module.num_key_value_groups = heads // max(kv, 1)
    for name in _KV_HEADS:
        if type(vars(module).get(name)) is int:
            setattr(module, name, kv)


def keeps_query_groups(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers attention whose refresh sets ``num_key_value_groups``
    from its sliced query and key projections; an attention of Llama's layout without a refresh of
    its own gets Llama's, which does (or, where its projections leave the query heads uncertain,
    leaves it to the config refresh)."""
    groups = vars(module).get("num_key_value_groups")
    if not type(module).__module__.startswith("transformers.") or type(groups) is not int:
        return False
    refresh = refresh_for(module)
    if refresh is None and _llama_layout(module):
        register_refresh(type(module))(_refresh_llama_attention)
        refresh = _refresh_llama_attention
    return refresh in QUERY_GROUPS_KEPT


def _refresh_llama_mlp(module: nn.Module) -> None:
    module.hidden_size = module.up_proj.weight.shape[1]
    module.intermediate_size = module.up_proj.weight.shape[0]


def _refresh_llama_layer(module: nn.Module) -> None:
    module.hidden_size = module.input_layernorm.weight.shape[0]  # NOTE: unread by forward, kept true


# -- Phi-3, and a layer's own view of the config ------------------------------------------------

class LayerConfig:
    """A model's config as one layer sees it once pruned: the model's own config, but for the width
    fields this layer was cut to. For forwards that read a width from the shared config (Phi-3's
    ``query_pos = self.config.num_attention_heads * self.head_dim``) when layers keep different
    widths; everything else (the attention implementation, ...) is read from the model's config, so
    it follows later changes there. Saved in the layout record as its fields (``layout_fields``)."""

    def __init__(self, base: Any, **fields: int) -> None:
        base = base.__dict__["base"] if isinstance(base, LayerConfig) else base
        self.__dict__.update(base=base, fields=dict(fields))

    def __getattr__(self, name: str) -> Any:
        held = self.__dict__
        if "fields" not in held:  # NOTE: copy/deepcopy look attributes up before __init__ ran
            raise AttributeError(name)
        return held["fields"][name] if name in held["fields"] else getattr(held["base"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__["fields"]:
            self.__dict__["fields"][name] = value
        else:
            setattr(self.__dict__["base"], name, value)

    def __repr__(self) -> str:
        return f"LayerConfig({type(self.__dict__['base']).__name__}, {self.__dict__['fields']})"

    def layout_fields(self) -> dict[str, int]:
        return dict(self.__dict__["fields"])

    @classmethod
    def from_layout(cls, base: Any, fields: dict[str, int]) -> LayerConfig:
        return cls(base, **fields)


def _layer_config(module: Any, **fields: int) -> None:
    """``module.config`` as this layer sees it once pruned: a :class:`LayerConfig` with ``fields``
    where one differs from the config it reads (each layer may keep other head counts)."""
    if any(getattr(module.config, k) != v for k, v in fields.items()):
        module.config = LayerConfig(module.config, **fields)


def _fused_heads(out_proj: nn.Module, fused: nn.Module, head_dim: int) -> tuple[int, int]:
    """(query heads, key/value heads) from sliced weights: ``out_proj`` reads the query heads; the
    ``fused`` projection holds them and as many key as value heads."""
    heads = out_proj.weight.shape[1] // head_dim
    return heads, (fused.weight.shape[0] // head_dim - heads) // 2


def _phi3_heads(module: Any) -> dict[str, int]:
    """Query and key/value heads of a Phi-3 attention (``o_proj``; fused ``qkv_proj``)."""
    heads, kv = _fused_heads(module.o_proj, module.qkv_proj, module.head_dim)
    return {"num_attention_heads": heads, "num_key_value_heads": kv}


def _refresh_phi3_attention(module: Any) -> None:
    """Phi-3 slices its fused ``qkv_proj`` at ``config.num_attention_heads`` and
    ``self.num_key_value_heads`` heads: both follow the sliced weights (the config through a
    :class:`LayerConfig`, since each layer may keep other head counts)."""
    heads = _phi3_heads(module)
    module.num_key_value_heads = heads["num_key_value_heads"]
    module.num_key_value_groups = heads["num_attention_heads"] // max(heads["num_key_value_heads"], 1)
    _layer_config(module, **heads)


# -- Attention viewed with the shared config's head counts (Moonshine, Parakeet) -----------------

def _config_view_heads(module: Any) -> dict[str, int]:
    return {"num_attention_heads": module.q_proj.weight.shape[0] // module.head_dim,
            "num_key_value_heads": module.k_proj.weight.shape[0] // module.head_dim}


def _refresh_config_view_heads(module: Any) -> None:
    """Moonshine views q, k and v with the shared config's ``num_key_value_heads``; Parakeet (and
    Nemotron's streaming ASR encoder) views its relative keys and per-head biases with
    ``num_attention_heads``. The counts follow the sliced projections through a :class:`LayerConfig`
    (each layer may keep other counts)."""
    heads = _config_view_heads(module)
    module.num_key_value_groups = heads["num_attention_heads"] // max(heads["num_key_value_heads"], 1)
    _layer_config(module, **heads)


# -- Falcon --------------------------------------------------------------------------------------

def _falcon_heads(module: Any) -> dict[str, int]:
    """Query and key/value heads of a Falcon attention (``dense``; fused ``query_key_value``, with one
    key/value head for multi-query, one per group for the new decoder architecture, one per query
    head for the classic one)."""
    heads, kv = _fused_heads(module.dense, module.query_key_value, module.head_dim)
    return {"num_attention_heads": heads, "num_kv_heads": kv}


def _refresh_falcon_attention(module: Any) -> None:
    """Falcon splits its fused projection at ``self.num_heads`` heads (multi-query) or views it in
    ``self.num_kv_heads`` groups: both follow the sliced weights, and so does the count of query heads
    per key/value head that ``repeat_kv`` expands to."""
    heads = _falcon_heads(module)
    module.num_heads, module.num_kv_heads = heads["num_attention_heads"], heads["num_kv_heads"]
    module.num_key_value_groups = module.num_heads // max(module.num_kv_heads, 1)


# -- GPT-BigCode (StarCoder) -------------------------------------------------------------------

def _bigcode_heads(module: Any) -> dict[str, int]:
    """Query heads of a GPT-BigCode attention from its sliced weights (``c_proj`` reads them)."""
    return {"num_attention_heads": module.c_proj.weight.shape[1] // module.head_dim}


def _refresh_bigcode_attention(module: Any) -> None:
    """GPT-BigCode splits ``c_attn`` at ``(self.embed_dim, self.kv_dim, self.kv_dim)`` (multi-query)
    or views it as ``self.num_heads`` heads of q|k|v: the query width, head counts and key/value
    width follow the sliced weights (``embed_dim`` is read as the query width only)."""
    head_dim = module.head_dim
    heads, kv = _fused_heads(module.c_proj, module.c_attn, head_dim)
    if module.is_cross_attention:  # NOTE: c_attn holds key|value only, its queries come from q_attn
        kv = heads
    module.num_heads, module.embed_dim = heads, heads * head_dim
    module.kv_heads, module.kv_dim = kv, kv * head_dim
    module.num_key_value_groups = heads // max(kv, 1)


# -- CvT ------------------------------------------------------------------------------------------

def _refresh_cvt_attention(module: Any) -> None:
    """CvT views each projection as ``(self.num_heads, self.embed_dim // self.num_heads)``: the head
    count and the inner width follow the query projection's rows; the head size stays (its score
    scale, fixed at construction from the old width, too)."""
    head_dim = module.embed_dim // module.num_heads
    module.embed_dim = module.projection_query.weight.shape[0]
    module.num_heads = module.embed_dim // head_dim


# -- Florence-2's vision tower (DaViT, copied) ---------------------------------------------------

def _refresh_florence_channel_attention(module: Any) -> None:
    """Florence-2's channel attention views ``qkv(x)`` as ``(3, self.groups, C // self.groups)`` with
    ``C`` read from the input (tied to the groups, in whole groups): the group count and its stored
    width follow the sliced rows; the group size is the old width over the old count."""
    size = module.dim // module.groups
    module.dim = module.qkv.weight.shape[0] // 3
    module.groups = module.dim // size


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


def _refresh_openai_attention(module: Any) -> None:
    """OpenAI GPT's ``Attention`` splits its fused ``c_attn`` at ``split_size`` like GPT-2 but stores
    no head size (``x.size(-1) // self.n_head``): the head size is read from the old widths, then
    ``split_size`` is one third of the sliced rows and ``n_head`` its whole heads."""
    head_dim = module.split_size // module.n_head
    module.split_size = module.c_attn.weight.shape[1] // 3
    module.n_head = module.split_size // head_dim


def _openai_parts(module: nn.Module) -> int:
    return 3


# -- Funnel Transformer ----------------------------------------------------------------------------

def _refresh_funnel_attention(module: Any) -> None:
    """Funnel's relative attention views q, k, v with ``self.config.n_head``, the shared config's: the
    count follows its per-head parameters (``r_w_bias``), through a :class:`LayerConfig` where it differs."""
    _layer_config(module, n_head=module.r_w_bias.shape[0])


# -- Kimi Delta Attention (Kimi Linear, Bailing hybrid) -------------------------------------------

def _refresh_delta_attention(module: Any) -> None:
    """Kimi Delta Attention splits its conv's q|k|v channels at ``self.qkv_dim`` and reads its head
    count from ``b_proj`` (one gate per head): both follow the sliced weights (its forget gate has a
    refresh of its own)."""
    module.num_heads = module.b_proj.weight.shape[0]
    module.qkv_dim = module.q_proj.weight.shape[0]
    module.conv_dim = 3 * module.qkv_dim


def _refresh_forget_gate(module: Any) -> None:
    """The delta rule's forget gate views its projection with ``self.num_heads`` (one decay per head)."""
    module.num_heads = module.A_log.numel()
    module.qkv_dim = module.dt_bias.shape[0]


# -- Gated DeltaNet (Qwen3.5, OLMo hybrid) ---------------------------------------------------------

def _refresh_gated_delta_net(module: Any) -> None:
    """Gated DeltaNet splits its conv's q|k|v channels at ``(key_dim, key_dim, value_dim)`` and
    repeats each key head over ``num_v_heads // num_k_heads`` value heads: the widths and both head
    counts follow the sliced weights (one ``dt_bias`` per value head; the output projection reads the
    value heads; the conv runs over all three)."""
    out = getattr(module, "out_proj", None) or module.o_proj
    module.num_v_heads = module.dt_bias.shape[0]
    module.value_dim = out.weight.shape[1]
    module.conv_dim = module.conv1d.weight.shape[0]
    module.key_dim = (module.conv_dim - module.value_dim) // 2
    module.num_k_heads = module.key_dim // module.head_k_dim


# -- Gemma 4's audio encoder -----------------------------------------------------------------------

def _refresh_gemma4_audio_attention(module: Any) -> None:
    """Gemma 4's chunked audio attention views q, k, v and its relative keys with ``self.num_heads``
    (its projections wrapped in clippable linears): the count follows ``relative_k_proj``'s rows."""
    module.num_heads = module.relative_k_proj.weight.shape[0] // module.head_dim


def _refresh_gemma3n_position_embedding(module: Any) -> None:
    """Gemma 3n's audio attention computes its relative position logits in a child that views its
    projection with its own ``self.num_heads``: the count follows the projection's rows."""
    module.num_heads = module.pos_proj.weight.shape[0] // module.head_dim


# -- Inkling 2 -------------------------------------------------------------------------------------

def _refresh_inkling2_position_bias(module: Any) -> None:
    """Inkling 2's relative position bias views its projection with ``self.num_heads`` (per-head
    states, one bias per head added to the scores): the count follows its per-head scale."""
    module.num_heads = module.norm.scale.shape[0]


# -- Mamba-2 (and the hybrids that copy its mixer) ----------------------------------------------

def _refresh_mamba2_mixer(module: Any) -> None:
    """A Mamba-2 mixer splits ``in_proj``'s rows at ``(intermediate_size, conv_dim, num_heads)``, the
    conv's channels at ``(intermediate_size, n_groups * state, n_groups * state)`` and views the heads
    with ``num_heads``/``head_dim``; its gated norm normalises groups of ``group_size`` channels.
    Each follows the sliced weights: ``A_log`` holds one value per head, ``out_proj`` reads the
    heads' channels, the depthwise conv runs over them and the B and C rows of every group (whole
    heads are cut, so ``head_dim`` stays)."""
    module.num_heads = module.A_log.shape[0]
    module.intermediate_size = module.out_proj.weight.shape[1]
    module.conv_dim = module.conv1d.weight.shape[0]
    module.n_groups = (module.conv_dim - module.intermediate_size) // (2 * module.ssm_state_size)
    module.hidden_size = module.in_proj.weight.shape[1]
    module.norm.group_size = module.intermediate_size // max(module.n_groups, 1)


# -- Per-layer inputs (Gemma 3n, Gemma 4, EmbeddingGemma 2) -------------------------------------

def _refresh_per_layer_inputs(module: Any) -> None:
    """Per-layer embeddings pack one input of ``hidden_size_per_layer_input`` features per layer into
    one width, viewed as ``[..., num_layers, hidden_size_per_layer_input]``: the same features of every
    layer's block are cut (shape.BLOCK_SIZE_FOLLOWS), so the size follows the norm applied to each block.
    A model (Gemma's text model) refreshes its config too."""
    norm = getattr(module, "per_layer_projection_norm", None)
    if norm is not None:
        module.hidden_size_per_layer_input = norm.weight.shape[0]
    if hasattr(module, "base_model_prefix"):
        _refresh_config(module)


def _refresh_zamba_mixer(module: Any) -> None:
    """Zamba's mixer views its inner channels per head (``[n_mamba_heads, mamba_head_dim]``) and scans
    the heads in a Python loop over the stored count: the count stays, the same channels of every head
    are cut (shape.BLOCK_SIZE_FOLLOWS), and the sizes follow the per-channel skip weights ``D``."""
    module.mamba_head_dim = module.D.shape[1]
    module.intermediate_size = module.n_mamba_heads * module.mamba_head_dim


def _mamba_head_dim(module: Any) -> int:
    return module.mamba_head_dim


def _per_layer_input_size(module: Any) -> int:
    return module.hidden_size_per_layer_input


def _refresh_per_layer_gate(module: Any) -> None:
    """A layer's gate against its per-layer input: its size is the gate's output width."""
    gate = getattr(module, "per_layer_input_gate", None)
    if gate is not None:
        module.hidden_size_per_layer_input = gate.weight.shape[0]


# NOTE: a refresh may return a replacement module (a real, importable class) or None.
_Refresh = Callable[[nn.Module], "nn.Module | None"]
_TIMM_ATTENTION = timm_modules.TIED[0]  # timm's attention refresh, for its copies in transformers
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
    "transformers.models.imagegpt.modeling_imagegpt": [  # GPT-2's attention, copied
        ("ImageGPTAttention", _refresh_gpt2_attention, _gpt2_heads)],
    "transformers.models.decision_transformer.modeling_decision_transformer": [  # GPT-2's, copied
        ("DecisionTransformerGPT2Attention", _refresh_gpt2_attention, _gpt2_heads),
        ("DecisionTransformerGPT2MLP", None, lambda m: {"n_inner": m.c_fc.weight.shape[1]})],
    "transformers.models.openai.modeling_openai": [
        ("Attention", _refresh_openai_attention, lambda m: {"num_attention_heads": m.n_head})],
    "transformers.models.phi3.modeling_phi3": [("Phi3Attention", _refresh_phi3_attention, _phi3_heads)],
    "transformers.models.falcon.modeling_falcon": [("FalconAttention", _refresh_falcon_attention, _falcon_heads)],
    "transformers.models.moonshine.modeling_moonshine": [
        ("MoonshineAttention", _refresh_config_view_heads, _config_view_heads)],
    "transformers.models.moonshine_streaming.modeling_moonshine_streaming": [
        ("MoonshineStreamingAttention", _refresh_config_view_heads, _config_view_heads)],
    "transformers.models.parakeet.modeling_parakeet": [
        ("ParakeetEncoderAttention", _refresh_config_view_heads, _config_view_heads)],
    "transformers.models.nemotron_asr_streaming.modeling_nemotron_asr_streaming": [
        ("NemotronAsrStreamingEncoderAttention", _refresh_config_view_heads, _config_view_heads)],
    "transformers.models.cvt.modeling_cvt": [("CvtSelfAttention", _refresh_cvt_attention, None)],
    "transformers.models.squeezebert.modeling_squeezebert": [
        ("SqueezeBertSelfAttention", _refresh_squeezebert_attention,
         lambda m: {"num_attention_heads": m.query.weight.shape[0] // m.attention_head_size})],
    "transformers.models.gpt_bigcode.modeling_gpt_bigcode": [
        ("GPTBigCodeAttention", _refresh_bigcode_attention, _bigcode_heads)],
    # NOTE: timm's attention, copied: timm's refresh (the stored head count; the width tied to the input's)
    "transformers.models.timesformer.modeling_timesformer": [
        ("TimesformerSelfAttention", _TIMM_ATTENTION, lambda m: {"num_attention_heads": m.num_heads})],
    "transformers.models.vitdet.modeling_vitdet": [("VitDetAttention", _TIMM_ATTENTION, None)],
    "transformers.models.florence2.modeling_florence2": [  # DaViT's vision tower
        ("Florence2VisionWindowAttention", _TIMM_ATTENTION, None),
        ("Florence2VisionChannelAttention", _refresh_florence_channel_attention, None)],
    "transformers.models.phi4_multimodal.modeling_phi4_multimodal": [  # Phi-3's attention, copied
        ("Phi4MultimodalAttention", _refresh_phi3_attention, _phi3_heads)],
    "transformers.models.funnel.modeling_funnel": [
        ("FunnelRelMultiheadAttention", _refresh_funnel_attention, lambda m: {"n_head": m.r_w_bias.shape[0]})],
    "transformers.models.bailing_hybrid.modeling_bailing_hybrid": [
        ("BailingHybridDeltaAttention", _refresh_delta_attention, None),
        ("BailingHybridForgetGate", _refresh_forget_gate, None)],
    "transformers.models.kimi_linear.modeling_kimi_linear": [
        ("KimiLinearDeltaAttention", _refresh_delta_attention, None),
        ("KimiLinearForgetGate", _refresh_forget_gate, None)],
    "transformers.models.qwen3_5.modeling_qwen3_5": [("Qwen3_5GatedDeltaNet", _refresh_gated_delta_net, None)],
    "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe": [
        ("Qwen3_5MoeGatedDeltaNet", _refresh_gated_delta_net, None)],
    "transformers.models.olmo_hybrid.modeling_olmo_hybrid": [
        ("OlmoHybridGatedDeltaNet", _refresh_gated_delta_net, None)],
    "transformers.models.gemma4.modeling_gemma4": [
        ("Gemma4AudioAttention", _refresh_gemma4_audio_attention,
         lambda m: {"num_attention_heads": m.relative_k_proj.weight.shape[0] // m.head_dim}),
        ("Gemma4TextModel", _refresh_per_layer_inputs, None),
        ("Gemma4TextDecoderLayer", _refresh_per_layer_gate, None)],
    "transformers.models.gemma3n.modeling_gemma3n": [
        ("Gemma3nAudioRelativePositionEmbedding", _refresh_gemma3n_position_embedding, None),
        ("Gemma3nTextModel", _refresh_per_layer_inputs, None),
        ("Gemma3nTextDecoderLayer", _refresh_per_layer_gate, None)],
    "transformers.models.zamba.modeling_zamba": [("ZambaMambaMixer", _refresh_zamba_mixer, None)],
    "transformers.models.embedding_gemma2.modeling_embedding_gemma2": [
        ("EmbeddingGemma2TextPLE", _refresh_per_layer_inputs, None),
        ("EmbeddingGemma2TextPLEBlock", _refresh_per_layer_gate, None)],
    "transformers.models.inkling2.modeling_inkling2": [
        ("Inkling2RelativePositionBias", _refresh_inkling2_position_bias, None)],
    "transformers.models.inkling2_loop.modeling_inkling2_loop": [
        ("Inkling2LoopRelativePositionBias", _refresh_inkling2_position_bias, None)],
    # NOTE: Mamba-2's mixer and its copies in the hybrids (attributes alike)
    "transformers.models.mamba2.modeling_mamba2": [("Mamba2Mixer", _refresh_mamba2_mixer, None)],
    "transformers.models.bamba.modeling_bamba": [("BambaMixer", _refresh_mamba2_mixer, None)],
    "transformers.models.nemotron_h.modeling_nemotron_h": [("NemotronHMamba2Mixer", _refresh_mamba2_mixer, None)],
    "transformers.models.zamba2.modeling_zamba2": [("Zamba2MambaMixer", _refresh_mamba2_mixer, None)],
    "transformers.models.falcon_h1.modeling_falcon_h1": [("FalconH1Mixer", _refresh_mamba2_mixer, None)],
    "transformers.models.granitemoehybrid.modeling_granitemoehybrid": [
        ("GraniteMoeHybridMambaLayer", _refresh_mamba2_mixer, None)],
}
# Refreshes that keep the head count a forward reads as a constant, or the size it splits at.
KEEP_HEADS: tuple[_Refresh, ...] = (_refresh_gpt2_attention, _refresh_openai_attention, _refresh_bigcode_attention,
                                    _refresh_florence_channel_attention, _refresh_cvt_attention,
                                    _refresh_squeezebert_attention, _refresh_mamba2_mixer,
                                    _refresh_gemma4_audio_attention, _refresh_funnel_attention,
                                    _refresh_delta_attention, _refresh_forget_gate, _refresh_inkling2_position_bias,
                                    _refresh_gated_delta_net, _refresh_config_view_heads,
                                    _refresh_gemma3n_position_embedding)
KEEP_SPLIT: dict[_Refresh, Callable[[nn.Module], int]] = {_refresh_gpt2_attention: _gpt2_parts,
                                                          _refresh_openai_attention: _openai_parts}
# Refreshes that keep the block size their forward views a packed width with (shape.BLOCK_SIZE_FOLLOWS).
BLOCKS: dict[_Refresh, Callable[[nn.Module], int]] = {_refresh_per_layer_inputs: _per_layer_input_size,
                                                      _refresh_zamba_mixer: _mamba_head_dim}
# Of those, the ones whose forward reads its width from the input: the trace keeps their size ties.
TIED: tuple[_Refresh, ...] = (_refresh_florence_channel_attention,)
# Refreshes that keep the bounds their forward slices or splits channels at (shape.SPLIT_SECTIONS_FOLLOW).
SECTIONS: tuple[_Refresh, ...] = (_refresh_phi3_attention, _refresh_falcon_attention, _refresh_bigcode_attention,
                                  _refresh_mamba2_mixer, _refresh_delta_attention, _refresh_gated_delta_net)
# Refreshes that set num_key_value_groups from the sliced query and key projections (shape.QUERY_GROUPS_FOLLOW).
QUERY_GROUPS_KEPT: tuple[_Refresh, ...] = (_refresh_llama_attention, _refresh_phi3_attention, _refresh_falcon_attention,
                                           _refresh_bigcode_attention, refresh_attention)
