"""Small config fields that must agree with the survey's common ones (used by coverage_hf.py).

The common overrides (width 64, 4 heads, 2 layers) leave some configs inconsistent: a head size or a
key/value head count left None for the model to derive in ways that need the default width, a
rotary size above the head size, multimodal rotary sections that must sum to half the head size,
grouped convs with more groups than channels, and per-stage lists of hierarchical models (heads per
stage next to a smaller width, widths and depths per stage). Lists keep their length; their values
are scaled, so the stage layout stays the model's own.
"""

from __future__ import annotations

from typing import Any

HEAD = 16  # the survey's head size: width 64 / 4 heads
HEAD_LISTS = ("num_heads", "num_attention_heads", "num_attention_heads_per_stage")
WIDTH_LISTS = ("hidden_sizes", "embed_dim_per_stage", "base_attn_unit_dims")
DEPTH_LISTS = ("depths", "blocks_per_stage", "num_block_repeats", "n_attn_blocks", "block_sizes")
FIRST_WIDTH = 16  # the first stage's width when a model lists its widths per stage


def field(config: Any, name: str) -> Any:
    """``config.name``, or None where the config refuses to say it globally (a per-layer field: Gemma 4)."""
    try:
        return getattr(config, name, None)
    except RuntimeError:
        return None


def fit(default: Any, small: dict[str, Any]) -> dict[str, Any]:
    """``small`` made consistent for ``default``'s config class: fields it refuses to set dropped
    (XLNet's unlimited positions, Falcon's derived head_dim, Funnel's layers), fields added."""
    small = {k: v for k, v in small.items() if _settable(default, k, v)}
    return small | _added(default, small)


def _settable(default: Any, name: str, value: Any) -> bool:
    try:
        type(default)(**{name: value})
    except (NotImplementedError, AttributeError):
        return False
    except Exception:  # NOTE: a field that only agrees with the others is judged with them
        return True
    return True


def _builds(default: Any, small: dict[str, Any]) -> bool:
    try:
        type(default)(**small)
    except Exception:  # NOTE: only whether it builds
        return False
    return True


