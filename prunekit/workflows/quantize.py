"""The ``quantize`` workflow: a trained (perhaps pruned) model as an int8 ONNX file, measured.

The model is exported to fp32 ONNX, quantised by ONNX Runtime (static QDQ calibrated on the
training batches, or dynamic), with the most damaging layers kept fp32 until the metric is within
``max_metric_drop`` on the validation split. The profile compares fp32 and int8 (dense fp32, pruned
fp32, dense int8, pruned int8 when the model is a pruned saved folder), every metric computed by
running the ONNX files in ONNX Runtime on the task's eval data.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit import models
from prunekit.data import DataSplits
from prunekit.io import read_manifest
from prunekit.measure import Profile, compare, count_macs, count_params, export_onnx
from prunekit.measure.latency import measure_onnx_latencies
from prunekit.quantize import evaluate_onnx, quantize_within
from prunekit.quantize.calibration import feeds
from prunekit.quantize.ptq import check_method, preprocess, strip_metadata
from prunekit.quantize.runtime import session
from prunekit.workflows.common import (
    Measure,
    build,
    calibration_batches,
    capped,
    eval_data,
    example_of,
    finish,
    is_saved_folder,
    model_folder,
    save_result,
    task_of,
    with_teacher,
)
from prunekit.workflows.inputs import without_cache

__all__ = ["quantize", "quantize_model", "int8_profiles", "table", "FP32_FILE", "INT8_FILE"]

FP32_FILE, INT8_FILE = "model.fp32.onnx", "model.onnx"


def _inputs_only(batches: Sequence[Any], splits: Any) -> list[Any]:
    """Calibration batches without labels (image data yields (inputs, labels))."""
    return [b[0] for b in batches] if isinstance(splits, DataSplits) else list(batches)


def _scorer(data: Any, task: Any, measure: Measure) -> Callable[[Path], dict[str, float]]:
    """Metrics of an ONNX file on ``data`` (capped as ``measure`` says), run by ONNX Runtime."""
    if isinstance(data, TensorDataset):
        data = capped(data, measure.max_eval_batches, measure.eval_batch_size)
        return lambda path: dict(evaluate_onnx(path, data, task=task, batch_size=measure.eval_batch_size,
                                               threads=measure.threads))
    return lambda path: dict(evaluate_onnx(path, data, task=task, max_batches=measure.max_eval_batches,
                                           threads=measure.threads))


def _selection_data(splits: Any) -> Any:
    """Where the fp32 fallback is chosen: the validation split (the test split only reports)."""
    return getattr(splits, "val", None) if getattr(splits, "val", None) is not None else eval_data(splits)


def quantize_model(net: nn.Module, splits: Any, folder: str | os.PathLike[str], *, task: Any,
                   method: str = "minmax", calibration_batches: int = 8, per_channel: bool = True,
                   dynamic: bool = False, max_metric_drop: float | None = None,
                   measure: Measure | None = None, progress: bool = False) -> dict[str, Any]:
    """Write ``folder/model.fp32.onnx`` and ``folder/model.onnx`` (int8) of ``net`` and return the
    manifest's ``quantize`` record (method, nodes kept fp32, fp32 and int8 validation metrics).

    The recipe's ``quantize`` stage and :func:`quantize` share this.
    """
    check_method(method)
    measure, task = measure or Measure(), task_of(splits, task)
    if calibration_batches < 1 and not dynamic:
        raise _empty_calibration()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exported, example = onnx_inputs(net, splits, task)
    with without_cache(net):
        fp32 = strip_metadata(export_onnx(exported.eval(), example, folder / FP32_FILE))
    step = print if progress else None
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=folder) as tmp:
        prepared = preprocess(fp32, Path(tmp) / "prepared.onnx")
        calibration = []
        if not dynamic or max_metric_drop is not None:  # NOTE: dynamic uses them only to rank layers.
            batches = _inputs_only(calibration_batches_of(splits, calibration_batches, task), splits)
            ort = session(prepared)
            calibration = feeds(batches, [i.name for i in ort.get_inputs()], [i.type for i in ort.get_inputs()])
        score = _scorer(_selection_data(splits), task, measure)
        metric = task.metric
        fp32_metric = score(fp32)[metric]
        chosen = quantize_within(prepared, folder / INT8_FILE, score=lambda p: score(p)[metric],
                                 fp32_metric=fp32_metric, higher_is_better=task.higher_is_better,
                                 max_metric_drop=max_metric_drop, calibration=calibration, method=method,
                                 per_channel=per_channel, dynamic=dynamic,
                                 progress=(lambda m: print(f"quantize: {m}")) if step else None)
    return {"kind": "quantize", "file": INT8_FILE, "format": "onnx-dynamic" if dynamic else "onnx-qdq",
            "method": None if dynamic else method, "per_channel": per_channel,
            "activations": "dynamic uint8" if dynamic else "uint8", "weights": "int8",
            "calibration_batches": 0 if dynamic else calibration_batches, "max_metric_drop": max_metric_drop,
            "excluded": list(chosen.excluded), "damage": chosen.damage, "metric": metric,
            "val": {"fp32": fp32_metric, "int8": chosen.metric}}


class _WithKeyword(nn.Module):
    """``net`` with one keyword input (e.g. ``attention_mask``) taken as its second positional one,
    so that an ONNX export has it as an input instead of tracing one value of it in."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net, self.name = net, name

    def forward(self, inputs: torch.Tensor, keyword: torch.Tensor) -> Any:
        return self.net(inputs, **{self.name: keyword})


