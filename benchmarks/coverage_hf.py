"""Graph coverage over Hugging Face transformers: one small config of every architecture, pruned at 0.5.

Run by hand (not in CI); writes benchmarks/COVERAGE_hf.md from the records collected so far:

    nice -n 15 .venv/bin/python benchmarks/coverage_hf.py                    # every architecture
    nice -n 15 .venv/bin/python benchmarks/coverage_hf.py --only bert --only llama
    .venv/bin/python benchmarks/coverage_hf.py --table                       # only rewrite the table

An architecture is a ``model_type`` of transformers' ``CONFIG_MAPPING``. Its config class is built
with its defaults and small overrides (2 layers, width 64, 4 heads, MLP 128, vocabulary 128,
32x32 images; only fields the config has; multi-head latent attention gets small ranks and head
sizes, a hybrid whose 2 layers would hold no attention layer gets layer 0 linear and layer 1
attention, and an MoE routes 2 of its 4 experts where its default routes more or none), random
init, nothing downloaded. The model class is the first task head transformers maps for it (image classification, seq2seq LM, causal LM, masked LM,
sequence classification, else the base model). Then ``_coverage_common.prune_and_measure`` (ratio
0.5, output kept, verification, forward, output shape, params/MACs), and two Hugging Face checks:
*config*: a model built from the pruned model's config has the pruned model's shapes and head
sizes (else why not); *round trip*: ``prunekit.save`` (a ``save_pretrained`` folder) then
transformers' ``from_pretrained`` where the config says every width, and ``prunekit.load``
always, give the same outputs. Each architecture gets a time box (``--seconds``).

Composite configs (several sub-configs: multimodal models) have every sub-config sized by the same
rules (recursively; vision and text share the width 64, and the projection width is 64 too), their
special tokens (image, video, ...) given ids inside the small vocabulary, and their class taken from
the image-text-to-text, multimodal LM or zero-shot image classification mappings first. A model that
reads both pixel values and token ids gets one 32x32 image (per-sample image axis, or flattened
patches and their grid, where its forward asks for them) and ids holding its image token once per
image feature its ``get_image_features`` gives. A sub-config that transformers maps to no class runs
with the class its name gives (``CLIPVisionConfig`` -> ``CLIPVisionModel``); one with none is listed
as covered by the composite that holds it, where that composite's row passes.
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # NOTE: this checkout's prunekit, not the installed one
import _coverage_common as common  # noqa: E402
import _hf_configs as configs  # noqa: E402
import _hf_signals as signals  # noqa: E402

from prunekit.graph.handlers.hf_modules import same_head_dims  # noqa: E402

RESULTS = Path("runs/coverage_hf")
TABLE = Path(__file__).with_name("COVERAGE_hf.md")
SMALL: dict[str, Any] = {
    "hidden_size": 64, "d_model": 64, "n_embd": 64, "dim": 64, "embed_dim": 64, "embedding_size": 64,
    "intermediate_size": 128, "ffn_dim": 128, "d_ff": 128, "n_inner": 128, "hidden_dim": 128,
    "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "d_kv": 16, "head_dim": 16,
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "n_layers": 2, "encoder_layers": 2, "decoder_layers": 2,
    "num_decoder_layers": 2,
    "num_attention_heads": 4, "num_heads": 4, "n_head": 4, "n_heads": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 128, "unpadded_vocab_size": 128, "max_position_embeddings": 64, "n_positions": 64, "image_size": 32,
    "patch_size": 4,
    "num_labels": 10, "num_local_experts": 4, "num_experts": 4, "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64, "pad_token_id": 0,
    # linear attention: its own head counts and sizes (else 2048-8192 wide next to a width of 64)
    "linear_num_heads": 4, "linear_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16,
    # conformer encoders (Gemma 3n's audio): their own head count and depth (else 8 heads of 8 and 12 layers)
    "conf_num_attention_heads": 4, "conf_num_hidden_layers": 2,
}
# Multi-head latent attention (DeepSeek-V2/V3 and kin): its own head sizes and low ranks, small;
# key/value heads as many as the query heads (the latent is expanded per head).
MLA: dict[str, Any] = {"kv_lora_rank": 32, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
                       "v_head_dim": 16}
# Architectures that need a layout field to match 2 layers.
EXTRA: dict[str, dict[str, Any]] = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "num_layers": 2},
    # Zamba ties its shared transformer across hybrid layers: it needs two of them to build.
    "zamba": {"layers_block_type": ["hybrid", "hybrid"]},
    # VipLLaVA concatenates the hidden states of 5 vision layers (-2 ... -20): 2 of the 2 small ones.
    "vipllava": {"vision_feature_layers": [-2, -1]},
}
# Composite configs only: their width fields beyond SMALL (a vision tower's depth, the projection width
# CLIP-style models share), and the first special token id (image, video, ...; text ids stay below it).
COMPOSITE: dict[str, Any] = {"depth": 2, "projection_dim": 64, "vision_layers": 2, "text_layers": 2}
SPECIAL_TOKENS = 100
COMPOSITE_TASKS = ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
                   "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_RETRIEVAL_MAPPING_NAMES",
                   "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES")
TASKS = ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
         "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
         "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
         "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "MODEL_MAPPING_NAMES")


def architectures() -> list[str]:
    from transformers import CONFIG_MAPPING

    return sorted(CONFIG_MAPPING.keys())


def _config(model_type: str) -> Any:
    from transformers import CONFIG_MAPPING

    default = CONFIG_MAPPING[model_type]()
    if getattr(default, "sub_configs", None):
        return _composite_config(model_type, default)
    small = {k: v for k, v in SMALL.items() if type(configs.field(default, k)) is int} | EXTRA.get(model_type, {})
    small = configs.fit(default, small | signals.signal_config(default))
    mla = type(getattr(default, "kv_lora_rank", None)) is int
    if mla:
        small |= {k: v for k, v in MLA.items() if type(getattr(default, k, None)) is int}
        small["num_key_value_heads"] = small.get("num_attention_heads", 4)
    experts = small.get("num_experts") or small.get("num_local_experts")
    routed = getattr(default, "num_experts_per_tok", 0)
    if experts and hasattr(default, "num_experts_per_tok") and (routed is None or type(routed) is int and routed > experts):
        small["num_experts_per_tok"] = 2  # NOTE: routing more experts than the survey's 4 fails (Qwen3-Next: 10),
                                          # and DeepSeek-V2's default (None) does not run
    try:
        config = CONFIG_MAPPING[model_type](**small)  # NOTE: built with them, so derived fields agree
    except Exception:  # NOTE: a strict config refuses a layout list of the default length; retried below
        config = None
    if config is None or set(getattr(config, "layer_types", None) or ()) == {"linear_attention"}:
        config = CONFIG_MAPPING[model_type](**(small | _hybrid_layout(model_type, default) | EXTRA.get(model_type, {})))
    try:
        if mla and getattr(config, "qk_rope_head_dim", None):
            config.head_dim = config.qk_rope_head_dim  # NOTE: MLA's head_dim is its rotary part (DeepSeek-V4's
                                                       # compressed attention, no kv_lora_rank, is a whole head)
        elif getattr(config, "head_dim", None) is not None and getattr(config, "hidden_size", None):
            config.head_dim = config.hidden_size // config.num_attention_heads
    except (RuntimeError, AttributeError):  # NOTE: per-layer head sizes (Gemma 4), or a derived head_dim (Falcon)
        pass
    return config


def _hybrid_layout(model_type: str, default: Any) -> dict[str, Any]:
    """Layout fields of a hybrid (Mamba or linear attention + attention) model: layer 0 linear, layer 1 attention.

    For the models whose 2-layer config keeps no attention layer (their default layouts place one every
    4-8 layers) or a layout list of the default length: transformers' mask code needs one attention layer.
    """
    from transformers import CONFIG_MAPPING

    fields = inspect.signature(CONFIG_MAPPING[model_type]).parameters
    layout: dict[str, Any] = {}
    if "attn_layer_indices" in fields:
        layout["attn_layer_indices"] = [1]
    if "attn_layer_period" in fields and "attn_layer_offset" in fields:
        layout |= {"attn_layer_period": 2, "attn_layer_offset": 1}
    for name in ("layer_types", "layers_block_type"):
        types = vars(default).get(name)  # NOTE: a field, not a property derived from the others
        if name in fields and isinstance(types, list) and "linear_attention" in types:
            layout[name] = ["linear_attention", next((t for t in types if t != "linear_attention"), "full_attention")]
    return layout


def _composite_config(model_type: str, default: Any) -> Any:
    """A composite (multimodal) config: every sub-config sized by the same small rules (recursively), the
    composite's own width fields small too, so that vision and text widths agree where it projects between
    them, and its special tokens (image, video, ...) given distinct ids inside the small vocabulary."""
    from transformers import CONFIG_MAPPING, PretrainedConfig

    fields = {k: _sub_config(getattr(default, k)) for k in default.sub_configs
              if isinstance(getattr(default, k, None), PretrainedConfig)}
    fields |= _int_fields(default, SMALL | COMPOSITE)
    fields |= {name: SPECIAL_TOKENS + i for i, name in enumerate(_special_token_fields(default))}
    return CONFIG_MAPPING[model_type](**(fields | EXTRA.get(model_type, {})))


def _sub_config(sub: Any) -> Any:
    """One sub-config, small: by ``_config`` where transformers maps its model_type to its class, else its
    class with the small fields it has (then the composite-only fields: depth, projection width)."""
    from transformers import CONFIG_MAPPING

    model_type = getattr(sub, "model_type", "")
    if model_type in CONFIG_MAPPING and CONFIG_MAPPING[model_type] is type(sub):
        small = _config(model_type)
    else:
        small = type(sub)(**_int_fields(sub, SMALL))
    extra = _int_fields(small, COMPOSITE)
    small = type(small)(**(small.to_dict() | extra)) if extra else small  # NOTE: a config rebuilds from its dict
    rope = getattr(small, "rope_parameters", None)
    mrope = "mrope_section" in getattr(type(small), "ignore_keys_at_rope_validation", ()) or (
        isinstance(rope, dict) and rope.get("mrope_section"))
    if mrope and isinstance(rope, dict) and getattr(small, "hidden_size", None):
        # NOTE: M-RoPE splits the rotary half of a head among time, rows and columns (Qwen2-VL's modeling
        # default [16, 24, 24] where the config names none): scaled to the small head
        half = (getattr(small, "head_dim", None) or small.hidden_size // small.num_attention_heads) // 2
        default = rope.get("mrope_section") or [16, 24, 24]
        sections = [s * half // sum(default) for s in default]
        sections[0] += half - sum(sections)
        small.rope_parameters = rope | {"mrope_section": sections}
    return small


def _int_fields(config: Any, table: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``table`` that ``config`` has as integer fields."""
    def value(name: str) -> Any:
        try:
            return getattr(config, name, None)
        except Exception:  # NOTE: a per-layer field of a heterogeneous config refuses a global read
            return None

    return {k: v for k, v in table.items() if type(value(k)) is int}


