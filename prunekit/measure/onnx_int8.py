"""Static int8 of an ONNX file: the one format prunekit deploys (``prunekit.quantize``) and times
(widths chosen for ``PrunerOptions(backend="onnxruntime-int8")``).

QDQ format, unsigned int8 activations and signed int8 weights (the pair x86 VNNI runs fastest),
weights per output channel, activation ranges observed on calibration feeds, after ONNX Runtime's
``quant_pre_process`` (graph optimisation, shape inference). Timing the same file that is shipped
matters: ONNX Runtime's fast int8 convolution kernel needs widths the fp32 ones do not (on x86, at
least 16 output channels and channel counts divisible by 4), so an fp32 timing can pick other widths.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.errors import require
from prunekit.io.files import atomic_path

__all__ = ["METHODS", "preprocess", "quiet", "static_int8", "strip_metadata", "timing_int8"]

METHODS = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ORT's quantiser logs warnings and prints progress; keep them off the user's terminal."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def strip_metadata(path: str | os.PathLike[str]) -> Path:
    """Drop what the ONNX file at ``path`` carries only for debugging, in place: the exporter's
    per-node and per-graph records (stack traces, doc strings; about 60 kB on a ResNet-20), the
    inferred shapes of intermediate tensors (ONNX Runtime infers them again) and opset domains no
    node uses. Tensor and node names stay, so the file still reads in a viewer. Models with external
    data files are left alone."""
    onnx = require("onnx", extra="onnx", feature="int8 quantisation")
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return path
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.metadata_props[:]
    del model.graph.value_info[:]
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    kept = [opset for opset in model.opset_import if opset.domain in used or model.functions]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    with atomic_path(path) as tmp:  # NOTE: the user's umask, not NamedTemporaryFile's 0600
        tmp.write_bytes(model.SerializeToString())
    return path


def preprocess(source: Path, target: Path) -> Path:
    """ORT's ``quant_pre_process`` (graph optimisation, shape inference) of ``source`` into ``target``
    with the debugging records stripped (:func:`strip_metadata`); ``source`` itself where the
    pre-processing fails, since quantisation works without it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet():
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:  # NOTE: optional step; ORT raises many types on graphs it cannot optimise.
        return source
    return strip_metadata(target) if target.is_file() else source