def onnx_inputs(net: nn.Module, splits: Any, task: Any) -> tuple[nn.Module, Any]:
    """``(module to export, its example inputs)``: the model and :func:`example_of`'s inputs, plus the
    batches' keyword tensors (a text model's attention mask) where the data carries them. Without
    the mask the file would attend to padding and score padded batches wrongly (measured: cosine
    0.78 to the PyTorch model on all-MiniLM-L6-v2)."""
    example = example_of(splits, task, 1)
    if isinstance(splits, DataSplits):
        return net, example
    extra = {k: v[:1] for k, v in task.keyword_inputs(next(iter(splits.train))).items()
             if isinstance(v, torch.Tensor)}
    if len(extra) != 1 or isinstance(example, tuple):
        return net, example  # NOTE: one input plus one keyword tensor is what text models take
    (name, value), = extra.items()
    return _WithKeyword(net, name), (example, value)


def calibration_batches_of(splits: Any, count: int, task: Any) -> list[Any]:
    """``count`` training batches of 64 (image data) or of the loader's size."""
    return calibration_batches(splits, count, 64, task=task)


def _empty_calibration() -> Exception:
    from prunekit.errors import ConfigError

    return ConfigError("quantize: calibration_batches must be >= 1 for static int8 (it observes activation "
                       "ranges on them); got 0. Pass e.g. --calibration-batches 8, or --dynamic.")


def int8_profiles(pairs: Sequence[tuple[str, nn.Module, Path]], splits: Any, *, task: Any,
                  measure: Measure, latency: bool = True) -> list[Profile]:
    """One Profile per ``(name, PyTorch model it came from, ONNX file)``: params and MACs of the
    model, the file's size, its ONNX Runtime latency per batch size and its metric on the eval data."""
    score = _scorer(eval_data(splits), task, measure)
    example = example_of(splits, task, 1)
    onnx_example = onnx_inputs(pairs[0][1], splits, task)[1] if pairs else example
    out = []
    for name, net, file in pairs:
        metrics = score(file)
        timings = measure_onnx_latencies(file, onnx_example, batch_sizes=measure.batch_sizes, threads=measure.threads,
                                         min_time_s=measure.min_time_s) if latency else ()
        out.append(Profile(name=name, params=count_params(net), macs=count_macs(net, example),
                           size_bytes=file.stat().st_size, latency=timings,
                           input_shape=tuple(getattr(example, "shape", ())),
                           accuracy=metrics.get("accuracy"), loss=metrics.get("loss"),
                           metrics={k: v for k, v in metrics.items() if k not in ("accuracy", "loss", "count")}))
    return out


def table(profiles: Sequence[Profile]) -> str:
    """:func:`~prunekit.measure.compare` of ONNX profiles (their size is the ONNX file's)."""
    return compare(*profiles).replace("size (safetensors)", "size (ONNX file)  ")


def _dense_source(spec: str) -> nn.Module | None:
    """The dense model a pruned saved folder came from (None when ``spec`` is not one)."""
    if not is_saved_folder(spec):
        return None
    manifest = read_manifest(Path(model_folder(spec)))
    changed = any(t["kind"] in ("prune", "depth", "factorise") for t in manifest.transforms)
    return models.from_source(manifest.source) if changed and manifest.source else None


def quantize(model: str, data: str, *, weights: str | None = None, data_dir: str | None = None,
             method: str = "minmax", calibration_batches: int = 8, per_channel: bool = True,
             dynamic: bool = False, max_metric_drop: float | None = None, task: str | None = None,
             measure: Measure | None = None, out_dir: str | os.PathLike[str] | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Quantise ``model`` (a saved folder, or a spec with ``weights``) to int8 and compare it with fp32.

    Writes ``out_dir/model.onnx`` (int8), ``out_dir/model.fp32.onnx``, ``out_dir/model/`` (the fp32
    weights, whose manifest ends with the ``quantize`` record) and ``results.json``. Without
    ``out_dir`` the files go to a temporary folder and only the results are returned.
    """
    check_method(method)
    measure = measure or Measure()
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task)
    scorer = with_teacher(task_of(splits, task), net, model)
    dense = _dense_source(model)
    with tempfile.TemporaryDirectory(prefix="prunekit-quantize-") as scratch:
        out = Path(out_dir) if out_dir is not None else Path(scratch)
        record = quantize_model(net, splits, out, task=scorer, method=method, calibration_batches=calibration_batches,
                                per_channel=per_channel, dynamic=dynamic, max_metric_drop=max_metric_drop,
                                measure=measure, progress=progress)
        label = "pruned" if dense is not None else "model"
        pairs = [(f"{label} fp32", net, out / FP32_FILE), (f"{label} int8", net, out / INT8_FILE)]
        if dense is not None:
            dense_dir = Path(scratch) / "dense"
            quantize_model(dense, splits, dense_dir, task=scorer, method=method,
                           calibration_batches=calibration_batches, per_channel=per_channel, dynamic=dynamic,
                           max_metric_drop=max_metric_drop, measure=measure)
            pairs = [("dense fp32", dense, dense_dir / FP32_FILE), pairs[0],
                     ("dense int8", dense, dense_dir / INT8_FILE), pairs[1]]
        profiles = int8_profiles(pairs, splits, task=scorer, measure=measure,
                                 latency="onnxruntime" in measure.backends)
        files: dict[str, str] = {}
        if out_dir is not None:
            files = save_result(copy.deepcopy(net), out, model, splits=splits, task=scorer.name, transforms=[record])
            files.update(onnx=str(out / INT8_FILE), fp32_onnx=str(out / FP32_FILE))
    results = {"command": "quantize", "model": model, "data": splits.name, "task": scorer.name,
               "weights": weights, "quantize": record, "profiles": [p.to_dict() for p in profiles],
               "table": table(profiles), "files": files}
    return finish(results, out_dir)