def _special_token_fields(config: Any) -> list[str]:
    """The composite's own special tokens (image, video, begin/end of image, ...), not bos/eos/pad."""
    return sorted(k for k, v in vars(config).items() if (v is None or type(v) is int)
                  and k.endswith(("_token_id", "_token_index"))
                  and k not in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"))


@functools.cache
def _composites() -> dict[str, str]:
    """Sub-config model_type -> the first composite model_type whose default config holds it (at any depth)."""
    from transformers import CONFIG_MAPPING, PretrainedConfig

    def parts(config: Any) -> list[Any]:
        subs = [getattr(config, k, None) for k in getattr(config, "sub_configs", None) or ()]
        subs = [s for s in subs if isinstance(s, PretrainedConfig)]
        return subs + [p for s in subs for p in parts(s)]

    parents: dict[str, str] = {}
    for model_type in architectures():
        if not getattr(CONFIG_MAPPING[model_type], "sub_configs", None):
            continue
        try:
            default = CONFIG_MAPPING[model_type]()
        except Exception:  # NOTE: a composite whose defaults do not build names no parts
            continue
        for sub in parts(default):
            if sub.model_type != model_type:
                parents.setdefault(sub.model_type, model_type)
    return parents


def _model_class_by_name(config_class: Any) -> Any:
    """A sub-config's model class by transformers' naming (``CLIPVisionConfig`` -> ``CLIPVisionModel``), or None."""
    import transformers

    return getattr(transformers, config_class.__name__.removesuffix("Config") + "Model", None)


def _model_class(model_type: str) -> tuple[Any, str]:
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto import modeling_auto

    composite = bool(getattr(CONFIG_MAPPING[model_type], "sub_configs", None))
    for task in COMPOSITE_TASKS * composite + TASKS:
        class_name = getattr(modeling_auto, task).get(model_type)
        if isinstance(class_name, (tuple, list)):
            class_name = class_name[0]
        klass = getattr(transformers, class_name, None) if class_name else None
        if klass is not None:
            return klass, task.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower() or "base"
    klass = _model_class_by_name(CONFIG_MAPPING[model_type])
    if klass is not None:
        return klass, "base"
    parent = _composites().get(model_type)
    raise LookupError("no model class in transformers' auto mappings" + (f" (a part of {parent})" if parent else ""))


def _inputs(model: Any, config: Any, task: str) -> tuple[Any, ...]:
    """Positional inputs by forward parameter name: a signal (audio, time series: ``_hf_signals``), pixel
    values, or token ids (and decoder ids); an optional parameter before the last input is None."""
    gen = torch.Generator().manual_seed(0)
    named: dict[str, torch.Tensor] = {}
    params = list(inspect.signature(model.forward).parameters)
    if "pixel_values" in params and "input_ids" in params:
        return _multimodal_inputs(model, config, params)
    if signal := signals.signal_inputs(model, config, params, gen):
        named |= signal
    elif "pixel_values" in params and "input_ids" not in params:
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else size[0] if isinstance(size, (list, tuple)) else 32
        named["pixel_values"] = torch.randn(1, getattr(config, "num_channels", 3), size, size, generator=gen)
    else:
        vocab = min(getattr(config, "vocab_size", 128) or 128, 128)
        named["input_ids"] = torch.randint(4, vocab, (1, 8), generator=gen)
        if "decoder_input_ids" in params:
            named["decoder_input_ids"] = torch.randint(4, vocab, (1, 5), generator=gen)
    missing = [n for n in named if n not in params]
    if missing:
        raise LookupError(f"forward takes none of {missing}")
    for mask, ids in (("attention_mask", "input_ids"), ("decoder_attention_mask", "decoder_input_ids")):
        if ids in named and mask in params:
            named[mask] = torch.ones_like(named[ids])
    last = max(params.index(n) for n in named if not n.endswith("attention_mask"))
    inputs = tuple(named.get(p) for p in params[:last + 1])
    if any(t is None and not signals.optional(model.forward, p) for p, t in zip(params, inputs)):
        raise LookupError(f"forward takes {[p for p, t in zip(params, inputs) if t is None]} before the inputs")
    return inputs


def _multimodal_inputs(model: Any, config: Any, params: list[str]) -> tuple[Any, ...]:
    """Pixel values and token ids for a model that reads both: text ids below the special tokens, and where
    the config names an image token, that token repeated once per image feature the vision tower gives."""
    gen = torch.Generator().manual_seed(0)
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None) or getattr(config, "image_size", 32)
    size = size if isinstance(size, int) else 32
    channels = getattr(vision, "num_channels", None) or getattr(vision, "in_channels", None) or 3
    named: dict[str, torch.Tensor] = {"pixel_values": torch.randn(1, channels, size, size, generator=gen)}
    if "image_grid_thw" in params:  # NOTE: Qwen2-VL and kin take flattened patches and their grid
        named |= _patch_grid(vision, channels, size, gen)
    elif "pixel_attention_mask" in params:  # NOTE: Idefics2/3 and kin take images per sample: (1, images, C, H, W)
        named["pixel_values"] = named["pixel_values"][:, None]
    features = inspect.signature(getattr(model, "get_image_features", lambda: None)).parameters
    if "image_sizes" in params and getattr(features.get("image_sizes"), "default", None) is inspect.Parameter.empty:
        named["image_sizes"] = torch.tensor([[size, size]])  # NOTE: Mistral3 needs each image's (height, width)
    text = torch.randint(4, SPECIAL_TOKENS, (1, 8), generator=gen)
    image_token = getattr(config, "image_token_id", None)
    if image_token is None:
        image_token = getattr(config, "image_token_index", None)
    if isinstance(image_token, int):
        count = _image_features(model, named)
        text = torch.cat([text[:, :4], torch.full((1, count), image_token), text[:, 4:]], dim=1)
    named["input_ids"] = text
    if "mm_token_type_ids" in params and isinstance(image_token, int):  # NOTE: 1 marks an image token (M-RoPE)
        named["mm_token_type_ids"] = (text == image_token).int()
    if "attention_mask" in params:
        named["attention_mask"] = torch.ones_like(text)
    last = max(params.index(n) for n in named)
    return tuple(named.get(p) for p in params[:last + 1])  # NOTE: None between them: that argument's default