def _added(default: Any, small: dict[str, Any]) -> dict[str, Any]:
    fields = vars(default)
    out: dict[str, Any] = {}
    heads, width = small.get("num_attention_heads"), small.get("hidden_size") or small.get("embed_dim")
    if heads:
        if "head_dim" in fields and fields["head_dim"] is None:
            out["head_dim"] = HEAD
        kv = fields.get("num_key_value_heads", 0)
        if kv is None or kv == fields.get("num_attention_heads") and not _builds(default, small) \
                and _builds(default, small | {"num_key_value_heads": heads}):
            out["num_key_value_heads"] = heads  # NOTE: multi-head by default; ESMC refuses grouped queries
    if fields.get("n_routed_experts", 0) is None:  # NOTE: dots1 routes no expert count by default
        out |= {"n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2}
    vocab = None if _builds(default, small) else small.get("vocab_size")
    for name, value in fields.items():  # a special token id beyond the small vocabulary (a CTC blank)
        if vocab and type(value) is int and name.endswith("token_id") and value >= vocab and name not in (
                "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            out[name] = vocab - 1
    positions = small.get("max_position_embeddings")
    if positions and type(fields.get("context_size")) is int and fields["context_size"] > positions \
            and not _builds(default, small):
        out["context_size"] = positions
    if width and type(fields.get("hidden_size")) is int and not _builds(default, small):
        for name in ("codebook_dim", "adapter_input_size"):  # NOTE: must equal the width (no projection)
            if fields.get(name) == fields["hidden_size"]:
                out[name] = width
    if type(fields.get("expand")) is int and "num_heads" in small and width and not _builds(default, small):
        out["num_heads"] = width * fields["expand"] // (small.get("head_dim") or HEAD)  # Mamba-2: heads x head
                                                                                        # size = width x expand
    if type(fields.get("rotary_dim")) is int and fields["rotary_dim"] > HEAD:
        out["rotary_dim"] = HEAD // 2
    rope = fields.get("rope_parameters")
    reads_sections = "mrope_section" in getattr(type(default), "ignore_keys_at_rope_validation", ())
    if isinstance(rope, dict) and (isinstance(rope.get("mrope_section"), (list, tuple)) or reads_sections):
        # NOTE: multimodal rotary sections (time, height, width) split half the rotary size; a model that
        # reads them with a code default ([16, 24, 24]) gets them written out
        partial = rope.get("partial_rotary_factor") or fields.get("partial_rotary_factor") or 1.0
        half = int((small.get("head_dim") or out.get("head_dim") or HEAD) * partial) // 2
        if half >= 3:  # NOTE: three sections of at least one; a smaller rotary part (Qwen3.5) keeps its own
            out["rope_parameters"] = rope | {"mrope_section": _scaled_to_sum(
                list(rope.get("mrope_section") or [2, 3, 3]), half)}
    for name in ("upsample_groups", "groups"):
        if type(fields.get(name)) is int and width and fields[name] > width:
            out[name] = width
    out |= _stages(fields, small)
    return out


def _stages(fields: dict[str, Any], small: dict[str, Any]) -> dict[str, Any]:
    """Per-stage lists of a model whose stages the common fields break (heads per stage beside a scaled
    ``embed_dim``: Swin; a stage count aliased to the layer count: ConvNeXt): heads scaled with the
    width, widths from FIRST_WIDTH, depth 1, the stage count and the default image size kept."""
    out: dict[str, Any] = {}
    windowed = type(fields.get("embed_dim")) is int and "embed_dim" in small and any(
        _ints(fields.get(n)) for n in HEAD_LISTS)  # NOTE: Swin and kin: heads per stage next to a scaled width
    if not windowed and type(fields.get("num_stages")) is not int:
        return out  # NOTE: other hierarchical models build with the common fields and keep their lists
    layers = fields.get("num_hidden_layers")
    if "num_hidden_layers" in small and any(isinstance(fields.get(n), (list, tuple)) and len(fields[n]) == layers
                                            for n in WIDTH_LISTS + DEPTH_LISTS + ("patch_sizes",)):
        out["num_hidden_layers"] = layers  # NOTE: one listed entry per layer (Muse Spark's audio encoder)
    stages = fields.get("num_stages")
    if type(stages) is int:  # NOTE: ConvNeXt maps num_hidden_layers to num_stages: one per listed stage
        out |= {name: stages for name in ("num_hidden_layers", "num_stages") if name in small or name == "num_stages"}
    if fields.get("image_size") is not None and "image_size" in small:
        out["image_size"] = fields["image_size"]  # NOTE: windows and stage strides need the default resolution
    scale = None
    if type(fields.get("embed_dim")) is int and "embed_dim" in small:
        scale = small["embed_dim"] / fields["embed_dim"]
    for name in WIDTH_LISTS:
        if _ints(fields.get(name)):
            scale = scale or FIRST_WIDTH / fields[name][0]
            out[name] = type(fields[name])(max(1, round(v * FIRST_WIDTH / fields[name][0])) for v in fields[name])
    for name in HEAD_LISTS:
        if _ints(fields.get(name)) and scale:
            out[name] = type(fields[name])(max(1, round(v * scale)) for v in fields[name])
    for name in DEPTH_LISTS:
        if _ints(fields.get(name)):
            out[name] = type(fields[name])(1 for _ in fields[name])
    return out


def _scaled_to_sum(values: list[int], total: int) -> list[int]:
    """``values`` scaled to sum to ``total`` (each at least 1; the last takes the rounding)."""
    scaled = [max(1, v * total // sum(values)) for v in values[:-1]]
    return [*scaled, max(1, total - sum(scaled))]


def _ints(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(type(v) is int for v in value)
