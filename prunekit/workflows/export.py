"""The ``export`` workflow: a model (a saved folder, or a spec with weights) as a saved folder
that ``prunekit.load`` reads, plus an ONNX file for deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prunekit.measure import count_macs, count_params, export_onnx
from prunekit.workflows.common import finish, save_result, source_architecture
from prunekit.workflows.inputs import default_task, without_cache
from prunekit.workflows.profile import load_with_example

__all__ = ["export"]


def export(model: str, data: str | None = None, *, out_dir: str | os.PathLike[str],
           weights: str | None = None, data_dir: str | None = None, in_channels: int | None = None,
           onnx: bool = True, task: str | None = None) -> dict[str, Any]:
    """Write ``out_dir/model/`` (weights + layout, ``prunekit.load`` reads it) and, with ``onnx``,
    ``out_dir/model.onnx`` (batch dimension dynamic), then ``results.json``.

    The example input that fixes the ONNX graph's shapes comes from ``data`` when given, else from
    the model itself (its input shape, a timm model's input size, token ids of a text model).
    ``task`` picks the class of an ``hf:`` model (default: what the data or its config says).
    """
    net, loaded, scorer, example = load_with_example(model, data, weights=weights, data_dir=data_dir,
                                                     in_channels=in_channels, task=task, command="export")
    net.eval()
    out = Path(out_dir)
    architecture = source_architecture(model, loaded, in_channels)
    # NOTE: without data, the saved source keeps only a task that was asked for or read from the config.
    chosen = scorer.name if loaded is not None else default_task(model, task)
    files = save_result(net, out, model, splits=loaded, in_channels=in_channels, task=chosen)
    if onnx:
        with without_cache(net):
            files["onnx"] = str(export_onnx(net, example, out / "model.onnx"))
    results = {"command": "export", "model": model, "data": loaded.name if loaded is not None else None,
               "task": scorer.name, "weights": weights, "architecture": architecture,
               "params": count_params(net), "macs": count_macs(net, example), "files": files}
    return finish(results, out)