def _patch_grid(vision: Any, channels: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Flattened patches of one image and its (frames, rows, columns) grid, as Qwen2-VL's processor gives."""
    patch = getattr(vision, "patch_size", 4)
    frames = getattr(vision, "temporal_patch_size", 1) or 1
    side = size // patch
    return {"pixel_values": torch.randn(side * side, channels * frames * patch * patch, generator=gen),
            "image_grid_thw": torch.tensor([[1, side, side]])}


def _image_features(model: Any, named: dict[str, torch.Tensor]) -> int:
    """How many embedding rows the model's image features fill (its ``get_image_features``), so that the
    ids hold as many image tokens."""
    get = getattr(model, "get_image_features", None)
    if get is None:
        raise LookupError("the config names an image token but the model has no get_image_features")
    accepts = inspect.signature(get).parameters
    with torch.no_grad():
        out = get(**{k: v for k, v in named.items() if k in accepts})
    pooled = getattr(out, "pooler_output", None)
    features = common.tensors(pooled if pooled is not None else out)
    return sum(t.numel() for t in features) // model.get_input_embeddings().embedding_dim


def _config_consistent(pruned: Any) -> str:
    """'yes' when the pruned config builds the pruned shapes, else the per-layer widths it cannot say."""
    import prunekit.hf

    reference = prunekit.hf.reference(pruned)
    want = {k: tuple(v.shape) for k, v in pruned.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    differ = [k for k in want if got.get(k) != want[k]]
    if not differ and same_head_dims(pruned, pruned.config):
        return "yes"
    if not differ:
        return "no: the config builds other head sizes"
    per_layer = getattr(pruned.config, "prunekit_layer_widths", None)
    return f"no: {len(differ)} shapes differ (e.g. {differ[0]})" + (f"; per-layer {sorted(per_layer)}" if per_layer
                                                                    else "")


def _round_trip(pruned: Any, inputs: tuple[Any, ...], *, transformers_loads: bool) -> str:
    """``prunekit.save`` then transformers' ``from_pretrained`` (when the config says every width)
    and ``prunekit.load`` (always): the same outputs."""
    import prunekit

    with tempfile.TemporaryDirectory() as tmp:
        folder = prunekit.save(pruned, Path(tmp) / "m")
        loaded = [prunekit.load(folder)]
        if transformers_loads:
            loaded.append(type(pruned).from_pretrained(folder, local_files_only=True).eval())
        def run(model: Any) -> list[torch.Tensor]:
            # NOTE: each forward draws the same random numbers (a model that samples noise, as a VAE's
            # encoder does, compares its weights, not its noise)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return common.tensors(model.eval()(*inputs))

        want = run(pruned)
        for model in loaded:
            for a, b in zip(run(model), want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return "transformers + prunekit" if transformers_loads else "prunekit.load"


def check(model_type: str, *, seconds: int) -> dict[str, Any]:
    def body(record: dict[str, Any], stage: Any) -> None:
        config = _config(model_type)
        klass, task = _model_class(model_type)
        record["variant"], record["task"] = klass.__name__, task
        torch.manual_seed(0)
        model = klass(config).eval()
        inputs = _inputs(model, config, task)
        record["input"] = " + ".join("x".join(map(str, t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        pruned = common.prune_and_measure(model, inputs, record, stage)
        stage("config")
        record["config"] = _config_consistent(pruned)
        stage("round trip")
        try:
            record["round_trip"] = _round_trip(pruned, inputs, transformers_loads=record["config"] == "yes")
        except Exception as exc:
            record["round_trip"] = f"no: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            raise RuntimeError(f"round trip {record['round_trip']}") from exc

    record = common.run_one(model_type, body, seconds)
    gc.collect()
    return record


# Known causes of failure of this survey (the shared ones are in _coverage_common.CAUSES); all
# but the first three are the survey's limits, not prunekit's: the model never reached prunekit.
CAUSES = [
    ("Plan and graph disagree", "prunekit bug: two groups share an id (issue 19 graph class 3, harden-graph)"),
    ("exceeds dimension size", "prunekit bug: MoE expert weights (3-d, experts first) sliced on the wrong axis"),
    ("round trip", "round trip failed (see the round trip column)"),
    ("composite config", "composite config (multimodal: sub-configs), not sized by this survey"),
    ("no model class", "transformers maps no model class for this config"),
    ("forward takes none", "forward takes neither pixel_values nor input_ids (audio, time series, ...)"),
    ("before the inputs", "forward takes other inputs (boxes, audio features, ...) before the ids"),
    ("no get_image_features", "the config names an image token but the model has no get_image_features: the "
                              "survey cannot count the image tokens its ids must hold"),
]
# A model that fails before tracing failed on the survey's small config, before prunekit touched it.
BEFORE_PRUNEKIT = "the survey's small config does not build or run this model (needs fields beyond the common ones)"


# Models whose output length follows values (predicted durations): pruning changes the values, so
# the pruned model's output has another length than the original's, by design of the model.
VALUE_SHAPED = {"fastspeech2_conformer": "FastSpeech2-Conformer's output length is the sum of the durations "
                                         "it predicts from values",
                "fastspeech2_conformer_with_hifigan": "FastSpeech2-Conformer's output length (here before its "
                                                      "HiFi-GAN vocoder) is the sum of the durations it predicts "
                                                      "from values"}


# Models the survey's small config or inputs cannot give what they need (found by reading their build
# error; a record that fails elsewhere, or passes, is not named by these). Not prunekit's limits.
_PATCHIFIED = ("a vision tower that takes patchified pixels with their grid (grid_thw, position ids, spatial "
               "shapes), the input a multimodal model's processor makes; not given by this survey")
SURVEY_LIMITS: dict[str, str] = {
    "dinat": "needs the natten library (a compiled extension, not installed here)",
    "layoutlmv2": "needs detectron2 for its visual backbone (not installed here)",
    "timm_backbone": "a wrapper around a timm backbone named in its config (timm's families: COVERAGE_timm.md)",
    "xmod": "needs a language chosen (set_default_language) before its forward: per-language adapters, no default",
    "lxmert": "needs detected-object features and boxes (visual_feats, visual_pos) beside the ids",
    "vilt": "needs an image beside the ids (a multimodal input)",
    "seggpt": "needs a prompt image and a prompt mask beside the image",
    "nougat": "its donut_swin encoder sub-config cannot be built standalone from CONFIG_MAPPING",
    "mgp-str": "needs a 32x128 (non-square) image; the survey gives square images",
    "muse_spark_audio": "its patch sizes, widths and depths are listed per layer (4 entries): 2 layers refuse them",
    "granite_speech5_encoder": "its input projection reads stacked frames (320 features) the survey does not derive",
    "fun_asr_nano_encoder": "its input is stacked low-frame-rate features (7 x 80) the survey does not derive",
    **{m: "a hierarchical model whose per-stage sizes (windows, query strides, position tables) the survey does not "
          "scale" for m in ("hiera", "levit", "sam2_hiera_det_model", "swin2sr")},
    "efficientnet": "its hidden_dim is the top conv's width, which the survey's MLP size (128) sets while the head's "
                    "batch norm keeps the default (2560)",
    "mobilevitv2": "its stages shrink a 32x32 image to 2x2 before a 4x4 unfold: needs its default 256x256 image",
    "reformer": "its causal LM head needs is_decoder=True and LSH chunks no longer than the input",
    "recurrent_gemma": "2 layers hold only recurrent blocks (attention every 3rd); transformers' mask code needs "
                       "an attention layer",
    "gemma3n_text": "KV-sharing layers: with 2 layers, no layer produces the cache the sharing layers read",
    "cohere_compass_text": "rotary parameters given per layer type (full / sliding), not written by the small config",
    "dots3_note_text": "a per-layer config (per_layer_config keyed by fixed layer indices), not sized by this survey",
    "dots3_note_vision_encoder": "a per-layer config keyed by fixed layer indices up to 41; 2 layers refuse them",
    "efficientloftr": "its width must equal the last of its per-stage out_features (256), not scaled by the survey",
    "gemma4_assistant": "its config validation requires hidden_size_per_layer_input 0 beside the small width",
    "glm5_next_text": "its sparse-attention (DSA) layers need no rotary part, the survey's MLA sizes give 8",
    "hy_v4_vl_text": "its rotary sections must sum to half the MLA rotary size, not of the head size",
    "kolibri1_1": "index heads must fit in the query heads of one key head (4 / 2 = 2)",
    "lw_detr_vit": "its window count (16) must divide the image size; the survey's 32x32 image does not",
    "layoutlmv3": "its layout embeddings (4 coordinate + 2 shape parts) must add up to the width: 6 parts do not "
                  "divide the survey's 64",
    "lilt": "its layout stream's 6 box embeddings must add up to the shrunk width, not sized by this survey",
    "lfm2_moe": "its conv / attention layout (layer_types) is None by default, derived at full depth",
    "qwen4_exp_text": "its indexer sizes are None by default (set only in released checkpoints)",
    "xlstm": "the mLSTM state sizes follow the default width, not the small one (matC shape)",
    "mimi_decoder": "a codec decoder: takes latents, not a signal or ids",
    "pocket_tts_audio_tokenizer_decoder": "a codec decoder: takes latents, not a signal or ids",
    "vibevoice_acoustic_tokenizer_decoder": "a codec decoder: takes latents (hidden_states), not a signal",
    "vibevoice_acoustic_tokenizer_encoder": "its forward names its audio input hidden_states, not read as a signal "
                                            "by this survey",
    "nemotron3_5_transcribe_word_timestamp": "takes the audio encoder's embeddings (inputs_embeds), not a signal",
    "axk1": "the small MLA sizes give a zero-size head part (view to [-1, 8, 0])",
    "mistral4": "the small MLA sizes leave its rotary part and key heads apart (4 vs 2)",
    **{m: _PATCHIFIED for m in ("cosmos3_edge_vision", "glm_image_vision", "hunyuan_vl_vision", "hy_v4_vl_vision",
                                "inkling2_vision", "kimi_k25_vision", "lfm3_vl_vision", "llava_onevision1_5_vision",
                                "muse_glimmer_vision", "muse_spark_vision", "ovis2_5_vision", "video_llama_3_vision",
                                "gemma4_vision", "siglip2_vision_model", "minicpm_ocr_vision", "minicpmv4_7_vision")},
}


def _cause(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    error = record.get("error", "")
    parent = re.search(r"\(a part of (.+)\)", error) if "no model class" in error else None
    if parent and results.get(parent[1], {}).get("stage") == "done":
        return f"covered by its composite {parent[1]} (no model class of its own; the {parent[1]} row runs it)"
    if parent:
        return f"transformers maps no model class for this config; its composite {parent[1]} does not pass (its row)"
    if record["model"] in VALUE_SHAPED and "has shape" in error:
        return (f"not comparable: {VALUE_SHAPED[record['model']]}; any change of the weights changes its output "
                f"shape, so verification cannot compare it with the original")
    if record["stage"] == "build" and record["model"] in SURVEY_LIMITS and "time box" not in error:
        return f"survey limit: {SURVEY_LIMITS[record['model']]}"
    if record["stage"] == "build" and not any(t in record.get("error", "") for t, _ in CAUSES + common.CAUSES):
        return BEFORE_PRUNEKIT
    return common.cause(record, CAUSES)


def _out_of_scope(record: dict[str, Any]) -> bool:
    return record["stage"] == "build"


def _row(r: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    ok = r["stage"] == "done"
    status = ("ok" + ("" if r.get("exact", True) else " (inexact)")) if ok else f"**{_cause(r, results)}**"
    frozen = "; ".join(r.get("frozen", [])) or "—"
    return (f"| {r['model']} | {r.get('variant', '')} | {r.get('input', '—')} | {status} | {r.get('output', '—')} | "
            f"{common.pct(r.get('params_before'), r.get('params_after'))} | "
            f"{common.pct(r.get('params_before'), r.get('ideal_params'))} | "
            f"{common.pct(r.get('macs_before'), r.get('macs_after'))} | {r.get('heads', '—')} | "
            f"{r.get('config', '—')} | {r.get('round_trip', '—')} | {frozen} |")


def write_table(results: dict[str, dict[str, Any]], names: list[str], command: str) -> str:
    done = [results[n] for n in names if n in results]
    passed = [r for r in done if r["stage"] == "done"]
    pruned = [r for r in done if "params_after" in r]
    kept = common.median([r["params_after"] / r["params_before"] for r in pruned])
    ideal = common.median([r["ideal_params"] / r["params_before"] for r in pruned])
    excess = [(r["params_after"] - r["ideal_params"]) / r["params_before"] for r in pruned]
    out_of_scope = [r for r in done if _out_of_scope(r)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Graph coverage: Hugging Face transformers architectures",
        "",
        f"Generated by `{command}` at commit {commit} (torch {torch.__version__}, {platform.machine()}, CPU). "
        "One small config per `model_type` (2 layers, width 64, 4 heads, MLP 128, vocabulary 128, 32x32 images), "
        f"random init; ratio {common.RATIO} in every prunable group (l2), the classifier / lm_head output kept, "
        "apply with verification, forward, output shape; *config*: the pruned config builds the pruned shapes; "
        "*round trip*: `prunekit.save` (a `save_pretrained` folder) -> transformers `from_pretrained` where the "
        "config says every width (a per-layer or per-module width it cannot say: `prunekit.load` only), and "
        "`prunekit.load`, give the same outputs. "
        "*ideal*: params a per-group cut of half the channels keeps if no group were frozen.",
        "",
        f"**{len(passed)}/{len(names)} architectures pass every check** ({len(done)} run, "
        f"{len(names) - len(done)} not run in this pass, {len(out_of_scope)} never reached prunekit, listed with "
        f"the reason; {len(passed)}/{len(done) - len(out_of_scope)} of those that did pass); "
        f"median params kept {_p(kept)} vs {_p(ideal)} for a per-group cut of half the channels "
        f"({len(pruned)} pruned); per architecture, params kept beyond its own ideal: median "
        f"{_p(common.median(excess))}, within 3 points in {sum(e <= 0.03 for e in excess)} of {len(excess)}.",
        "",
        f"Of those passing: {sum(r.get('round_trip') == 'transformers + prunekit' for r in passed)} load with "
        f"transformers' `from_pretrained` (the config says every width) and prunekit.load, "
        f"{sum(r.get('round_trip') == 'prunekit.load' for r in passed)} with prunekit.load only (a width the "
        "config cannot say: a head count apart from the width where the head size is derived, a per-layer or "
        "per-module width, a constant derived from a width); attention heads cut in "
        f"{sum(1 for r in passed if r.get('heads'))}.",
        "",
        "| model_type | class | input | status | output | params kept | ideal | MACs kept | heads | config | "
        "round trip | frozen groups (why) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(results[n], results) for n in names if n in results]
    lines += [f"| {n} | | | not run in this pass | | | | | | | | |" for n in names if n not in results]
    return "\n".join(lines) + "\n"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="model types to run")
    parser.add_argument("--seconds", type=int, default=60, help="time box per architecture, in CPU seconds")
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--rerun", action="store_true", help="run architectures that already have a record")
    parser.add_argument("--command", default="", help="how the records were made, for the table's header")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    names = architectures()
    if not args.table:
        done = common.load(RESULTS)
        for model_type in args.only or names:
            if model_type in done and not args.rerun:
                continue
            record = check(model_type, seconds=args.seconds)
            common.save(RESULTS, record)
            print(f"{model_type:32s} {record['stage']:10s} {record.get('error', '')[:110]}", flush=True)
    command = args.command or "nice -n 15 .venv/bin/python benchmarks/coverage_hf.py " + " ".join(sys.argv[1:])
    TABLE.write_text(write_table(common.load(RESULTS), names, command.strip()))


if __name__ == "__main__":
    main()
