"""Inputs and small config fields for Hugging Face models that read signals, not token ids or images.

Used by coverage_hf.py. Audio (log-mel ``input_features``, raw ``input_values``, spectrograms), time
series (``past_values`` with their time features and masks, ``future_values``), trajectories
(Decision Transformer), videos (``pixel_values`` of ``num_frames`` frames) and the inputs some models take
beside the ids (layout boxes, ``inputs``).
Sizes come from the config (mel bins, the conv feature extractor's strides and kernels, context and
prediction lengths). Where the config does not say the layout (mel bins first or frames first, one
channel axis or none), the candidates are tried in order and the first the model runs is kept.
"""

from __future__ import annotations

import inspect
import math
from itertools import product
from collections.abc import Iterator
from typing import Any

import torch
from _coverage_common import TimeBox

FRAMES = 64  # log-mel frames, spectrogram length, time steps: where the config does not fix them
SIGNAL_FIELDS = ("input_features", "input_values", "audio_mel", "past_values", "states", "inputs", "bbox")


def signal_config(default: Any) -> dict[str, Any]:
    """Small values for the signal fields of a config (merged into the survey's small config).

    Whisper-like encoders take exactly ``2 * max_source_positions`` frames (1500 by default): 32 here;
    a spectrogram transformer (AST) reads ``max_length`` frames: 64; a time-series transformer needs a
    ``prediction_length`` (None by default) and gets one time feature.
    """
    fields = vars(default)
    small: dict[str, Any] = {}
    audio = any(type(fields.get(n)) is int for n in ("num_mel_bins", "input_feat_per_channel",
                                                       "feature_projection_input_dim"))
    if type(fields.get("max_source_positions")) is int and audio:
        small["max_source_positions"] = FRAMES // 2
    if type(fields.get("max_length")) is int and type(fields.get("num_mel_bins")) is int:
        small["max_length"] = FRAMES
    if "prediction_length" in fields and "lags_sequence" in fields:
        small |= {"prediction_length": 4, "context_length": 8, "lags_sequence": [1, 2, 3],
                  "num_time_features": max(fields.get("num_time_features") or 0, 1)}
        if type(fields.get("label_length")) is int:  # Autoformer's decoder starts from the last label_length
            small["label_length"] = 4                 # steps of the context (10 by default)
    return small


def signal_inputs(model: Any, config: Any, params: list[str], gen: torch.Generator) -> dict[str, Any]:
    """Named inputs for a forward that reads a signal (``SIGNAL_FIELDS``); empty when it reads none.

    Each candidate layout is run once; the first the model accepts is returned (else the last error).
    """
    video = "pixel_values" in params and "inputs" not in params and _int(config, "num_frames")
    if not video and (not any(p in params for p in SIGNAL_FIELDS) or "pixel_values" in params
                      and "input_ids" not in params):
        return {}
    if "input_ids" in params and "bbox" not in params:  # NOTE: a text model with extra inputs (Pop2Piano's
        return {}                                        # input_features) reads its ids
    error: Exception | None = None
    for named in _candidates(config, params, gen):
        try:
            with torch.no_grad():
                model(**named)
            return named
        except TimeBox:
            raise
        except Exception as exc:  # NOTE: a layout the model refuses; the next candidate is tried
            error = exc
    raise RuntimeError(f"no candidate input runs: {type(error).__name__}: {error}") from error


def _candidates(config: Any, params: list[str], gen: torch.Generator) -> Iterator[dict[str, Any]]:
    """Candidate inputs, most specific first."""
    get = lambda name, fallback=None: _int(config, name, fallback)  # noqa: E731
    if "pixel_values" in params and "inputs" not in params and get("num_frames"):  # a video: frames x C x H x W
        size, channels, frames = get("image_size", 32), get("num_channels", 3), get("num_frames")
        for shape in ((1, frames, channels, size, size), (1, channels, frames, size, size)):
            yield {"pixel_values": torch.randn(*shape, generator=gen)}
    elif "input_features" in params or "audio_mel" in params:
        name = "input_features" if "input_features" in params else "audio_mel"
        mel = (get("num_mel_bins") or get("input_feat_size") or get("feature_projection_input_dim")
               or (get("input_feat_per_channel") or 0) * (get("input_channels") or 1) or get("feature_size") or 80)
        sources, window = get("max_source_positions"), get("n_window")
        widths = [mel, mel * (get("num_stacked_frames") or 1), 128, 80]  # stacked frames: FunASR
        lengths = [2 * sources if sources else FRAMES, FRAMES, 2 * window if window else FRAMES, 4 * FRAMES]
        for bins, frames in product(dict.fromkeys(widths), dict.fromkeys(lengths)):
            for shape in ((1, bins, frames), (1, frames, bins)):
                for mask in _frame_masks(f"{name}_mask", params, frames):
                    yield _with_ids({name: torch.randn(*shape, generator=gen)} | mask, config, params, gen)
    elif "input_values" in params:
        bins = get("num_mel_bins")
        if bins and get("max_length"):  # a spectrogram (AST): frames x mel bins
            yield _with_ids({"input_values": torch.randn(1, get("max_length"), bins, generator=gen)}, config,
                            params, gen)
        samples = _samples(config)
        channels = get("audio_channels") or get("channels") or 1
        for shape in ((1, samples), (1, channels, samples)):
            yield _with_ids({"input_values": torch.randn(*shape, generator=gen)}, config, params, gen)
    elif "past_values" in params:
        yield from _time_series(config, params, gen)
    elif "states" in params:
        yield _trajectory(config, gen)
    elif "bbox" in params and "input_ids" in params:
        yield from _document(config, params, gen)
    elif "inputs" in params and get("image_size"):  # Perceiver: its generic input is an image here
        size = get("image_size")
        yield {"inputs": torch.randn(1, get("num_channels") or 3, size, size, generator=gen)}


