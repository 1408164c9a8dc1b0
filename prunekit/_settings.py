"""Settings objects a model's modules hold (``self.args = ModelArgs(...)``, a namespace): plain
objects whose int fields record widths (``args.d_inner``). The trace joins such a field to the
channels it sizes and ``apply`` rewrites it; the saved layout records it so that loading does too."""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

__all__ = ["settings_object", "dotted_holder"]


_NAMESPACES = (SimpleNamespace, argparse.Namespace)


def settings_object(value: Any) -> bool:
    """A plain settings object: a namespace, or an instance of a class of the user's own code (a
    dataclass such as mamba-minimal's ``ModelArgs``); not a module, tensor, class or function, nor an
    object of the standard library (a logger), of torch, or a Hugging Face config (its widths follow
    the config refresh)."""
    if isinstance(value, _NAMESPACES):
        return True
    top = type(value).__module__.split(".")[0]
    return (hasattr(value, "__dict__") and not isinstance(value, (nn.Module, torch.Tensor, type))
            and not callable(value) and top not in sys.stdlib_module_names
            and top not in ("torch", "builtins", "transformers", "prunekit") and not hasattr(value, "to_dict"))


def dotted_holder(obj: Any, path: str) -> tuple[Any, str]:
    """The object that holds the last name of ``path`` under ``obj``, and that name:
    ``dotted_holder(block, "args.d_inner")`` is ``(block.args, "d_inner")``; a plain name is ``obj``'s
    own (a settings object's field, a config's entry or an attribute, all read and written alike)."""
    *parents, last = path.split(".")
    for name in parents:
        obj = getattr(obj, name)
    return obj, last
