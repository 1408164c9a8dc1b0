"""What a workflow runs a model on when it has no data, and which combinations it refuses up front.

``model_example`` derives an example input from the model itself (a registry model's input shape,
a timm model's ``pretrained_cfg``, a block of token ids for a Hugging Face text model) so that
``profile``, ``export`` and ``partition`` work without ``--data``; anything else asks for
``--data``. ``default_task`` picks the task of an ``hf:`` folder from its config when neither a
task nor data says. ``check_labels`` refuses a data-driven score that needs labelled batches on
data that has none, before any training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit import models
from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.measure.onnx import without_cache
from prunekit.workflows.common import hf_folder, made_for, source_architecture

__all__ = ["EXAMPLE_TOKENS", "check_labels", "default_task", "model_example", "without_cache"]

EXAMPLE_TOKENS = 16  # tokens in the example block of a text model (no data given)


def default_task(spec: str, task: str | None) -> str | None:
    """``task``, else the task an ``hf:`` folder's config names (``...ForCausalLM``: causal_lm)."""
    if task is not None:
        return task
    folder = hf_folder(spec)
    config = folder / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        return None
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    return "causal_lm" if any(str(a).endswith("ForCausalLM") for a in architectures) else None


def model_example(net: nn.Module, spec: str, *, in_channels: int | None = None, batch_size: int = 1,
                  command: str = "profile") -> torch.Tensor:
    """An input batch for ``net`` without data: the shape of the data a saved folder was made for
    (its manifest's ``data``), the registry model's own shape, a timm model's ``pretrained_cfg`` input
    size (with its channel count), or token ids for a text model."""
    recorded = made_for(spec).get("input_shape")
    if isinstance(recorded, list) and recorded and in_channels is None:
        return torch.randn(batch_size, *(int(d) for d in recorded), generator=torch.Generator().manual_seed(0))
    architecture = source_architecture(spec, None, in_channels)
    name = architecture.get("model")
    if isinstance(name, str) and name in models.MODELS:
        channels = in_channels if in_channels is not None else architecture.get("in_channels")
        return models.example_input(name, batch_size=batch_size, in_channels=channels)
    generator = torch.Generator().manual_seed(0)
    cfg = getattr(net, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        _, height, width = cfg["input_size"]
        channels = in_channels or architecture.get("in_channels") or _first_conv_channels(net) or cfg["input_size"][0]
        return torch.randn(batch_size, int(channels), int(height), int(width), generator=generator)
    config = getattr(net, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and getattr(net, "main_input_name", "input_ids") == "input_ids":
        length = min(EXAMPLE_TOKENS, int(getattr(config, "max_position_embeddings", EXAMPLE_TOKENS) or EXAMPLE_TOKENS))
        return torch.randint(0, vocab, (batch_size, length), generator=generator)
    raise ConfigError(f"{command}: cannot tell what input '{spec}' takes without data (only registry, "
                      f"timm and Hugging Face text models say so themselves). Pass --data with a sample "
                      f"of its inputs, e.g. --data images/ or --data corpus.txt.")


def _first_conv_channels(net: nn.Module) -> int | None:
    """Input channels of the first convolution (a timm model built for grey images has 1)."""
    conv = next((m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    return conv.in_channels if conv is not None else None


def check_labels(command: str, importance: str, needs_gradients: bool, data: Any, task: Any,
                 fix: str) -> None:
    """Refuse an importance scored by the gradients of a labelled loss on data without labels
    (text, or any data that is not image data with classes), before any training."""
    if not needs_gradients or isinstance(data, DataSplits):
        return
    name = getattr(data, "name", "the data")
    raise ConfigError(f"{command}: importance '{importance}' needs gradients of a labelled loss on "
                      f"(inputs, labels) batches, but '{Path(str(name)).name}' gives {task.name} "
                      f"batches without labels. {fix}")
