"""The ``export`` workflow: a model (a saved folder, or a spec with weights) as a saved folder
that ``prunekit.load`` reads, plus an ONNX file for deployment, and optionally an edge bundle."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, count_params, export_onnx
from prunekit.measure.latency import measure_onnx_latencies
from prunekit.quantize import evaluate_onnx, write_bundle
from prunekit.quantize.bundle import check_folder
from prunekit.measure.onnx_int8 import strip_metadata
from prunekit.workflows.outputs import staged_output
from prunekit.workflows.common import (
    Data,
    Measure,
    Model,
    architecture_of,
    capped,
    eval_data,
    example_of,
    finish,
    made_for,
    name_of,
    save_result,
    spec_of,
)
from prunekit.workflows.inputs import default_task, without_cache
from prunekit.workflows.profile import load_with_example

__all__ = ["export", "bundle_model"]


def export(model: Model, data: Data | None = None, *, out_dir: str | os.PathLike[str],
           weights: str | None = None, data_dir: str | None = None,
           tokenizer: str | None = None, block_size: int | None = None,
           image_size: int | tuple[int, int] | None = None, in_channels: int | None = None,
           onnx: bool = True, task: str | None = None, bundle: str | os.PathLike[str] | None = None,
           int8: bool = False, measure: Measure | None = None) -> dict[str, Any]:
    """Write ``out_dir/model/`` (weights + layout, ``prunekit.load`` reads it) and, with ``onnx``,
    ``out_dir/model.onnx`` (batch dimension dynamic), then ``results.json``.

    The example input that fixes the ONNX graph's shapes comes from ``data`` when given, else from
    the model itself (its input shape, a timm model's input size, token ids of a text model).
    ``task`` picks the class of an ``hf:`` model (default: what the data or its config says).
    ``bundle``: also write an edge bundle there (:func:`bundle_model`; needs image ``data``), int8
    with ``int8``; a saved folder's bundle takes images at the size it was trained at (other data is
    resized to it, with a warning) unless ``image_size`` is given. An existing, non-empty ``bundle``
    folder is refused before anything is written. The files appear in ``out_dir`` only once all of
    them (and the bundle) are written: a run that fails or is interrupted leaves none there.

    ``model`` may be the user's own ``nn.Module`` (never changed) with ``data`` a
    :class:`~prunekit.data.DataSplits`, :class:`~prunekit.data.Loaders` or a dataset name; the
    folder then loads with ``prunekit.load(out / "model", model=the_module)``.
    """
    if bundle is not None and not data:
        raise ConfigError("export: --bundle needs --data: the bundle's preprocessing (size, mean, std) and "
                          "labels come from the data the model was trained on. Pass e.g. --data images/.")
    if int8 and bundle is None:
        raise ConfigError("export: --int8 applies to the bundle's model; pass --bundle DIR too (or use "
                          "`prunekit quantize` for an int8 ONNX file with its fp32 comparison).")
    if bundle is not None:
        check_folder(bundle)  # NOTE: before any work: a refusal after it left a half-written out_dir
    options: dict[str, Any] = {"weights": weights, "data_dir": data_dir, "tokenizer": tokenizer,
                               "block_size": block_size, "in_channels": in_channels, "task": task,
                               "command": "export"}
    net, loaded, scorer, example = load_with_example(model, data, image_size=image_size, **options)
    trained = _trained_size(model, data, loaded) if bundle is not None and image_size is None else None
    if trained is not None:
        net, loaded, scorer, example = load_with_example(model, data, image_size=trained, **options)
    net.eval()
    out = Path(out_dir)
    spec = spec_of(model)
    architecture = architecture_of(spec, loaded, in_channels)
    # NOTE: without data, the saved source keeps only a task that was asked for or read from the config.
    chosen = scorer.name if loaded is not None or spec is None else default_task(spec, task)
    with staged_output(out) as stage:
        files = save_result(net, stage, spec, splits=loaded, in_channels=in_channels, task=chosen,
                            dense=None if spec is not None else net)
        if onnx:
            with without_cache(net):
                files["onnx"] = str(export_onnx(net, example, stage / "model.onnx"))
        files = {key: str(out / Path(path).relative_to(stage)) for key, path in files.items()}
        results = {"command": "export", "model": name_of(model),
                   "data": loaded.name if loaded is not None else None, "task": scorer.name, "weights": weights,
                   "architecture": architecture, "params": count_params(net), "macs": count_macs(net, example),
                   "files": files}
        if bundle is not None:
            results["bundle"] = bundle_model(net, loaded, bundle, task=scorer, int8=int8, measure=measure)
            files["bundle"] = str(bundle)
    return finish(results, out)


def _trained_size(model: Model, data: Data | None, loaded: Any) -> tuple[int, int] | None:
    """The (h, w) the saved folder ``model`` was trained at, where the image data ``loaded`` from
    ``data`` has another size (a bundle reads files at the size the model learnt; said in a warning);
    None where they agree or nothing is recorded."""
    spec = spec_of(model)
    shape = made_for(spec).get("input_shape") if spec is not None else None
    if not isinstance(loaded, DataSplits) or loaded.pixel_scale is None or not isinstance(shape, list) \
            or len(shape) != 3:
        return None  # NOTE: what is not image files is refused by bundle_model, which says why
    (height, width), given = map(int, shape[1:]), tuple(loaded.input_shape[1:])
    if given == (height, width):
        return None
    if not isinstance(data, str):
        raise ConfigError(f"export: the data's images are {given[0]}x{given[1]} but '{spec}' was trained on "
                          f"{height}x{width}; the bundle must read images as the model learnt them. Pass the data "
                          f"at {height}x{width} (e.g. load_image_folder(path, image_size=({height}, {width}))).")
    warnings.warn(f"export: '{data}' holds {given[0]}x{given[1]} images but '{spec}' was trained on "
                  f"{height}x{width}: the bundle takes {height}x{width} images, the data resized to it as "
                  f"--image-size {height}x{width} would. Pass --image-size to choose another size.", stacklevel=3)
    return height, width


def bundle_model(net: nn.Module, splits: Any, folder: str | os.PathLike[str], *, task: Any, int8: bool = False,
                 measure: Measure | None = None) -> dict[str, Any]:
    """Write an edge bundle of ``net`` (image classification data) into ``folder`` and return its
    manifest's numbers: the metric of the bundled ONNX file on the eval data (ONNX Runtime) and its
    latency at ``measure.batch_sizes``. ``int8``: static QDQ int8 calibrated on 8 training batches."""
    from prunekit.workflows.quantize import FP32_FILE, INT8_FILE, quantize_model

    measure = measure or Measure(batch_sizes=(1,))
    if not isinstance(splits, DataSplits) or splits.pixel_scale is None or task.name != "classification":
        raise ConfigError("export: --bundle writes an image classifier (predict.py reads image files); the data "
                          f"'{getattr(splits, 'name', splits)}' is not 8-bit images with classes. Pass an image "
                          "folder or fashion-mnist as --data.")
    with tempfile.TemporaryDirectory(prefix="prunekit-bundle-") as tmp:
        if int8:
            record = quantize_model(net, splits, tmp, task=task, measure=measure)
            file = Path(tmp) / INT8_FILE
        else:
            record = None
            with without_cache(net):
                file = strip_metadata(export_onnx(net, example_of(splits, task, 1), Path(tmp) / FP32_FILE))
        test = capped(eval_data(splits), measure.max_eval_batches, measure.eval_batch_size)
        metrics = dict(evaluate_onnx(file, test, task=task, batch_size=measure.eval_batch_size))
        latency = measure_onnx_latencies(file, example_of(splits, task, 1), batch_sizes=measure.batch_sizes,
                                         threads=measure.threads, min_time_s=measure.min_time_s)
        measured = {"metrics": metrics, "eval_samples": len(test),
                    "latency_ms": {f"batch {s.batch_size}": s.median_ms for s in latency},
                    "threads": measure.threads, "quantize": record}
        write_bundle(file, folder, input_name="input", input_shape=splits.input_shape, mean=splits.mean,
                     std=splits.std, pixel_scale=splits.pixel_scale, labels=splits.class_names,
                     precision="int8" if int8 else "fp32", measured=measured)
    return {"folder": str(folder), "precision": "int8" if int8 else "fp32", **measured}
