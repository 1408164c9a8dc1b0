"""The only code in ``decompose`` that runs a model: layer shapes and input Gram matrices.

Both run the model in eval mode under ``no_grad`` with forward hooks, remove the hooks and restore
the train/eval mode afterwards, so the model is left as it was.

Calibration batches may be tensors (``model(x)``), ``(inputs, labels)`` tuples whose inputs are a
tensor, a tuple of tensors (``model(*inputs)``) or a mapping of keyword inputs, mappings of keyword
inputs (``model(**batch)``, as a Hugging Face tokenizer returns), or ``ModelInputs`` (positional and
keyword inputs without labels, what the workflows' ``calibration_batches`` gives for several inputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit.decompose.layers import LayerIO
from prunekit.errors import ConfigError
from prunekit.importance.stats import ModelInputs
from prunekit.measure.macs import as_inputs

__all__ = ["capture_calls", "capture_io", "collect_grams", "run_batch"]


@contextmanager
def _hooked(model: nn.Module, names: Sequence[str], hook: Any) -> Iterator[None]:
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(n, i, o)) for n in names]
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for h in handles:
            h.remove()
        restore_modes(modes)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on one calibration batch (see the module docstring for the accepted forms)."""
    device = _device(model)
    move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
    if isinstance(batch, ModelInputs):
        return model(*(move(x) for x in batch), **{k: move(v) for k, v in batch.keywords_for(model).items()})
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]  # NOTE: (inputs, labels): the labels are not needed
        if isinstance(batch, (tuple, list)):
            return model(*(move(x) for x in batch))
    if isinstance(batch, Mapping):
        return model(**{k: move(v) for k, v in batch.items()})
    if isinstance(batch, torch.Tensor):
        return model(move(batch))
    raise ConfigError(f"calibration: each batch must be a tensor, an (inputs, labels) tuple or a dict "
                      f"of keyword inputs; got {type(batch).__name__}. Pass e.g. [x1, x2] or a "
                      f"DataLoader of (x, y).")


def capture_calls(model: nn.Module, example_inputs: Any, names: Sequence[str]) -> dict[str, tuple[LayerIO, ...]]:
    """For each named layer ``example_inputs`` runs: the shapes of every call, in call order.

    A layer called on several input sizes (a head shared across FPN levels) costs the MACs of each
    call, so its MACs are summed over these; a layer never called is absent.
    """
    inputs = as_inputs(example_inputs)
    seen: dict[str, list[LayerIO]] = {}

    def hook(name: str, args: tuple[Any, ...], output: Any) -> None:
        seen.setdefault(name, []).append(LayerIO(tuple(args[0].shape), tuple(output.shape)))

    with _hooked(model, names, hook):
        device = _device(model)
        model(*(x.to(device) for x in inputs))
    return {name: tuple(ios) for name, ios in seen.items()}


def capture_io(model: nn.Module, example_inputs: Any, names: Sequence[str]) -> dict[str, tuple[LayerIO, int]]:
    """For each named layer: the shapes of its last call on ``example_inputs`` and how often it was called.

    NOTE: calls times one call's MACs misprices a layer run on several input sizes; MAC counts
    should sum over :func:`capture_calls` instead.
    """
    return {name: (ios[-1], len(ios)) for name, ios in capture_calls(model, example_inputs, names).items()}


def collect_grams(model: nn.Module, batches: Iterable[Any] | None, names: Sequence[str], *,
                  max_batches: int | None = None) -> dict[str, torch.Tensor]:
    """X^T X (float64, on CPU) of each named Linear's inputs over the calibration batches."""
    grams: dict[str, torch.Tensor] = {}

    def hook(name: str, args: tuple[Any, ...], output: Any) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        g = (x.T @ x).cpu()
        grams[name] = grams[name] + g if name in grams else g

    count = 0
    with _hooked(model, names, hook):
        for batch in batches or ():
            if max_batches is not None and count >= max_batches:
                break
            run_batch(model, batch)
            count += 1
    if count == 0:
        raise ConfigError("calibration: no batches were given. Pass a few batches of real inputs, "
                          "e.g. calibration=[x[:64], x[64:128]].")
    missing = [n for n in names if n not in grams]
    if missing:
        raise ConfigError(f"calibration: layer '{missing[0]}' was never run by the calibration batches "
                          f"({len(missing)} such). Pass batches that go through it, or leave it out with ignore=.")
    return grams
