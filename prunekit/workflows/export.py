"""The ``export`` workflow: a model (a saved folder, or a name with weights) as a saved folder
that ``prunekit.load`` reads, plus an ONNX file for deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prunekit.measure import count_macs, count_params, export_onnx
from prunekit.workflows.common import build, finish, load_model, save_result, source_architecture
from prunekit.workflows.profile import example_input

__all__ = ["export"]


def export(model: str, data: str | None = None, *, out_dir: str | os.PathLike[str],
           weights: str | None = None, data_dir: str | None = None, in_channels: int | None = None,
           onnx: bool = True) -> dict[str, Any]:
    """Write ``out_dir/model/`` (weights + layout, ``prunekit.load`` reads it) and, with ``onnx``,
    ``out_dir/model.onnx`` (batch dimension dynamic), then ``results.json``.

    The example input that fixes the ONNX graph's shapes comes from ``data`` when given, else from
    the model's own input shape.
    """
    if data:
        net, splits = build(model, data, data_dir=data_dir, weights=weights)
    else:
        net, splits = load_model(model, weights=weights, in_channels=in_channels), None
    net.eval()
    example = example_input(model, splits, in_channels)
    out = Path(out_dir)
    architecture = source_architecture(model, splits, in_channels)
    files = save_result(net, out, model, splits=splits, in_channels=in_channels)
    if onnx:
        files["onnx"] = str(export_onnx(net, example, out / "model.onnx"))
    results = {"command": "export", "model": model, "data": splits.name if splits else None,
               "weights": weights, "architecture": architecture, "params": count_params(net),
               "macs": count_macs(net, example), "files": files}
    return finish(results, out)
