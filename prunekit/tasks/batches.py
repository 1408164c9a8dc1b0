"""What every task does to a batch before its loss: move it to the model's device, split it into
model inputs and targets, call the model, and find the logits or hidden states in what comes back.

A batch is whatever the user's DataLoader yields: a tensor, an ``(inputs..., target)`` tuple or
list, or a mapping (Hugging Face style: ``input_ids``, ``attention_mask``, ``labels``,
``pixel_values``). Mappings are passed to the model as keyword arguments, tuples positionally.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunekit._checks import logits_in
from prunekit.errors import DataError

__all__ = [
    "batch_size_of",
    "call_model",
    "device_of",
    "first_tensor",
    "logits_of",
    "model_accepts",
    "model_kwargs",
    "to_device",
]

# NOTE: keys a mapping batch may carry that are targets, never model inputs.
TARGET_KEYS = ("labels", "label")
# NOTE: the main input of a mapping batch, in the order tried (for tracing and sizes).
INPUT_KEYS = ("input_ids", "pixel_values", "inputs_embeds", "input_values", "x", "inputs", "image")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor inside (tuples, lists, mappings, nested) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple keeps its type
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def device_of(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; CPU for a model without tensors."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _forward_of(model: nn.Module) -> Any:
    """The user's forward, looking through DistributedDataParallel / DataParallel wrappers."""
    inner = getattr(model, "module", None)
    return (inner if isinstance(inner, nn.Module) else model).forward


def model_accepts(model: nn.Module, name: str) -> bool:
    """True when the model's forward names the keyword ``name`` explicitly (not just ``**kwargs``)."""
    try:
        return name in inspect.signature(_forward_of(model)).parameters
    except (TypeError, ValueError):
        return False


def model_kwargs(model: nn.Module, batch: Mapping[str, Any], *, drop: Sequence[str] = TARGET_KEYS,
                 ) -> dict[str, Any]:
    """The tensors of a mapping batch that ``model``'s forward takes (all, if it has ``**kwargs``);
    a batch none of whose tensors it takes, for a forward that needs some, is a one-line error."""
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(_forward_of(model)).parameters
    except (TypeError, ValueError):
        params = {}
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kept = {key: value for key, value in batch.items()
            if key not in drop and isinstance(value, torch.Tensor) and (open_ended or key in params)}
    given = [key for key, value in batch.items() if key not in drop and isinstance(value, torch.Tensor)]
    required = [name for name, p in params.items() if p.default is p.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if not kept and given and required:
        raise DataError(f"The batch's keys {given} name none of {type(model).__name__}.forward's inputs "
                        f"({', '.join(required)}); a mapping batch reaches the model by keyword. Fix: yield "
                        f"the inputs under those names, or use tasks.Custom(..., inputs_fn=lambda b: "
                        f"b[{given[0]!r}]).")
    return kept


def call_model(model: nn.Module, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
               ) -> Any:
    """``model(*args, **kwargs)``: positional inputs for tuple batches, keywords for mappings. A call
    its forward cannot take (a tuple batch with more items before its labels than the forward has
    inputs) is a one-line error, not Python's."""
    try:
        return model(*args, **(kwargs or {}))
    except TypeError as exc:
        names = _unbindable(model, args, kwargs or {})
        if names is None:
            raise
        raise DataError(f"{type(model).__name__}.forward({names}) cannot take the batch's inputs "
                        f"({len(args)} positional{', keywords ' + str(sorted(kwargs)) if kwargs else ''}): "
                        f"a tuple batch is (inputs..., labels), its last item the labels. Fix: yield "
                        f"(inputs, labels), or use tasks.Custom(..., inputs_fn=lambda b: ...) to pick the "
                        f"inputs.") from exc


def _unbindable(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The forward's parameter names when ``args``/``kwargs`` do not fit its signature, else None."""
    try:
        signature = inspect.signature(_forward_of(model))
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return ", ".join(signature.parameters)
    return None


def logits_of(output: Any, *, what: str = "logits") -> torch.Tensor:
    """The logits in a model's output: the tensor itself, ``.logits`` (Hugging Face), a mapping's
    ``"logits"`` or the first element of a tuple."""
    found = logits_in(output)
    if found is None:
        raise DataError(f"The model returned {type(output).__name__}; expected {what} as a tensor, "
                        f"an output with .logits, or a tuple whose first element is a tensor. Fix: "
                        f"return the {what} from forward, or use tasks.Custom with your own loss_fn.")
    return found


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The batch's main input tensor (``input_ids``/``pixel_values`` of a mapping, else the first)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in INPUT_KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
        values = [v for k, v in batch.items() if k not in TARGET_KEYS]
        return next((found for v in values if (found := first_tensor(v)) is not None), None)
    if isinstance(batch, (tuple, list)):
        return next((found for v in batch if (found := first_tensor(v)) is not None), None)
    return None


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: the first dimension of its main input (1 for a scalar)."""
    tensor = first_tensor(batch)
    if tensor is None or tensor.dim() == 0:
        return 1
    return int(tensor.shape[0])
