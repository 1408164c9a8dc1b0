"""The ``quantize`` workflow: a trained (perhaps pruned) model as int8, measured against fp32.

``backend="onnxruntime"``: the model is exported to fp32 ONNX, quantised by ONNX Runtime (static QDQ
calibrated on the training batches, or dynamic), with the most damaging layers kept fp32 until the
metric is within ``max_metric_drop`` on the validation split; every metric is computed by running
the ONNX files in ONNX Runtime. ``backend="torch"``: torchao makes an int8 ``nn.Module``
(:mod:`prunekit.quantize.torch_int8`: dynamic int8 linear layers, or static PT2E int8 compiled),
scored and timed in PyTorch. Either way the profile compares fp32 and int8 (dense fp32, pruned
fp32, dense int8, pruned int8 when the model is a pruned saved folder) on the task's eval data.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit import models
from prunekit._clone import clone_module
from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.io import read_manifest
from prunekit.measure import Profile, compare, count_macs, count_params, export_onnx
from prunekit.measure.latency import interleaved_onnx_latencies, measure_latencies
from prunekit.quantize import evaluate_onnx, quantize_within
from prunekit.quantize.calibration import feeds
from prunekit.measure.onnx_int8 import preprocess, strip_metadata
from prunekit.quantize.ptq import check_method
from prunekit.quantize.runtime import session
from prunekit.quantize.torch_int8 import TorchInt8, check_torch_options, compiled, eager, int8_bytes, quantize_torch
from prunekit.tasks.batches import model_accepts
from prunekit.workflows.common import (
    Data,
    Model,
    Measure,
    build,
    calibration_batches,
    capped,
    eval_data,
    example_of,
    finish_with_report,
    is_saved_folder,
    model_folder,
    name_of,
    save_result,
    spec_of,
    selection_data,
    task_of,
    torch_scorer,
    with_teacher,
)
from prunekit.workflows.outputs import staged_output
from prunekit.workflows.inputs import without_cache

__all__ = ["quantize", "quantize_model", "quantize_model_torch", "int8_profiles", "torch_profiles", "table",
           "BACKENDS", "FP32_FILE", "INT8_FILE"]

FP32_FILE, INT8_FILE = "model.fp32.onnx", "model.onnx"
BACKENDS = ("onnxruntime", "torch")  # NOTE: who quantises and runs the int8 model
_OUTPUTS = frozenset({FP32_FILE, INT8_FILE, "model"})  # NOTE: what either backend may write in out_dir


def check_backend(backend: str, *, dynamic: bool, compile: bool, method: str,
                  max_metric_drop: float | None, recipe: bool = False, cli: bool = False) -> None:
    """``backend`` known, and the options it takes (one-line errors naming what to pass instead);
    ``recipe``: the messages name the recipe stage's options (``backend: torch``), ``cli``: the command's
    (``--backend torch``), not the arguments."""
    if backend not in BACKENDS:
        raise ConfigError(f"quantize: unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}. "
                          f"Pass e.g. backend='onnxruntime'.")
    if backend == "torch":
        check_torch_options(dynamic=dynamic, compile=compile, method=method, max_metric_drop=max_metric_drop,
                            recipe=recipe, cli=cli)
    elif compile:
        raise ConfigError("compile (torch.compile) applies to the torch backend only. Drop it, or use backend: torch."
                          if recipe else "quantize: --compile (torch.compile) applies to the torch backend only. "
                          "Drop it, or pass --backend torch." if cli else "quantize: compile (torch.compile) "
                          "applies to the torch backend only. Drop it, or pass backend='torch'.")


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


def quantize_model(net: nn.Module, splits: Any, folder: str | os.PathLike[str], *, task: Any,
                   method: str = "minmax", calibration_batches: int = 8, per_channel: bool = True,
                   dynamic: bool = False, max_metric_drop: float | None = None,
                   measure: Measure | None = None, progress: bool = False, label: str = "model") -> dict[str, Any]:
    """Write ``folder/model.fp32.onnx`` and ``folder/model.onnx`` (int8) of ``net`` and return the
    manifest's ``quantize`` record (method, nodes kept fp32, fp32 and int8 validation metrics, and
    ``budget_met``: whether int8 is within ``max_metric_drop``, None without one; a missed budget is
    also warned about, naming ``label``).

    The recipe's ``quantize`` stage and :func:`quantize` share this.
    """
    check_method(method)
    measure, task = measure or Measure(), task_of(splits, task)
    if calibration_batches < 1 and not dynamic:
        raise _empty_calibration(calibration_batches)
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
        score = _scorer(selection_data(splits), task, measure)
        metric = task.metric
        fp32_metric = score(fp32)[metric]
        chosen = quantize_within(prepared, folder / INT8_FILE, score=lambda p: score(p)[metric],
                                 fp32_metric=fp32_metric, higher_is_better=task.higher_is_better,
                                 max_metric_drop=max_metric_drop, calibration=calibration, method=method,
                                 per_channel=per_channel, dynamic=dynamic,
                                 progress=(lambda m: print(f"quantize: {m}")) if step else None)
    if chosen.budget_met is False and max_metric_drop is not None:
        _warn_budget(label, metric, fp32_metric, chosen.metric, max_metric_drop, len(chosen.excluded))
    return {"kind": "quantize", "backend": "onnxruntime", "file": INT8_FILE,
            "format": "onnx-dynamic" if dynamic else "onnx-qdq",
            "method": None if dynamic else method, "per_channel": per_channel,
            "activations": "dynamic uint8" if dynamic else "uint8", "weights": "int8",
            "calibration_batches": 0 if dynamic else len(calibration), "max_metric_drop": max_metric_drop,
            "excluded": list(chosen.excluded), "damage": chosen.damage, "metric": metric,
            "tensor_damage": {t: {"nodes": list(chosen.tensor_nodes[t]), "damage": d}
                              for t, d in chosen.tensor_damage.items()},
            "budget_met": chosen.budget_met, "val": {"fp32": fp32_metric, "int8": chosen.metric}}


def _warn_budget(label: str, metric: str, fp32: float, int8: float, budget: float, excluded: int) -> None:
    """One line: ``max_metric_drop`` was missed, what the best int8 model tried reached, what to do."""
    warnings.warn(f"quantize: the {label}'s int8 misses max_metric_drop {budget:g}: the best configuration tried "
                  f"({excluded} node(s) kept fp32) has validation {metric} {int8:.4g} against fp32 {fp32:.4g} "
                  f"(a drop of {abs(fp32 - int8):.4g}). Raise the budget, try another --method or more "
                  f"--calibration-batches, or ship the fp32 model.", stacklevel=3)


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
    0.78 to the PyTorch model on all-MiniLM-L6-v2). A model whose forward does not name the keyword
    is exported without it, as training and scoring call it without it."""
    example = example_of(splits, task, 1)
    if isinstance(splits, DataSplits):
        return net, example
    extra = {k: v[:1] for k, v in task.keyword_inputs(next(iter(splits.train))).items()
             if isinstance(v, torch.Tensor)}
    if len(extra) != 1 or isinstance(example, tuple):
        return net, example  # NOTE: one input plus one keyword tensor is what text models take
    (name, value), = extra.items()
    if not model_accepts(net, name):
        return net, example
    return _WithKeyword(net, name), (example, value)


