"""Checks at the public entry points (``DependencyGraph.trace``, ``StructuredPruner.fit``): what
is not an ordinary eager ``nn.Module`` or not a valid example input fails in one line there, not as
a library error deep inside the tracer. Also :func:`tensors_in`, every tensor an input or an output
holds, whatever holds it (``torch.utils._pytree`` alone enters tuples, lists, dicts and NamedTuples:
a ``@dataclass``, a plain object or a ``SimpleNamespace`` returned by ``forward`` is a leaf to it,
and the output widths inside were cut unnoticed)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import sys
import types
from collections.abc import Iterator, Mapping, Sequence, Set
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunekit.errors import ConfigError

__all__ = ["check_entry", "check_example_inputs", "check_model", "logits_in", "positional_inputs", "tensors_in"]


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
    else unchanged (a model whose forward takes one batch dict keeps it whole). A dict naming a
    keyword-only parameter as well is refused in one line."""
    if not isinstance(example_inputs, Mapping) or not example_inputs:
        return example_inputs
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # NOTE: a forward without a readable signature
        return example_inputs
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    keyword = [key for key in example_inputs if any(p.name == key and p.kind == p.KEYWORD_ONLY for p in params)]
    if keyword and set(example_inputs) <= set(names) | set(keyword):
        # NOTE: example inputs reach forward as positional arguments everywhere (trace, verification,
        # MACs, latency, export); left as it is, the dict would reach forward whole, as its first input
        raise ConfigError(f"{where}: example_inputs names '{keyword[0]}', a keyword-only parameter of "
                          f"{type(model).__name__}.forward (after *), but prunekit passes example inputs "
                          f"positionally. Leave it out to use its default, or wrap the model in a module whose "
                          f"forward passes it (self.model(x, {keyword[0]}=...)).")
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


# NOTE: leaves that hold no tensor to look for: numbers, names, torch's descriptors, and code or
# modules (a module's parameters are weights, not outputs)
_NO_TENSORS = (type(None), bool, int, float, complex, str, bytes, bytearray, memoryview, range, slice,
               type(Ellipsis), enum.Enum, type, torch.dtype, torch.device, torch.layout, torch.memory_format,
               torch.Size, nn.Module, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
               types.ModuleType, functools.partial)


def logits_in(output: Any) -> torch.Tensor | None:
    """The logits in a model's output: the tensor itself, ``.logits`` (Hugging Face), a mapping's
    ``"logits"`` or a tuple's first element; None where none of them is a tensor (each caller says
    what it needed)."""
    found = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if found is None and isinstance(output, Mapping):
        found = output.get("logits")
    if found is None and isinstance(output, (tuple, list)) and output:
        found = output[0]
    return found if isinstance(found, torch.Tensor) else None


def tensors_in(obj: Any, what: str) -> list[torch.Tensor]:
    """Every tensor in ``obj``, in an order fixed by its structure (the same for the dense and the
    pruned model's outputs). Enters what pytree enters (in pytree's order), then dataclasses (by
    field), other mappings, sequences and sets, and objects with a ``__dict__`` or ``__slots__``.
    An iterator is refused (looking into it would use it up), naming ``what`` (e.g. "Net's output").
    """
    found: list[torch.Tensor] = []
    _collect(obj, found, set(), what)
    return found


def _collect(obj: Any, found: list[torch.Tensor], seen: set[int], what: str) -> None:
    for leaf in tree_flatten(obj)[0]:
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
            continue
        if isinstance(leaf, _NO_TENSORS) or id(leaf) in seen or _is_state(leaf):
            continue
        seen.add(id(leaf))  # NOTE: an object may refer back to its holder
        if dataclasses.is_dataclass(leaf):
            _collect([getattr(leaf, f.name) for f in dataclasses.fields(leaf)], found, seen, what)
        elif isinstance(leaf, Mapping):
            _collect(list(leaf.values()), found, seen, what)
        elif isinstance(leaf, (Sequence, Set)):
            _collect(list(leaf), found, seen, what)
        elif isinstance(leaf, Iterator):
            raise ConfigError(f"{what} holds a {type(leaf).__name__} (an iterator), which prunekit cannot look "
                              f"into for tensors (whose widths it must know) without using it up. Hold them in a "
                              f"tuple, list, dict or dataclass instead.")
        else:
            held = list(vars(leaf).values()) if hasattr(leaf, "__dict__") else []
            held += [getattr(leaf, name) for name in _slots(type(leaf)) if hasattr(leaf, name)]
            _collect(held, found, seen, what)  # NOTE: nothing held: a value of another library (a NumPy array)


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
    return names


def _is_state(obj: Any) -> bool:
    """A Hugging Face key/value cache: the model's state for its next call, read back at its own
    (pruned) widths, so not part of the output's interface (prunekit never imports transformers)."""
    cache = getattr(sys.modules.get("transformers.cache_utils"), "Cache", None)
    return cache is not None and isinstance(obj, cache)
