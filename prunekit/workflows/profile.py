"""The ``profile`` workflow: params, MACs, size, latency (and the task metric with data) of one model."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import Profile, compare
from prunekit.models import check_task_fits
from prunekit.workflows.common import (
    Data,
    Measure,
    Model,
    build,
    check_not_int8,
    eval_data,
    example_of,
    finish,
    load_model,
    measure_profile,
    name_of,
    spec_of,
    task_of,
    with_teacher,
)
from prunekit.workflows.inputs import default_task, model_example

__all__ = ["example_input", "load_with_example", "profile"]


def example_input(model: str, data: Any, in_channels: int | None = None, batch_size: int = 1, *,
                  net: nn.Module | None = None, task: Any = None, command: str = "profile") -> Any:
    """An input batch: the data's first inputs, else one derived from the model ``model`` names
    (its input shape, a timm model's input size, token ids of a text model)."""
    if data is not None:
        return example_of(data, task_of(data, task), batch_size)
    if net is None:
        net = load_model(model, in_channels=in_channels, task=default_task(model, task))
    return model_example(net, model, in_channels=in_channels, batch_size=batch_size, command=command)


def load_with_example(model: Model, data: Data | None, *, weights: str | None, data_dir: str | None,
                      in_channels: int | None, task: str | None, batch_size: int = 1,
                      command: str = "profile", tokenizer: str | None = None,
                      block_size: int | None = None,
                      image_size: int | tuple[int, int] | None = None) -> tuple[nn.Module, Any, Any, Any]:
    """``(model, data or None, task, example input)``: built for ``data`` when given, else with an
    example derived from the model (the commands that can run without data share this). The user's
    own module (a copy is used) needs ``data``: its example input comes from there."""
    data = None if isinstance(data, str) and not data else data
    if isinstance(model, str):
        check_not_int8(model)  # NOTE: measuring (the weights' size) and exporting need fp32 modules.
    elif data is None:
        raise ConfigError(f"{command}: your own {type(model).__name__} needs data, whose first sample is the "
                          f"example input it runs on; got none. Pass data= a DataSplits, Loaders of your "
                          f"DataLoaders, or a dataset name.")
    if data is not None:
        net, loaded = build(model, data, data_dir=data_dir, weights=weights, task=task, tokenizer=tokenizer,
                            block_size=block_size, image_size=image_size)
        scorer = with_teacher(task_of(loaded, task), net, spec_of(model))
        return net, loaded, scorer, example_of(loaded, scorer, batch_size)
    assert isinstance(model, str)  # NOTE: the user's module was refused above without data
    asked, task = task is not None, default_task(model, task)
    net = load_model(model, weights=weights, in_channels=in_channels, task=task)
    example = model_example(net, model, in_channels=in_channels, batch_size=batch_size, command=command)
    if asked:
        check_task_fits(net, task_of(None, task), example)
    return net, None, task_of(None, task), example


def profile(model: Model, data: Data | None = None, *, weights: str | None = None,
            data_dir: str | None = None, tokenizer: str | None = None, block_size: int | None = None,
            image_size: int | tuple[int, int] | None = None,
            in_channels: int | None = None,
            measure: Measure | None = None, out_dir: str | os.PathLike[str] | None = None,
            task: str | None = None) -> tuple[Profile, dict[str, Any]]:
    """Params, MACs, size, latency (and ``task``'s metric when ``data`` is given) of one model.

    Without ``data`` the example input comes from the model (see :func:`example_input`); the
    user's own module needs ``data`` (a DataSplits, Loaders or a name).
    ``measure.max_eval_batches`` caps the evaluation. With ``out_dir``: ``results.json``.
    """
    measure = measure or Measure()
    net, loaded, scorer, example = load_with_example(model, data, weights=weights, data_dir=data_dir,
                                                     tokenizer=tokenizer, block_size=block_size, image_size=image_size,
                                                     in_channels=in_channels, task=task)
    prof = measure_profile(net, example, name_of(model), measure, eval_data(loaded) if loaded is not None else None,
                           scorer)
    results = {"command": "profile", "model": name_of(model), "data": loaded.name if loaded is not None else None,
               "task": scorer.name, "weights": weights, "profile": prof.to_dict(), "table": compare(prof)}
    return prof, finish(results, out_dir)