def calibration_batches_of(splits: Any, count: int, task: Any) -> list[Any]:
    """``count`` training batches of 64 (image data) or of the loader's size."""
    return calibration_batches(splits, count, 64, task=task)


def quantize_model_torch(net: nn.Module, splits: Any, *, task: Any, dynamic: bool = False,
                         calibration_batches: int = 8, compile: bool = False,
                         measure: Measure | None = None) -> TorchInt8:
    """:func:`~prunekit.quantize.torch_int8.quantize_torch` of ``net`` calibrated on the training
    batches; its record carries the fp32 and int8 validation metrics (int8 scored by the eager int8
    module: the compiled one runs the same int8 arithmetic, and compiling every eval shape is slow)."""
    measure, task = measure or Measure(), task_of(splits, task)
    example = example_of(splits, task, 1)
    if not dynamic and not _is_image_batch(example):
        # NOTE: decided by the inputs, so that the user's own image DataLoaders (Loaders) are taken too
        raise ConfigError(f"quantize: static int8 in PyTorch (PT2E) is for image models (one float input "
                          f"shaped N x C x H x W); this data's model inputs are {_described(example)}. Use "
                          f"dynamic=True (--dynamic) for linear layers, or backend='onnxruntime'.")
    if calibration_batches < 1 and not dynamic:
        raise _empty_calibration(calibration_batches)
    batches = [] if dynamic else _inputs_only(calibration_batches_of(splits, calibration_batches, task), splits)
    result = quantize_torch(net, example, dynamic=dynamic, calibration=batches, compile=compile)
    score = torch_scorer(selection_data(splits), task, measure)
    record = {**result.record, "calibration_batches": len(batches), "metric": task.metric,
              "val": {"fp32": score(net)[task.metric], "int8": score(eager(result.model))[task.metric]}}
    return TorchInt8(model=result.model, record=record)


