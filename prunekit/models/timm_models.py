"""``timm:NAME`` models: any timm architecture, built offline with any class count and input channels.

timm is an optional extra (``pip install 'prunekit[timm]'``). Models are always built with
``pretrained=False``; pretrained weights come only from a local file (``weights=``), loaded with
the same tolerance as torchvision's: a different class count keeps the new head's init, and a
different input-channel count adapts the first conv (see :func:`prunekit.models.weights.load_compatible`).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, UnknownNameError, did_you_mean, require
from prunekit.models.weights import load_compatible, read_state_dict

__all__ = ["create"]


def create(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
           weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build timm's ``name`` (a pretrained tag such as ``resnet18.a1_in1k`` is allowed) offline.

    Args:
        num_classes, in_channels: passed to timm as ``num_classes`` / ``in_chans`` (timm's
            ``in_chans`` is accepted too); None keeps timm's default (1000 classes, 3 channels).
        weights: a local ``.safetensors`` or ``.pth`` state dict.
        kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).
    """
    timm = require("timm", extra="timm", feature=f"Model spec 'timm:{name}'")
    if not timm.is_model(name):
        raise UnknownNameError(f"Unknown timm model 'timm:{name}'.{did_you_mean(name, timm.list_models())} "
                               f"List them with python -c \"import timm; print(timm.list_models('*{name[:4]}*'))\".")
    if kwargs.get("pretrained"):
        raise ConfigError(f"Model 'timm:{name}': prunekit never downloads, so pretrained=True is refused. "
                          f"Pass pretrained weights as a local file: weights='path/to/model.safetensors'.")
    options = {**kwargs, "pretrained": False, **_sizes(name, num_classes, in_channels, kwargs)}
    try:
        model = timm.create_model(name, **options)
    except TypeError as exc:
        raise ConfigError(f"Model 'timm:{name}': timm rejected the options {sorted(kwargs)} ({exc}). Pass only "
                          f"options that timm.create_model('{name}') accepts.") from exc
    if weights is not None:
        classes = int(getattr(model, "num_classes", num_classes or 0))
        load_compatible(model, read_state_dict(weights), source=os.fspath(weights), num_classes=classes)
    return model


def _sizes(name: str, num_classes: int | None, in_channels: int | None, kwargs: dict[str, Any]) -> dict[str, int]:
    """timm's ``num_classes`` / ``in_chans`` from prunekit's names, refusing a contradiction."""
    chans = kwargs.pop("in_chans", None)
    if chans is not None and in_channels is not None and chans != in_channels:
        raise ConfigError(f"Model 'timm:{name}': in_channels={in_channels} and in_chans={chans} disagree; "
                          f"pass one of them.")
    sizes = {"num_classes": num_classes, "in_chans": in_channels if in_channels is not None else chans}
    for key, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"Model 'timm:{name}': '{key}' must be a positive integer; got {value!r}. "
                              f"Pass e.g. 10 classes or 1 (grayscale) / 3 (RGB) channels.")
    return {k: v for k, v in sizes.items() if v is not None}
