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
import math
import os
import re
from collections import OrderedDict
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from prunekit.errors import ConfigError, DataError, DataNotFoundError, UnknownNameError, did_you_mean
from prunekit.registry import Registry

__all__ = ["create", "register_all", "default_input_size", "hub_cache_path", "replace_first_conv",
           "adapt_conv_weight", "load_compatible"]

# NOTE: ViT and MaxViT size their position embeddings / attention partitions at build time, and
# torchvision builds them for 224x224 when no weights are given, whatever size the DEFAULT weights
# were trained at (vit_h_14's DEFAULT is 518).
_BUILT_FOR_224 = ("vit_", "maxvit_")
# Torchvision's own builders set these when given weights; googlenet/inception were trained on
# inputs normalised differently, which ``transform_input`` undoes (it needs 3 input channels).
_TRANSFORM_INPUT_MODELS = ("googlenet", "inception_v3")
# NOTE: old densenet checkpoints name layers 'norm.1'; torchvision renames them on load the same way.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_ABSENT = object()


def default_input_size(name: str) -> int:
    """Height = width of the images ``name`` is meant for: the crop size of its DEFAULT weights."""
    if name.startswith(_BUILT_FOR_224):
        return 224
    crop = get_model_weights(name).DEFAULT.transforms().crop_size
    return int(crop[0])


def register_all(registry: Registry[nn.Module]) -> None:
    """Add every torchvision classification model to ``registry`` under its torchvision name."""
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


def adapt_conv_weight(weight: torch.Tensor, in_channels: int, *, pretrained: bool) -> torch.Tensor:
    """Map a conv weight ``[out, c, kh, kw]`` to ``[out, in_channels, kh, kw]``.

    Pretrained (as timm's ``adapt_input_conv``): for one channel, sum over the c channels, so a
    grayscale image gives exactly the response the RGB filters give to that image replicated to c
    channels; otherwise tile the channels and scale by ``c / in_channels`` to keep the response's
    scale. Random init (``pretrained=False``): tile and cut without scaling, which keeps each
    weight's init distribution.
    """
    channels = weight.shape[1]
    if pretrained and in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / channels)
    tiled = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return tiled * (channels / in_channels) if pretrained else tiled.clone()


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
        raise DataNotFoundError(f"Weights file '{path}' does not exist. Check the path, or pass a "
                                f"torchvision weights name such as 'DEFAULT'.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # NOTE: corrupt files raise many types (pickle, zip, safetensors).
        raise DataError(f"'{path}' is not a readable state dict ({type(exc).__name__}: {exc}). Re-save "
                        f"it with torch.save(model.state_dict(), path) or prunekit.io.save_weights.") from exc
    for wrapper in ("state_dict", "model"):  # NOTE: training checkpoints often nest the weights.
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise DataError(f"'{path}' holds a {type(state).__name__}, not a state dict. Save "
                        f"model.state_dict(), not the model.")
    return state


def load_compatible(model: nn.Module, state: dict[str, torch.Tensor], *, source: str,
                    num_classes: int) -> list[str]:
    """Load ``state`` into ``model`` in place, tolerating a different head and input channels.

    Tensors of the same shape are copied. The head is skipped when only its class count differs
    (it keeps its init); the first conv is adapted when only its input channels differ. Auxiliary
    heads the model dropped (``aux_logits=False``) are ignored. Anything else that does not match
    raises DataError naming the tensor. Returns the names of the skipped head tensors.
    """
    own = model.state_dict()
    conv_key, head = _first_and_last_layer(model)
    metadata = getattr(state, "_metadata", None) or getattr(own, "_metadata", None)
    kept: OrderedDict[str, torch.Tensor] = OrderedDict()
    skipped: list[str] = []
    for key, value in state.items():
        key = _DENSENET_OLD_KEY.sub(r"\1\2", key)
        target = own.get(key)
        if target is None or target.shape == value.shape:
            kept[key] = value
        elif key == f"{conv_key}.weight" and _same_but_dim(value, target, 1):
            kept[key] = adapt_conv_weight(value, target.shape[1], pretrained=True)
        elif key.startswith(f"{head}.") and target.shape[0] == num_classes and _same_but_dim(value, target, 0):
            skipped.append(key)
        else:
            raise DataError(f"'{source}': tensor '{key}' has shape {tuple(value.shape)} but the model "
                            f"expects {tuple(target.shape)}. The weights belong to another "
                            f"architecture or variant; pass weights saved from this model.")
    kept._metadata = metadata  # type: ignore[attr-defined]  # NOTE: versioned modules (MNASNet) need it.
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as exc:
        raise DataError(f"'{source}' does not fit the model: {exc}") from exc
    # NOTE: BN step counters are absent from old checkpoints and never affect outputs.
    missing = [k for k in missing if k not in skipped and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in unexpected if not _in_dropped_module(model, k)]
    if missing or unexpected:
        raise DataError(f"'{source}' does not match the model: missing {missing[:5]}, unexpected "
                        f"{unexpected[:5]}. Pass weights saved from this architecture.")
    return skipped


def _first_and_last_layer(model: nn.Module) -> tuple[str, str]:
    """Names of the first conv and of the last Linear/Conv2d (the classifier head), in module order."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return (convs[0] if convs else ""), (layers[-1] if layers else "")


def _same_but_dim(a: torch.Tensor, b: torch.Tensor, dim: int) -> bool:
    """Same rank and the same size on every dimension except ``dim``."""
    return a.dim() == b.dim() and all(x == y for i, (x, y) in enumerate(zip(a.shape, b.shape)) if i != dim)


def _in_dropped_module(model: nn.Module, key: str) -> bool:
    """True for tensors of a submodule set to None, such as ``AuxLogits`` with ``aux_logits=False``."""
    module: Any = model
    for part in key.split(".")[:-1]:
        module = getattr(module, part, _ABSENT)
        if module is None:
            return True
        if module is _ABSENT:
            return False
    return False