def _is_image_batch(inputs: Any) -> bool:
    """Whether a batch's model inputs are one float tensor shaped like images (N, C, H, W)."""
    return isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and inputs.dim() == 4


def _described(inputs: Any) -> str:
    """A batch's model inputs in a few words, for an error message."""
    if isinstance(inputs, torch.Tensor):
        return f"a {str(inputs.dtype).removeprefix('torch.')} tensor of shape {tuple(inputs.shape)}"
    return f"{len(inputs)} tensors" if isinstance(inputs, tuple) else type(inputs).__name__


def _empty_calibration(count: int) -> Exception:
    """The one-line error for ``calibration_batches`` below 1 (``count``, as given)."""
    return ConfigError(f"quantize: calibration_batches must be >= 1 for static int8 (it observes activation "
                       f"ranges on them); got {count}. Pass e.g. --calibration-batches 8, or --dynamic.")


def int8_profiles(pairs: Sequence[tuple[str, nn.Module, Path]], splits: Any, *, task: Any,
                  measure: Measure, latency: bool = True) -> list[Profile]:
    """One Profile per ``(name, PyTorch model it came from, ONNX file)``: params and MACs of the
    model, the file's size, its ONNX Runtime latency per batch size (the files timed in interleaved
    rounds, so that they are compared under the same load) and its metric on the eval data."""
    score = _scorer(eval_data(splits), task, measure)
    example = example_of(splits, task, 1)
    onnx_example = onnx_inputs(pairs[0][1], splits, task)[1] if pairs else example
    timings = interleaved_onnx_latencies({name: file for name, _, file in pairs}, onnx_example,
                                         batch_sizes=measure.batch_sizes, threads=measure.threads,
                                         min_time_s=measure.min_time_s) if latency and pairs else {}
    out = []
    for name, net, file in pairs:
        metrics = score(file)
        out.append(Profile(name=name, params=count_params(net), macs=count_macs(net, example),
                           size_bytes=file.stat().st_size, latency=timings.get(name, ()),
                           input_shape=tuple(getattr(example, "shape", ())),
                           accuracy=metrics.get("accuracy"), loss=metrics.get("loss"),
                           metrics={k: v for k, v in metrics.items() if k not in ("accuracy", "loss", "count")}))
    return out


def torch_profiles(triples: Sequence[tuple[str, nn.Module, nn.Module]], splits: Any, *, task: Any,
                   measure: Measure, latency: bool = True) -> list[Profile]:
    """One Profile per ``(name, fp32 model it came from, module PyTorch runs)``: params and MACs of the
    fp32 model, the bytes of the tensors the module computes with (int8 data and scales for int8),
    its PyTorch latency per batch size and its metric on the eval data (a compiled module is scored
    by the eager one inside it)."""
    score = torch_scorer(eval_data(splits), task, measure)
    example = example_of(splits, task, 1)
    out = []
    for name, net, runs in triples:
        metrics = score(eager(runs))
        timings = measure_latencies(runs, example, backend="torch", batch_sizes=measure.batch_sizes,
                                    threads=measure.threads, min_time_s=measure.min_time_s) if latency else ()
        out.append(Profile(name=name, params=count_params(net), macs=count_macs(net, example),
                           size_bytes=int8_bytes(runs), latency=timings,
                           input_shape=tuple(getattr(example, "shape", ())),
                           accuracy=metrics.get("accuracy"), loss=metrics.get("loss"),
                           metrics={k: v for k, v in metrics.items() if k not in ("accuracy", "loss", "count")}))
    return out


