"""Calibration data for one-shot pruning: batches, the model's repeated blocks, captured inputs.

One-shot pruning works block by block: the inputs of the first repeated
block (``BertEncoder.layer``, GPT-2's ``transformer.h``, Llama's ``model.layers``) are captured
once for every calibration batch, then each block is calibrated, pruned and re-run on those
inputs to give the next block's inputs. Only one block's activations are held at a time.
An encoder-decoder has two block lists (T5's ``encoder.block`` and ``decoder.block``): each is
pruned in turn, in the order they run. A model without such a block list is treated as one block
whose inputs are the batches.
"""

from __future__ import annotations

from contextlib import ExitStack

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance.stats import ModelInputs
from prunekit.sparsity.oneshot.layers import input_rows, is_supported

__all__ = ["Call", "LayerStats", "as_call", "find_blocks", "block_stacks", "capture_block_inputs", "run_call",
           "collect_stats", "call_order", "output_layer", "carried", "with_carried"]


@dataclass
class Call:
    """The positional and keyword arguments of one forward call (of the model or of a block)."""

    args: tuple
    kwargs: dict[str, Any]


@dataclass
class LayerStats:
    """What a layer saw: ``gram = Σ xᵀx`` over its input rows ``x[tokens, in]`` (float32)."""

    gram: torch.Tensor
    tokens: int = 0

    @property
    def column_norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` of every input feature j (Wanda's activation norm), ``Tensor[in]``."""
        return self.gram.diagonal().clamp_min(0).sqrt()


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def as_call(batch: Any, model: nn.Module, device: torch.device) -> Call:
    """Turn one calibration batch into the model's forward arguments.

    A Tensor is the positional input; a Mapping is keyword arguments (Hugging Face
    ``input_ids``/``attention_mask``, a tokenizer's ``BatchEncoding``); a tuple or list is what a
    DataLoader yields, ``(inputs, targets, ...)``: only its first element is used, and that element
    may itself be a Tensor, a Mapping, or a tuple of positional arguments. A
    :class:`~prunekit.importance.stats.ModelInputs` (the workflows' batches of several inputs, or
    with an attention mask) is every positional input and the keywords the forward takes.
    """
    if isinstance(batch, ModelInputs):
        return Call(tuple(_to_device(tuple(batch), device)), _to_device(batch.keywords_for(model), device))
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ConfigError("one_shot: a calibration batch is an empty tuple; expected (inputs, targets) "
                              "or a Tensor. Pass batches of model inputs.")
        batch = batch[0]
    batch = _to_device(batch, device)
    if isinstance(batch, torch.Tensor):
        return Call((batch,), {})
    if isinstance(batch, Mapping):
        kwargs = dict(batch)
        # NOTE: a KV cache would grow each time a block is re-run on the stored inputs.
        if "use_cache" in inspect.signature(model.forward).parameters:
            kwargs.setdefault("use_cache", False)
        return Call((), kwargs)
    if isinstance(batch, (tuple, list)):
        return Call(tuple(batch), {})
    raise ConfigError(
        f"one_shot: a calibration batch must be a Tensor, a Mapping of keyword inputs or an "
        f"(inputs, targets) tuple; got {type(batch).__name__}. Wrap your data in a DataLoader or a list of tensors."
    )


def run_call(module: nn.Module, call: Call) -> Any:
    """``module(*call.args, **call.kwargs)`` without autograd."""
    with torch.no_grad():
        return module(*call.args, **call.kwargs)


def carried(call: Call) -> torch.Tensor:
    """The hidden state a block passes on: its first positional Tensor, else ``hidden_states=``."""
    if call.args and isinstance(call.args[0], torch.Tensor):
        return call.args[0]
    value = call.kwargs.get("hidden_states")
    if isinstance(value, torch.Tensor):
        return value
    raise ConfigError("one_shot: cannot find the hidden state a block receives (no positional Tensor and no "
                      "'hidden_states=' keyword). Pass include=... to prune the model as one block.")


def with_carried(call: Call, value: torch.Tensor) -> Call:
    """The same call with its hidden state replaced by ``value`` (the previous block's output)."""
    if call.args and isinstance(call.args[0], torch.Tensor):
        return Call((value, *call.args[1:]), call.kwargs)
    return Call(call.args, {**call.kwargs, "hidden_states": value})


def _block_output(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def block_output(output: Any) -> torch.Tensor:
    """The hidden state in a block's output (the Tensor, or the first element of a tuple)."""
    value = _block_output(output)
    if value is None:
        raise ConfigError(f"one_shot: a block returned {type(output).__name__}; expected a Tensor or a tuple "
                          "starting with one. Prune this model as one block with include=[...].")
    return value


def find_blocks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Candidate block lists, largest first: the ModuleLists of same-type modules that contain
    prunable layers (``encoder.layer``, ``transformer.h``, ``model.layers``), leaving out those
    nested inside another candidate."""
    found: list[tuple[tuple[int, int], str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1 or not any(is_supported(m) for m in module.modules()):
            continue
        found.append(((sum(p.numel() for p in module.parameters()), len(module)), name, module))
    found.sort(key=lambda item: item[0], reverse=True)
    outer: list[tuple[str, nn.ModuleList]] = []
    for _, name, module in found:
        if not any(not other or name.startswith(f"{other}.") for other, _ in outer):
            outer.append((name, module))
    return outer


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the first block's inputs are captured."""


def block_stacks(model: nn.Module, candidates: list[tuple[str, nn.ModuleList]],
                 call: Call) -> tuple[list[tuple[str, nn.ModuleList]], list[str]]:
    """Run ``call`` once: the candidates whose blocks form a chain (every block called once, fed the
    previous block's output), in the order they run, and the names of the others."""
    seen: list[list[tuple[torch.Tensor | None, torch.Tensor | None]]] = [[] for _ in candidates]
    order: list[int] = []

    def hooks(index: int) -> tuple[Any, Any]:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if index not in order:
                order.append(index)
            try:
                seen[index].append((carried(Call(tuple(args), dict(kwargs))), None))
            except ConfigError:
                seen[index].append((None, None))

        def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            seen[index][-1] = (seen[index][-1][0], _block_output(output))
        return pre, post

    handles = []
    for index, (_, blocks) in enumerate(candidates):
        pre, post = hooks(index)
        handles += [b.register_forward_pre_hook(pre, with_kwargs=True) for b in blocks]
        handles += [b.register_forward_hook(post, with_kwargs=True) for b in blocks]
    try:
        run_call(model, call)
    finally:
        for h in handles:
            h.remove()

    def chained(index: int) -> bool:
        calls, blocks = seen[index], candidates[index][1]
        return (len(calls) == len(blocks) and all(x is not None for x, _ in calls)
                and all(calls[i][0] is calls[i - 1][1] for i in range(1, len(calls))))

    stacks = [candidates[i] for i in order if chained(i)]
    return stacks, [name for i, (name, _) in enumerate(candidates) if i not in order or not chained(i)]


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, calls: list[Call]) -> list[Call]:
    """The first block's arguments for every calibration call (each forward stops there)."""
    captured: list[Call] = []

    def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(Call(tuple(args), dict(kwargs)))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for call in calls:
            try:
                run_call(model, call)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def output_layer(model: nn.Module, layers: dict[nn.Module, str], call: Call) -> str | None:
    """The name of the last of ``layers`` that a forward pass on ``call`` calls (None if none runs)."""
    last: list[str] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        last.append(layers[module])

    with ExitStack() as hooks:  # NOTE: torch's hook handles remove themselves on exit
        for m in layers:
            hooks.enter_context(m.register_forward_hook(hook))
        run_call(model, call)
    return last[-1] if last else None


def call_order(block: nn.Module, names: dict[nn.Module, str], call: Call) -> list[list[str]]:
    """Layers of ``block`` in the order they first run, grouped when consecutive layers read the
    same input tensor (q, k and v read one hidden state): SparseGPT prunes one group at a time."""
    order: list[tuple[str, int]] = []

    def hook(module: nn.Module, args: tuple) -> None:
        if names[module] not in (n for n, _ in order) and args:
            order.append((names[module], id(args[0])))

    with ExitStack() as hooks:
        for m in names:
            hooks.enter_context(m.register_forward_pre_hook(hook))
        run_call(block, call)
    groups: list[list[str]] = []
    for i, (name, ident) in enumerate(order):
        if i and ident == order[i - 1][1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    missing = [n for n in names.values() if n not in {n for n, _ in order}]
    return groups + ([missing] if missing else [])


def collect_stats(block: nn.Module, layers: dict[str, nn.Module], calls: Iterable[Call]) -> dict[str, LayerStats]:
    """Run ``block`` on every call and accumulate each layer's input Gram matrix ``Σ xᵀx``."""
    stats: dict[str, LayerStats] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            rows = input_rows(module, args[0].detach())
            if name not in stats:
                stats[name] = LayerStats(torch.zeros(rows.shape[1], rows.shape[1], device=rows.device))
            stats[name].gram.addmm_(rows.t(), rows)
            stats[name].tokens += rows.shape[0]
        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in layers.items()]
    try:
        for call in calls:
            run_call(block, call)
    finally:
        for h in handles:
            h.remove()
    return stats
