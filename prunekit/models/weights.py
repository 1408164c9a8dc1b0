"""Weights from local files into a built model: a state dict in, the same model with its tensors out.

Two formats only: ``.safetensors``, and torch files (``.pth``/``.pt``/``.bin``) read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers (no
pickle of arbitrary objects). Nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import DataError, path_error

__all__ = ["adapt_conv_weight", "load_compatible", "load_state", "read_state_dict"]

# NOTE: old densenet checkpoints name layers 'norm.1'; torchvision renames them on load the same way.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_ABSENT = object()
_RESAVE = "Re-save it with torch.save(model.state_dict(), path) or prunekit.io.save_weights(model, path)."


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` in ``path``: safetensors, or a torch file read with ``weights_only=True``.

    Training checkpoints that nest the weights under ``"state_dict"`` or ``"model"`` are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise path_error(path, "a weights file", "Check the path (--weights takes a file, e.g. "
                                                 "runs/train/model.safetensors).")
    if path.stat().st_size == 0:
        raise DataError(f"Weights file '{path}' is empty (0 bytes); expected a .safetensors or .pth state "
                        f"dict. {_RESAVE}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # NOTE: corrupt files raise many types (pickle, zip, safetensors).
        raise DataError(f"'{path}' is not a readable state dict ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}). {_RESAVE}") from exc
    for wrapper in ("state_dict", "model"):  # NOTE: training checkpoints often nest the weights.
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise DataError(f"'{path}' holds a {type(state).__name__}, not a state dict. Save "
                        f"model.state_dict(), not the model.")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"'{path}' is not a state dict: entry '{key}' holds a {type(value).__name__}, "
                            f"expected a tensor. {_RESAVE}")
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> nn.Module:
    """Copy ``state`` into ``model`` in place, strictly: every tensor present with its shape.

    A missing tensor is allowed only where the model ties it to one that is present (an LM head
    sharing the embedding) or for BN step counters, which never affect outputs. A mismatch raises
    DataError naming the tensor, before anything is copied.
    """
    own = model.state_dict()
    for key, value in state.items():
        target = own.get(key)
        if target is not None and target.shape != value.shape:
            raise DataError(f"'{source}': tensor '{key}' has shape {tuple(value.shape)} but the model "
                            f"expects {tuple(target.shape)}. The weights belong to another architecture "
                            f"or variant (class count, widths); pass weights saved from this model.")
    unexpected = [k for k in state if k not in own]
    loaded = {_storage(own[k]) for k in state if k in own}
    missing = [k for k, v in own.items() if k not in state and _storage(v) not in loaded
               and not k.endswith(".num_batches_tracked")]
    if missing or unexpected:
        raise DataError(f"'{source}' does not match the model: missing {missing[:5]}, unexpected "
                        f"{unexpected[:5]}. Pass weights saved from this architecture.")
    model.load_state_dict(state, strict=False)
    return model


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), int(tensor.storage_offset())


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