def _reader(feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """A rewindable ``onnxruntime.quantization.CalibrationDataReader`` over prepared feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(feeds):
                return None
            self._next += 1
            return feeds[self._next - 1]

        def rewind(self) -> None:
            self._next = 0

    return _Reader()


# NOTE: quantize_static calibrates entropy on 128 histogram bins and 128 quantised bins: one candidate
# threshold, the full range, so "entropy" wrote minmax's file byte for byte (ORT 1.32). It does not pass
# bin counts on to its calibrator, so entropy ranges are computed here with TensorRT's 2048 bins and 128
# quantised bins and handed to it as a calibration cache. Percentile's defaults (2048 bins) calibrate.
_ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 128}


def entropy_threshold(histogram: Sequence[Any], num_quantized_bins: int) -> tuple[Any, Any]:
    """``(low, high)``: the range of ``histogram`` whose ``num_quantized_bins``-bin quantisation is
    closest in KL divergence to the whole histogram (TensorRT's entropy calibration, Migacz 2017).

    ORT's ``HistogramCollector.get_entropy_threshold``, candidate for candidate (the ranges of
    ``2 i + 1`` bins about the middle one, ``i`` from ``num_quantized_bins // 2`` to ``n // 2``; outliers
    added to the end bins; merged bins spread back over their non-empty bins as whole counts; zeros
    smoothed to 1e-4), with its per-bin Python loops done by numpy: about 0.1 s per tensor at 2048 bins
    instead of 1 s. In float64: where ORT's float32 sums rank near-equal candidates by rounding noise,
    the two may pick neighbouring thresholds. ``histogram``: ``(counts[n], edges[n + 1], min, max, ...)``."""
    hist, edges = np.asarray(histogram[0], dtype=np.float64), histogram[1]
    size, zero, bins = hist.size, hist.size // 2, num_quantized_bins
    below = np.concatenate([[0.0], np.cumsum(hist)])  # NOTE: below[k] = sum(hist[:k])
    best, chosen = np.inf, (0, size)
    for i in range(bins // 2, zero + 1):
        start, end = zero - i, min(zero + i + 1, size)
        p = hist[start:end].copy()
        p[0] += below[start]
        p[-1] += below[size] - below[end]
        width = p.size // bins
        bounds = start + width * np.arange(bins + 1)
        merged = below[bounds[1:]] - below[bounds[:-1]]
        merged[-1] += below[end] - below[bounds[-1]]
        kept = (p[:width * bins] != 0).reshape(bins, width).sum(1)
        q = np.zeros(p.size)
        q[:width * bins] = np.repeat(np.trunc(merged / np.maximum(kept, 1)) * (kept > 0), width)
        p_smooth, q_smooth = _smoothed(p), _smoothed(q)
        divergence = (np.inf if p_smooth is None or q_smooth is None
                      else float(np.dot(p_smooth, np.log(p_smooth / q_smooth))))
        if divergence < best:
            best, chosen = divergence, (start, end)
    low, high = edges[chosen[0]], edges[chosen[1]]
    return (histogram[2] if low < histogram[2] else low), (histogram[3] if high > histogram[3] else high)


def _smoothed(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """``counts`` as a distribution with its empty bins at ``eps``, taken evenly off the others (ORT's
    ``smooth_distribution``), normalised; None when every bin is empty."""
    empty = counts == 0
    zeros = int(empty.sum())
    if zeros == counts.size:
        return None
    smooth = np.where(empty, eps, counts - eps * zeros / (counts.size - zeros))
    return smooth / smooth.sum()


def _entropy_ranges(source: Path, feeds: Sequence[dict[str, np.ndarray]], folder: Path) -> Path:
    """A calibration cache (ORT's JSON of tensor ranges) in ``folder`` of the entropy thresholds
    (:func:`entropy_threshold`) of every tensor that ``quantize_static`` quantises, seen on ``feeds``."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        create_calibrator,
        save_tensors_data,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class _Collector(HistogramCollector):  # type: ignore[misc]
        def get_entropy_threshold(self, histogram: Any, num_quantized_bins: int) -> tuple[Any, Any]:
            return entropy_threshold(histogram, num_quantized_bins)

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # NOTE: what quantize_static calibrates
    calibrator = create_calibrator(source, ops, augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"symmetric": False, **_ENTROPY_BINS})
    calibrator.collector = _Collector(method="entropy", symmetric=False, percentile=99.999, scenario="same",
                                      **_ENTROPY_BINS)
    calibrator.collect_data(_reader(feeds))
    cache = folder / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def static_int8(source: Path, target: Path, feeds: Sequence[dict[str, np.ndarray]], *, method: str = "minmax",
                per_channel: bool = True, exclude: Sequence[str] = (), ranges: Path | None = None) -> Path:
    """ONNX Runtime's ``quantize_static`` of the (pre-processed) fp32 file ``source`` into ``target``
    in the format of the module docstring; ``feeds`` are ``{input name: array}`` per calibration batch,
    ``method`` one of :data:`METHODS` (entropy on 2048 histogram bins), ``exclude`` node names kept in
    fp32. ``ranges``: a calibration cache file of ``source`` for ``method``, read if it exists, else
    written, so that quantising the same file again (other ``exclude``) skips calibration. ORT's
    errors propagate."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with quiet(), tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        if method == "entropy" and (ranges is None or not ranges.is_file()):
            entropy = _entropy_ranges(source, feeds, Path(tmp))
            if ranges is not None:
                shutil.move(entropy, ranges)
            ranges = ranges or entropy
        cache = {"calibration_cache_path": str(ranges)} if ranges is not None else {}
        quantize_static(str(source), str(target), _reader(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calibrate, nodes_to_exclude=list(exclude),
                        extra_options={"CalibTensorRangeSymmetric": False}, **cache)
    return target


def timing_int8(source: Path, inputs: tuple[torch.Tensor, ...], folder: Path) -> Path:
    """The int8 file of the fp32 ONNX file ``source`` for timing only, in ``folder``: calibrated on
    ``inputs`` themselves (activation ranges change the numbers, not the kernels that run)."""
    require("onnxruntime", extra="onnx", feature="int8 latency")
    session_inputs = _input_names(source)
    feeds = [{name: x.detach().cpu().numpy() for name, x in zip(session_inputs, inputs)}]
    prepared = preprocess(source, folder / f"{source.stem}.prepared.onnx")
    return static_int8(prepared, folder / f"{source.stem}.int8.onnx", feeds)


def _input_names(path: Path) -> list[str]:
    onnx = require("onnx", extra="onnx", feature="int8 latency")
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in constants]
