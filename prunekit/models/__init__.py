"""Models in: a spec string (+ task, local weights, options) -> an nn.Module.

A spec is a zoo name (prunekit's small models for 28x28 images and every torchvision classifier),
``timm:NAME``, ``hf:PATH``, ``path/to/file.py:factory``, ``package.module:factory`` or a folder
prunekit saved; :func:`resolve` builds any of them, offline. Importing this package imports neither
torchvision, timm nor transformers; each is imported when a model that needs it is built.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models.labels import label_names
from prunekit.models.resnet_cifar import ResNetCifar, resnet20, resnet56
from prunekit.models.small import LeNet5, SimpleCNN, VGGSmall
from prunekit.models.spec import ModelSpec, from_source, parse_spec, resolve, source_of
from prunekit.models.task_fit import check_task_fits, context_length
from prunekit.models.torchvision_names import INPUT_SIZES as _TORCHVISION_INPUT_SIZES
from prunekit.models.weights import load_state, read_state_dict
from prunekit.registry import Registry

__all__ = [
    "MODELS",
    "LeNet5",
    "ModelSpec",
    "ResNetCifar",
    "SimpleCNN",
    "VGGSmall",
    "check_task_fits",
    "context_length",
    "create",
    "example_input",
    "from_source",
    "input_shape",
    "label_names",
    "load_state",
    "names",
    "parse_spec",
    "read_state_dict",
    "resolve",
    "source_of",
]

MODELS: Registry[nn.Module] = Registry("model", list_hint="`prunekit models` lists them all")


def _prunekit_factory(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Wrap a prunekit model class so it takes ``weights`` (a local .safetensors or .pth file) too."""

    def factory(*, num_classes: int = 10, in_channels: int = 1,
                weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
        model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
        if weights is None:
            return model
        return load_state(model, read_state_dict(weights), source=os.fspath(weights))

    factory.__doc__ = builder.__doc__
    return factory


for _name, _builder in [("simple_cnn", SimpleCNN), ("lenet5", LeNet5), ("vgg_small", VGGSmall),
                        ("resnet20", resnet20), ("resnet56", resnet56)]:
    MODELS.add(_name, _prunekit_factory(_builder), source="prunekit", input_shape=(1, 28, 28))


def _torchvision(name: str, **kwargs: Any) -> nn.Module:
    """Build torchvision's ``name``; torchvision is imported here, on first use."""
    from prunekit.models import torchvision_models
    return torchvision_models.create(name, **kwargs)


for _name, _size in _TORCHVISION_INPUT_SIZES.items():
    MODELS.add(_name, functools.partial(_torchvision, _name), source="torchvision", input_shape=(3, _size, _size))


def create(name: str, *, num_classes: int = 10, in_channels: int | None = None,
           weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build the model called ``name`` for ``num_classes`` classes and ``in_channels`` channels.

    Args:
        in_channels: input channels; default 1 for prunekit models, 3 for torchvision models.
        weights: a local ``.safetensors`` file (``prunekit train`` writes one) or a ``.pth``/``.pt``
            state dict (read with ``weights_only=True``); for torchvision models also a weights name
            found in the torch hub cache (see :func:`torchvision_models.create`). Never downloads.
        kwargs: extra options for the model's constructor (e.g. ``widths`` for vgg_small).
    """
    entry = MODELS.get(name)
    channels = _channels(entry.name, in_channels)
    _check_positive("num_classes", num_classes, "the number of classes in your dataset, e.g. 10")
    try:
        return entry.factory(num_classes=num_classes, in_channels=channels, weights=weights, **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"Model '{entry.name}' does not accept the options {sorted(kwargs)} ({exc}). "
                          f"Pass only options its constructor takes.") from exc


def names(pattern: str = "*", **meta: Any) -> list[str]:
    """Sorted model names matching a shell-style ``pattern`` and ``meta`` (e.g. source="prunekit")."""
    return MODELS.names(pattern, **meta)


def input_shape(name: str, *, in_channels: int | None = None) -> tuple[int, ...]:
    """The ``(C, H, W)`` a model is meant for; ``in_channels`` replaces C.

    1x28x28 for prunekit models. For torchvision models, the crop size of their DEFAULT weights
    (3x224x224 mostly, 3x299x299 for inception_v3, up to 600 for efficientnet_b7), except ViT and
    MaxViT: 224, the size they are built for without weights (vit_h_14's DEFAULT weights need 518).
    """
    entry = MODELS.get(name)
    shape = tuple(entry.meta["input_shape"])
    return (_channels(entry.name, in_channels), *shape[1:])


def example_input(name: str, *, batch_size: int = 1, in_channels: int | None = None) -> torch.Tensor:
    """A deterministic ``randn`` batch ``[batch_size, C, H, W]`` for tracing and profiling
    (seeded by its own generator, so the global RNG is untouched)."""
    _check_positive("batch_size", batch_size, "e.g. 1")
    shape = input_shape(name, in_channels=in_channels)
    return torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(0))


def _channels(name: str, in_channels: int | None) -> int:
    if in_channels is None:
        return int(MODELS.get(name).meta["input_shape"][0])
    _check_positive("in_channels", in_channels, "1 for grayscale or 3 for RGB")
    return in_channels


def _check_positive(what: str, value: object, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"models: '{what}' must be a positive integer; got {value!r}. Pass {example}.")
