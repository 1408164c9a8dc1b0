"""Checks at the public entry points (``DependencyGraph.trace``, ``StructuredPruner.fit``): what
is not an ordinary eager ``nn.Module`` or not a valid example input fails in one line there, not as
a library error deep inside the tracer."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["check_entry", "check_example_inputs", "check_model", "positional_inputs"]


def check_model(model: Any, where: str) -> None:
    """Refuse what cannot be traced and pruned: a non-module (a plain function), a TorchScript
    module (its code is compiled; the tracer cannot follow it and nothing would be cut), a lazy
    module not yet run (no shapes) and a model whose tensors are on the meta device (no values to
    score or keep)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(f"{where}: the model is a TorchScript module ({type(model).__name__}); prunekit "
                          f"traces eager nn.Modules only, so nothing would be pruned. Pass the Python "
                          f"nn.Module it was scripted from, and script the pruned result.")
    if not isinstance(model, nn.Module):
        kind = "a plain function" if callable(model) else f"a {type(model).__name__}"
        raise ConfigError(f"{where}: the model is {kind}, not a torch.nn.Module. Pass an nn.Module "
                          f"instance (e.g. wrap the function's weights and code in a Module subclass).")
    from torch.nn.parameter import is_lazy

    lazy = next((name for name, t in _tensors(model) if is_lazy(t)), None)
    if lazy is not None:
        raise ConfigError(f"{where}: '{lazy}' is an uninitialised parameter of a lazy module (nn.LazyConv2d, "
                          f"nn.LazyLinear, ...): its shape is not known yet. Run the model once on an example "
                          f"input (model(example)) to initialise it, then prune.")
    meta = next((name for name, t in _tensors(model) if t.is_meta), None)
    if meta is not None:
        raise ConfigError(f"{where}: tensor '{meta}' is on the meta device (no values), so channels "
                          f"cannot be scored or kept. Materialise the model first, e.g. "
                          f"model.to_empty(device='cpu') then load its weights (load_state_dict).")


def _tensors(model: nn.Module) -> Any:
    yield from model.named_parameters()
    yield from model.named_buffers()


def check_example_inputs(example_inputs: Any, where: str) -> None:
    """Refuse a list of inputs (ambiguous: one list-typed argument or several positional ones)."""
    if isinstance(example_inputs, list):
        raise ConfigError(f"{where}: example_inputs is a list of {len(example_inputs)}; expected a tensor "
                          f"(one input) or a tuple (one item per positional input). Pass "
                          f"tuple(example_inputs) for several inputs, the tensor itself for one, or (example_inputs,) "
                          f"for one input that is a list (a detector's list of images).")
    if example_inputs is None:
        raise ConfigError(f"{where}: example_inputs is None; expected a tensor or a tuple of the model's "
                          f"inputs. Pass e.g. torch.randn(1, 3, 224, 224).")


def check_entry(model: Any, example_inputs: Any, where: str) -> None:
    """Both checks, as the public entry points run them."""
    check_model(model, where)
    check_example_inputs(example_inputs, where)


def positional_inputs(model: nn.Module, example_inputs: Any, where: str) -> Any:
    """A dict whose keys all name ``forward``'s positional parameters (a tokenizer's output:
    ``{"input_ids": ..., "attention_mask": ...}``) as the tuple of positional inputs it means, the
    parameters left out in between at their defaults (GPT-2's ``past_key_values=None``); anything
    else unchanged (a model whose forward takes one batch dict keeps it whole)."""
    if not isinstance(example_inputs, Mapping) or not example_inputs:
        return example_inputs
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # NOTE: a forward without a readable signature
        return example_inputs
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    if not set(example_inputs) <= set(names):
        return example_inputs
    args = []
    for param in positional[:1 + max(names.index(key) for key in example_inputs)]:
        if param.name in example_inputs:
            args.append(example_inputs[param.name])
        elif param.default is not param.empty:
            args.append(param.default)
        else:
            raise ConfigError(f"{where}: example_inputs names {sorted(example_inputs)} but not '{param.name}', which "
                              f"{type(model).__name__}.forward needs before them. Add '{param.name}' to the dict.")
    return tuple(args)

