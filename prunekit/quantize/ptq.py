"""Post-training int8 of an fp32 ONNX file with ONNX Runtime's quantisation tools.

Static: QDQ format, unsigned int8 activations and signed int8 weights (the pair x86 VNNI runs
fastest), weights per output channel, activation ranges from calibration batches by ``method``
(minmax, entropy or percentile). Dynamic: weights int8, activation ranges computed per call; meant
for transformers' linear layers (MatMul/Gemm), where activations vary too much to fix one range.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from prunekit.errors import ConfigError, DataNotFoundError, PrunekitError, require
from prunekit.quantize.calibration import reader

__all__ = ["METHODS", "QUANTISED_OPS", "quantize_onnx", "quantisable_nodes", "preprocess", "strip_metadata"]

METHODS = ("minmax", "entropy", "percentile")
QUANTISED_OPS = ("Conv", "Gemm", "MatMul")  # NOTE: the ops whose weights int8 stores; others follow them.
_DYNAMIC_OPS = ("MatMul", "Gemm")


def check_method(method: str) -> str:
    """``method`` if known, else a one-line error listing the known ones."""
    if method not in METHODS:
        raise ConfigError(f"quantize: unknown calibration method '{method}'; expected one of "
                          f"{', '.join(METHODS)}. Pass e.g. method='minmax'.")
    return method


def quantisable_nodes(path: str | os.PathLike[str], *, dynamic: bool = False) -> list[str]:
    """Names of the nodes of the fp32 ONNX file at ``path`` that int8 quantises (Conv, Gemm, MatMul
    with a constant weight), in graph order: the candidates for staying in fp32."""
    onnx = require("onnx", extra="onnx", feature="int8 quantisation")
    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    ops = _DYNAMIC_OPS if dynamic else QUANTISED_OPS
    return [n.name for n in model.graph.node
            if n.op_type in ops and len(n.input) > 1 and n.input[1] in constants]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
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
        with _quiet():
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:  # NOTE: optional step; ORT raises many types on graphs it cannot optimise.
        return source
    return strip_metadata(target) if target.is_file() else source


def quantize_onnx(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                  calibration: Sequence[dict[str, np.ndarray]] = (), method: str = "minmax",
                  per_channel: bool = True, dynamic: bool = False,
                  exclude: Sequence[str] = (), preprocessed: bool = False) -> Path:
    """Quantise the fp32 ONNX file ``source`` to int8 at ``target`` and return ``target``.

    Args:
        calibration: the calibration feeds (``{input name: array}`` per batch, see
            :func:`prunekit.quantize.calibration.feeds`); required unless ``dynamic``.
        method: minmax, entropy or percentile (99.999th) activation ranges; static only.
        per_channel: one weight scale per output channel (else one per tensor).
        dynamic: ``quantize_dynamic`` of MatMul/Gemm weights instead of static QDQ.
        exclude: node names (:func:`quantisable_nodes` of the pre-processed file) kept in fp32.
        preprocessed: ``source`` already went through :func:`preprocess` (skip it here).
    The file appears only when complete; ``source`` is not changed.
    """
    require("onnxruntime", extra="onnx", feature="int8 quantisation")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    source, target = Path(source), Path(target)
    if not source.is_file():
        raise DataNotFoundError(f"quantize: fp32 ONNX file '{source}' does not exist. Export the model first.")
    check_method(method)
    if not dynamic and not calibration:
        raise ConfigError("quantize: the calibration data is empty; static int8 needs batches to observe "
                          "activation ranges. Pass calibration batches, or dynamic=True.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        prepared = source if preprocessed else preprocess(source, Path(tmp) / "prepared.onnx")
        unknown = sorted(set(exclude) - set(_all_nodes(prepared)))
        if unknown:
            raise ConfigError(f"quantize: exclude names {unknown}, which are not nodes of '{source.name}'. "
                              f"Pass names from prunekit.quantize.quantisable_nodes of the pre-processed file.")
        file = Path(tmp) / target.name
        try:
            with _quiet():
                if dynamic:
                    quantize_dynamic(str(prepared), str(file), weight_type=QuantType.QInt8,
                                     per_channel=per_channel, op_types_to_quantize=list(_DYNAMIC_OPS),
                                     nodes_to_exclude=list(exclude))
                else:
                    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                 "percentile": CalibrationMethod.Percentile}[method]
                    quantize_static(str(prepared), str(file), reader(calibration),
                                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=calibrate, nodes_to_exclude=list(exclude),
                                    extra_options={"CalibTensorRangeSymmetric": False})
        except PrunekitError:
            raise
        except Exception as exc:  # NOTE: ORT raises many types; name the file and the cause.
            raise PrunekitError(f"quantize: ONNX Runtime could not quantise '{source.name}' "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}). "
                                f"Try --dynamic, or check that the fp32 file runs in ONNX Runtime.") from exc
        strip_metadata(file)
        os.replace(file, target)
    return target


def _all_nodes(path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