def _frame_masks(name: str, params: list[str], frames: int) -> Iterator[dict[str, torch.Tensor]]:
    """A required per-frame mask: every frame valid (1), else a padding mask with no frame padded
    (False: Gemma 3n's ``audio_mel_mask``)."""
    if name not in params:
        yield {}
        return
    yield {name: torch.ones(1, frames, dtype=torch.long)}
    yield {name: torch.zeros(1, frames, dtype=torch.bool)}


def _with_ids(named: dict[str, Any], config: Any, params: list[str], gen: torch.Generator) -> dict[str, Any]:
    """Decoder token ids for a speech-to-text model."""
    if "decoder_input_ids" in params:
        vocab = min(_int(config, "vocab_size", 128) or 128, 128)
        named["decoder_input_ids"] = torch.randint(4, vocab, (1, 5), generator=gen)
    return named


def _samples(config: Any) -> int:
    """Raw audio samples for about 16 output frames: through the conv feature extractor's strides and
    kernels (wav2vec2 and kin), else the encoder's down-sampling ratios or hop length (codecs)."""
    strides, kernels = getattr(config, "conv_stride", None), getattr(config, "conv_kernel", None)
    if isinstance(strides, (list, tuple)) and isinstance(kernels, (list, tuple)) and len(strides) == len(kernels):
        length = 16
        for stride, kernel in zip(reversed(strides), reversed(kernels)):
            length = (length - 1) * stride + kernel
        return length
    for name in ("downsampling_ratios", "upsampling_ratios"):
        ratios = getattr(config, name, None)
        if isinstance(ratios, (list, tuple)) and ratios:
            return 16 * math.prod(ratios)
    return 16 * (_int(config, "hop_length") or 256)


def _time_series(config: Any, params: list[str], gen: torch.Generator) -> Iterator[dict[str, Any]]:
    """past_values (context plus the largest lag), its time features and mask; future values and time
    features where the model decodes the prediction window (time-series transformers)."""
    get = lambda name, fallback=None: _int(config, name, fallback)  # noqa: E731
    lags = getattr(config, "lags_sequence", None) or [0]
    context = get("context_length") or FRAMES
    context = context if context <= 4 * FRAMES else 2 * (get("patch_length") or 32)
    length = context + max(lags)
    horizon = get("prediction_length") or get("horizon_length") or 4
    channels = get("num_input_channels") or get("input_size") or 1
    features = get("num_time_features") or 0
    for shape in ([1, length, channels], [1, length]) if channels > 1 else ([1, length], [1, length, channels]):
        named: dict[str, Any] = {"past_values": torch.randn(*shape, generator=gen)}
        future = [1, horizon, *shape[2:]]
        for name, value in (("past_time_features", torch.randn(1, length, features, generator=gen)),
                            ("past_observed_mask", torch.ones(shape)), ("observed_mask", torch.ones(shape)),
                            ("past_values_padding", torch.zeros(1, length)),
                            ("freq", torch.zeros(1, 1, dtype=torch.long)),
                            ("future_values", torch.randn(*future, generator=gen)),
                            ("future_time_features", torch.randn(1, horizon, features, generator=gen))):
            if name in params and (not name.startswith("future") or "future_time_features" in params):
                named[name] = value
        yield named


def _trajectory(config: Any, gen: torch.Generator) -> dict[str, Any]:
    """Decision Transformer: states, actions, rewards, returns to go and time steps of 8 steps."""
    steps = 8
    return {"states": torch.randn(1, steps, _int(config, "state_dim", 4), generator=gen),
            "actions": torch.randn(1, steps, _int(config, "act_dim", 2), generator=gen),
            "rewards": torch.randn(1, steps, 1, generator=gen),
            "returns_to_go": torch.randn(1, steps, 1, generator=gen),
            "timesteps": torch.arange(steps).unsqueeze(0),
            "attention_mask": torch.ones(1, steps, dtype=torch.long)}


def _document(config: Any, params: list[str], gen: torch.Generator) -> Iterator[dict[str, Any]]:
    """Token ids with word boxes (x0, y0, x1, y1): integers in 0..1000 (LayoutLM), else fractions (UDOP)."""
    vocab = min(_int(config, "vocab_size", 128) or 128, 128)
    ids = torch.randint(4, vocab, (1, 8), generator=gen)
    corner = torch.randint(0, 500, (1, 8, 2), generator=gen)
    boxes = torch.cat([corner, corner + torch.randint(1, 500, (1, 8, 2), generator=gen)], -1)
    for bbox in (boxes, boxes / 1000):
        yield _with_ids({"input_ids": ids, "bbox": bbox}, config, params, gen)


def optional(forward: Any, name: str) -> bool:
    """Whether a forward parameter may be left out (its default is None)."""
    parameter = inspect.signature(forward).parameters.get(name)
    return parameter is not None and parameter.default is None


def _int(config: Any, name: str, fallback: int | None = None) -> int | None:
    value = getattr(config, name, None)
    return value if type(value) is int else fallback
