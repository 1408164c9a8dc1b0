"""Does a task fit a model? One forward pass on example inputs, and a clear error when it does not.

What each task needs from the model's output:
- "classification": logits ``[batch, classes]`` (a tensor, an output with ``.logits``, a mapping's
  ``"logits"`` or a tuple's first element, as the task reads them).
- "causal_lm": logits ``[batch, seq, vocab]`` from the token ids: an output with ``.logits`` (a
  Hugging Face ``...ForCausalLM``, whose own loss the task uses when its forward takes ``labels=``),
  a tensor, or a tuple whose first element is one (nanoGPT's ``(logits, loss)``).
- "embedding": a float tensor ``[batch, ...]`` (or ``.last_hidden_state`` / ``.pooler_output``).
- "custom": anything (the user's loss decides).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prunekit._checks import logits_in
from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError

__all__ = ["TASK_NAMES", "check_task_fits", "context_length"]

TASK_NAMES = ("classification", "causal_lm", "embedding", "custom")

# NOTE: the names models give their position count: Hugging Face configs, nanoGPT's GPTConfig
# (``block_size``), Meta's Llama ModelArgs (``max_seq_len``), open_clip/CLIP (``context_length``).
_CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "block_size", "max_seq_len",
                   "context_length")
_CONFIG_HOLDERS = ("config", "params", "args", "cfg")


def check_task_fits(model: nn.Module, task: Any, example_inputs: Any, *,
                    fix: str = "Pass inputs the model accepts.") -> None:
    """Raise ConfigError unless ``model``'s output on ``example_inputs`` is what ``task`` needs.

    ``task`` is a task name or a Task (its ``name``); ``example_inputs`` a tensor, a tuple of
    tensors (positional) or a dict (keyword inputs, as HF batches). The model runs once in eval
    mode under ``no_grad``; its training flag is restored. ``fix`` ends the error of a model that
    fails on the inputs (what the caller can change about them).
    """
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if name not in TASK_NAMES:
        raise ConfigError(f"task {task!r}: expected one of {', '.join(TASK_NAMES)}.")
    if name == "custom":
        return
    args, kwargs = _call_parts(model, example_inputs, name)
    output = _run(model, args, kwargs, name, fix)
    _CHECKS[name](model, output, _batch_size(example_inputs))


def context_length(model: nn.Module) -> tuple[int, str] | None:
    """The most positions ``model`` reads, with where that was found (``"config.block_size"``), from
    the fields models record it in, on the model or its config object; None where none is recorded."""
    for holder in ("", *_CONFIG_HOLDERS):
        owner = getattr(model, holder, None) if holder else model
        if owner is None or isinstance(owner, (torch.Tensor, nn.Module)) and holder:
            continue
        for field in _CONTEXT_FIELDS:
            value = owner.get(field) if isinstance(owner, Mapping) else getattr(owner, field, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, f"{holder}.{field}" if holder else field
    return None


def _check_classification(model: nn.Module, output: Any, batch: int | None) -> None:
    found = logits_in(output)  # NOTE: where tasks.Classification reads them
    logits = output if found is None else found
    # NOTE: [batch, classes, ...] too: per-pixel (or per-position) classes, as tasks.Classification scores them
    if not (isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.dim() >= 2
            and (batch is None or logits.shape[0] == batch)):
        raise ConfigError(f"The task 'classification' does not fit {type(model).__name__}: it needs logits "
                          f"[batch, classes] or [batch, classes, ...] (batch {batch}); got {_describe(logits)}. "
                          f"Pick the task that matches the model's output (causal_lm, embedding, or custom with "
                          f"your loss).")


def _check_causal_lm(model: nn.Module, output: Any, batch: int | None) -> None:
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output[0] if isinstance(output, (tuple, list)) and output else output
    if not (isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.dim() == 3):
        raise ConfigError(f"The task 'causal_lm' does not fit {type(model).__name__}: it needs logits [batch, "
                          f"seq, vocab] from the token ids (a tensor, a tuple that starts with it, or .logits); "
                          f"got {_describe(output)}. Pick another task, or return the logits from forward.")


def _check_embedding(model: nn.Module, output: Any, batch: int | None) -> None:
    for field in ("pooler_output", "last_hidden_state", "logits"):
        value = getattr(output, field, None)
        if isinstance(value, torch.Tensor):
            output = value
            break
    if not (isinstance(output, torch.Tensor) and output.is_floating_point() and output.dim() >= 2):
        raise ConfigError(f"The task 'embedding' does not fit {type(model).__name__}: it needs a float tensor "
                          f"[batch, ...] (or .last_hidden_state); got {_describe(output)}. Pick another task.")


_CHECKS = {"classification": _check_classification, "causal_lm": _check_causal_lm,
           "embedding": _check_embedding}


def _call_parts(model: nn.Module, example_inputs: Any, task: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments to call ``model`` with. A mapping is passed by keyword, except
    for causal_lm, which calls as ``tasks.CausalLM`` does: the ids positional, the mask only where
    forward names it (a model of one's own takes ``forward(idx)``)."""
    if isinstance(example_inputs, Mapping):
        if task == "causal_lm" and "input_ids" in example_inputs:
            accepted = _parameters(model)
            return (example_inputs["input_ids"],), {k: v for k, v in example_inputs.items()
                                                    if k != "input_ids" and k in accepted}
        return (), dict(example_inputs)
    return (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)), {}


def _run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], task: str, fix: str) -> Any:
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            return model(*args, **kwargs)
    except Exception as exc:  # NOTE: the model is the user's; any error means the inputs do not fit.
        raise ConfigError(f"The task '{task}' cannot be checked: {type(model).__name__} failed on the example "
                          f"inputs ({type(exc).__name__}: {exc}). {fix}") from exc
    finally:
        restore_modes(modes)


def _batch_size(example_inputs: Any) -> int | None:
    first = next(iter(example_inputs.values()), None) if isinstance(example_inputs, Mapping) else (
        example_inputs[0] if isinstance(example_inputs, tuple) and example_inputs else example_inputs)
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else None


def _parameters(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