def table(profiles: Sequence[Profile], backend: str = "onnxruntime") -> str:
    """:func:`~prunekit.measure.compare` of int8 profiles (their size is the ONNX file's, or for the
    torch backend the bytes of the tensors the module computes with)."""
    size = "size (ONNX file)  " if backend == "onnxruntime" else "size (tensors)    "
    return compare(*profiles).replace("size (safetensors)", size)


def _dense_source(spec: str) -> nn.Module | None:
    """The dense model a pruned saved folder came from (None when ``spec`` is not one)."""
    if not is_saved_folder(spec):
        return None
    manifest = read_manifest(Path(model_folder(spec)))
    changed = any(t["kind"] in ("prune", "depth", "factorise") for t in manifest.transforms)
    if not changed or not manifest.source:
        return None
    weights = manifest.source.get("kwargs", {}).get("weights")
    if isinstance(weights, str) and weights.endswith(".safetensors") and not Path(weights).is_file():
        warnings.warn(f"quantize: the dense weights '{spec}' was cut from ({weights}) are not there any more; "
                      f"the dense rows show the model its source builds without them (untrained, unless the "
                      f"source loads weights itself). Keep that file to compare with the trained dense model.",
                      stacklevel=2)
        kwargs = {k: v for k, v in manifest.source.get("kwargs", {}).items() if k != "weights"}
        return models.from_source({**manifest.source, "kwargs": kwargs})
    return models.from_source(manifest.source)


def _torch_compared(net: nn.Module, dense: nn.Module | None, splits: Any, *, task: Any, dynamic: bool,
                    calibration_batches: int, compile: bool, measure: Measure) -> tuple[dict[str, Any], list[Profile]]:
    """The torch backend's record of ``net`` and the profiles of fp32 against int8 (with the dense
    model's fp32 and int8 first when ``dense`` is given); fp32 is compiled too when int8 is."""
    options = {"dynamic": dynamic, "calibration_batches": calibration_batches, "compile": compile,
               "measure": measure}
    int8 = quantize_model_torch(net, splits, task=task, **options)  # type: ignore[arg-type]
    run = compiled if compile else (lambda m: m)
    label = "pruned" if dense is not None else "model"
    rows = [(f"{label} fp32", net, run(net)), (f"{label} int8", net, int8.model)]
    if dense is not None:
        dense_int8 = quantize_model_torch(dense, splits, task=task, **options).model  # type: ignore[arg-type]
        rows = [("dense fp32", dense, run(dense)), rows[0], ("dense int8", dense, dense_int8), rows[1]]
    return int8.record, torch_profiles(rows, splits, task=task, measure=measure, latency="torch" in measure.backends)


def _onnx_compared(net: nn.Module, dense: nn.Module | None, splits: Any, out: Path, dense_dir: Path, *,
                   task: Any, measure: Measure, progress: bool, **options: Any) -> tuple[dict[str, Any], list[Profile]]:
    """The onnxruntime backend's record of ``net`` (files in ``out``) and the profiles of fp32 against
    int8, with the dense model's (files in ``dense_dir``) first when ``dense`` is given."""
    record = quantize_model(net, splits, out, task=task, measure=measure, progress=progress, **options)
    label = "pruned" if dense is not None else "model"
    pairs = [(f"{label} fp32", net, out / FP32_FILE), (f"{label} int8", net, out / INT8_FILE)]
    if dense is not None:
        quantize_model(dense, splits, dense_dir, task=task, measure=measure, label="dense model", **options)
        pairs = [("dense fp32", dense, dense_dir / FP32_FILE), pairs[0],
                 ("dense int8", dense, dense_dir / INT8_FILE), pairs[1]]
    return record, int8_profiles(pairs, splits, task=task, measure=measure, latency="onnxruntime" in measure.backends)


