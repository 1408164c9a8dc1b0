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
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.errors import require

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
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(model.SerializeToString())
    os.replace(handle.name, path)
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


def static_int8(source: Path, target: Path, feeds: Sequence[dict[str, np.ndarray]], *, method: str = "minmax",
                per_channel: bool = True, exclude: Sequence[str] = ()) -> Path:
    """ONNX Runtime's ``quantize_static`` of the (pre-processed) fp32 file ``source`` into ``target``
    in the format of the module docstring; ``feeds`` are ``{input name: array}`` per calibration batch,
    ``method`` one of :data:`METHODS`, ``exclude`` node names kept in fp32. ORT's errors propagate."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with quiet():
        quantize_static(str(source), str(target), _reader(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calibrate, nodes_to_exclude=list(exclude),
                        extra_options={"CalibTensorRangeSymmetric": False})
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
