"""Every torchvision classification model, built offline with any class count and input channels.

Pretrained weights come only from local files: a path, or a torchvision weights name
("IMAGENET1K_V1", "DEFAULT") looked up in the torch hub cache. Nothing is ever downloaded.

Terms used below:
- *first conv*: the first ``nn.Conv2d`` in module order (``model.named_modules()``); in every
  torchvision classifier it is the stem that reads the image.
- *head*: the tensors whose first dimension is the class count (the classifier's weight and bias).
"""

from __future__ import annotations

import functools
import os
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from prunekit.errors import (
    path_error,
    ConfigError,
    DataNotFoundError,
    UnknownNameError,
    did_you_mean,
)
from prunekit.models.weights import adapt_conv_weight, load_compatible, read_state_dict
from prunekit.registry import Registry

__all__ = [
    "adapt_conv_weight",
    "create",
    "default_input_size",
    "hub_cache_path",
    "load_compatible",
    "register_all",
    "replace_first_conv",
]

# NOTE: ViT and MaxViT size their position embeddings / attention partitions at build time, and
# torchvision builds them for 224x224 when no weights are given, whatever size the DEFAULT weights
# were trained at (vit_h_14's DEFAULT is 518).
_BUILT_FOR_224 = ("vit_", "maxvit_")
# Torchvision's own builders set these when given weights; googlenet/inception were trained on
# inputs normalised differently, which ``transform_input`` undoes (it needs 3 input channels).
_TRANSFORM_INPUT_MODELS = ("googlenet", "inception_v3")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def default_input_size(name: str) -> int:
    """Height = width of the images ``name`` is meant for: the crop size of its DEFAULT weights."""
    if name.startswith(_BUILT_FOR_224):
        return 224
    crop = get_model_weights(name).DEFAULT.transforms().crop_size
    return int(crop[0])


def register_all(registry: Registry[nn.Module]) -> None:
    """Add every torchvision classification model to ``registry`` under its torchvision name.

    ``prunekit.models`` registers them from a static table instead (:mod:`torchvision_names`), so
    that importing it does not import torchvision.
    """
    for name in list_models(module=torchvision.models):
        size = default_input_size(name)
        registry.add(name, functools.partial(create, name), source="torchvision",
                     input_shape=(3, size, size))


def create(name: str, *, num_classes: int = 10, in_channels: int = 3,
           weights: str | os.PathLike[str] | Enum | None = None, **kwargs: Any) -> nn.Module:
    """Build torchvision's ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    Args:
        weights: None (random init); a local ``.safetensors`` or ``.pth``/``.pt`` state dict; or a
            torchvision weights name ("IMAGENET1K_V1", "DEFAULT", or the enum member itself),
            loaded from the torch hub cache only (DataNotFoundError says where to put the file).
            When the file's class count differs from ``num_classes`` every tensor but the
            classifier head is loaded (the head keeps its random init). When the file has 3
            input channels and ``in_channels`` differs, the first conv's weights are adapted
            (see :func:`adapt_conv_weight`).
        kwargs: passed to torchvision's builder. googlenet and inception_v3 default to
            ``aux_logits=False, init_weights=False`` so ``forward`` returns a plain tensor.

    With pretrained weights by name the builder also gets what torchvision's own builder would
    set for them: ``image_size`` (ViT) or ``input_size`` (MaxViT) from the weights, and
    ``transform_input=True`` for googlenet/inception_v3 when ``in_channels == 3``.
    """
    member = _weights_member(name, weights) if _is_weights_name(weights) else None
    kwargs = {**_builder_defaults(name, member, in_channels), **kwargs}
    try:
        model = get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"Model '{name}': torchvision's builder rejected the options {sorted(kwargs)} "
                          f"({exc}). Pass only options that torchvision.models.{name} accepts.") from exc
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    if member is not None:
        state = _read_state_dict(_cached_weights_file(name, member))
        load_compatible(model, state, source=f"{name} weights {member.name}", num_classes=num_classes)
    elif weights is not None:
        load_compatible(model, _read_state_dict(Path(weights)), source=str(weights), num_classes=num_classes)
    return model


def _builder_defaults(name: str, member: Enum | None, in_channels: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if name in _TRANSFORM_INPUT_MODELS:
        defaults.update(aux_logits=False, init_weights=False)
        if member is not None and in_channels == 3:
            defaults["transform_input"] = True
    if member is not None and name.startswith("vit_"):
        defaults["image_size"] = member.meta["min_size"][0]
    if member is not None and name.startswith("maxvit_"):
        defaults["input_size"] = member.meta["min_size"]
    return defaults


# ---- first conv -------------------------------------------------------------------------------

def replace_first_conv(model: nn.Module, in_channels: int) -> str:
    """Swap the first conv for one reading ``in_channels`` channels; returns its qualified name.

    The new conv copies every other setting; its weights are the old random ones adapted with
    ``pretrained=False`` (so the architecture's own init distribution is kept). It is set back on
    its parent by attribute path, so this works for any model without per-architecture code.
    """
    name, conv = _first_conv(model)
    if conv.groups != 1:
        raise ConfigError(f"Model's first conv '{name}' is grouped (groups={conv.groups}); cannot change "
                          f"its input channels to {in_channels}. Use in_channels=3.")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(conv.weight, in_channels, pretrained=False))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)
    return name


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d, so its input channels cannot be "
                      f"changed. Use in_channels=3.")


# ---- weights ----------------------------------------------------------------------------------

def _is_weights_name(weights: object) -> bool:
    """A weights enum member or a name like "IMAGENET1K_V1" (no path separator, no file suffix)."""
    if isinstance(weights, Enum):
        return True
    if not isinstance(weights, str) or os.sep in weights or "/" in weights:
        return False
    return not weights.lower().endswith((".safetensors", *_TORCH_SUFFIXES)) and not Path(weights).exists()


def _weights_member(name: str, weights: str | Enum) -> Enum:
    """The member of ``name``'s weights enum called ``weights`` ("DEFAULT" included)."""
    enum_cls = get_model_weights(name)
    if isinstance(weights, Enum):
        if not isinstance(weights, enum_cls):
            raise ConfigError(f"Model '{name}': weights {weights} belong to another model; expected a "
                              f"member of {enum_cls.__name__}. Pass e.g. weights='DEFAULT'.")
        return weights
    key = weights.removeprefix(f"{enum_cls.__name__}.")
    members = enum_cls.__members__
    if key not in members:
        raise UnknownNameError(
            f"Model '{name}' has no pretrained weights '{weights}'.{did_you_mean(key, members)} "
            f"Known: {', '.join(members)}; or pass a local .safetensors/.pth path."
        )
    return members[key]


def hub_cache_path(member: Enum) -> Path:
    """Where torch.hub keeps ``member``'s file: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    filename = os.path.basename(urlparse(member.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _cached_weights_file(name: str, member: Enum) -> Path:
    path = hub_cache_path(member)
    if not path.is_file():
        raise DataNotFoundError(
            f"Pretrained weights {type(member).__name__}.{member.name} for '{name}' are not available "
            f"offline: expected the file '{path}'. prunekit never downloads; on a machine with internet "
            f"fetch {member.url} and place it at that path (or point TORCH_HOME at a folder whose "
            f"hub/checkpoints/ holds it)."
        )
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (read with ``weights_only=True``)."""
    if not path.is_file():
        raise path_error(path, "a weights file", "Check the path, or pass a torchvision weights name "
                                                 "such as 'DEFAULT'.")
    return read_state_dict(path)