def quantize(model: Model, data: Data, *, weights: str | None = None, data_dir: str | None = None,
             tokenizer: str | None = None, block_size: int | None = None,
             image_size: int | tuple[int, int] | None = None,
             method: str = "minmax", calibration_batches: int = 8, per_channel: bool = True,
             dynamic: bool = False, max_metric_drop: float | None = None, task: str | None = None,
             backend: str = "onnxruntime", compile: bool = False, measure: Measure | None = None,
             out_dir: str | os.PathLike[str] | None = None, progress: bool = False,
             dense: nn.Module | None = None) -> dict[str, Any]:
    """Quantise ``model`` (a saved folder, or a spec with ``weights``) to int8 and compare it with fp32.

    ``backend="onnxruntime"`` writes ``out_dir/model.onnx`` (int8) and ``out_dir/model.fp32.onnx``;
    ``backend="torch"`` makes the int8 module with torchao (``compile``: run it, and the fp32 models it
    is compared with, through ``torch.compile``). Both write ``out_dir/model/`` (the fp32 weights, whose
    manifest ends with the ``quantize`` record: ``prunekit.load`` rebuilds the torch int8 module from
    it) and ``results.json``; the files appear in ``out_dir`` only once all are written, so a run that
    fails or is interrupted leaves none there. Without ``out_dir`` only the results are returned.

    ``model`` may be the user's own trained ``nn.Module`` (never changed) and ``data`` a
    :class:`~prunekit.data.DataSplits` or :class:`~prunekit.data.Loaders` of their DataLoaders;
    ``dense``, the dense module theirs was cut from, adds the dense fp32 and int8 rows (a pruned
    saved folder finds its own). The folder then loads with ``prunekit.load(out / "model", model=the_module)``.
    """
    check_method(method)
    check_backend(backend, dynamic=dynamic, compile=compile, method=method, max_metric_drop=max_metric_drop)
    measure = measure or Measure()
    net, splits = build(model, data, data_dir=data_dir, weights=weights, task=task, tokenizer=tokenizer,
                        block_size=block_size, image_size=image_size)
    spec = spec_of(model)
    scorer = with_teacher(task_of(splits, task), net, spec)
    if dense is None:
        dense = _dense_source(spec) if spec is not None else None
    elif isinstance(dense, nn.Module):
        dense = clone_module(dense).eval()
    else:
        raise ConfigError(f"quantize: dense must be the nn.Module the model was cut from; got "
                          f"{type(dense).__name__}. Pass your dense module, or leave dense out.")
    with tempfile.TemporaryDirectory(prefix="prunekit-quantize-") as scratch, contextlib.ExitStack() as stack:
        # NOTE: written in a hidden folder, moved into out_dir at the end: a stopped run leaves nothing
        out = (stack.enter_context(staged_output(Path(out_dir), outputs=_OUTPUTS)) if out_dir is not None
               else Path(scratch))
        if backend == "torch":
            record, profiles = _torch_compared(net, dense, splits, task=scorer, dynamic=dynamic,
                                               calibration_batches=calibration_batches, compile=compile,
                                               measure=measure)
        else:
            options = {"method": method, "calibration_batches": calibration_batches, "per_channel": per_channel,
                       "dynamic": dynamic, "max_metric_drop": max_metric_drop, "measure": measure}
            record, profiles = _onnx_compared(net, dense, splits, out, Path(scratch) / "dense", task=scorer,
                                              progress=progress, **options)  # type: ignore[arg-type]
        files: dict[str, str] = {}
        if out_dir is not None:
            files = save_result(copy.deepcopy(net), out, spec, splits=splits, task=scorer.name, transforms=[record],
                                dense=net if spec is None else None)
            if backend == "onnxruntime":
                files.update(onnx=str(out / INT8_FILE), fp32_onnx=str(out / FP32_FILE))
            files = {key: str(Path(out_dir) / Path(path).relative_to(out)) for key, path in files.items()}
    results = {"command": "quantize", "model": name_of(model), "data": splits.name, "task": scorer.name,
               "weights": weights, "backend": backend, "quantize": record,
               "profiles": [p.to_dict() for p in profiles], "table": table(profiles, backend), "files": files}
    return finish_with_report(results, out_dir)
