"""Post-training int8 of an fp32 ONNX file with ONNX Runtime's quantisation tools.

Static: the QDQ format of :mod:`prunekit.measure.onnx_int8` (unsigned int8 activations, signed int8
weights per output channel), activation ranges from calibration batches by ``method`` (minmax,
entropy or percentile). Dynamic: weights int8, activation ranges computed per call; meant
for transformers' linear layers (MatMul/Gemm), where activations vary too much to fix one range.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prunekit.errors import ConfigError, DataNotFoundError, PrunekitError, require
from prunekit.measure.onnx_int8 import METHODS, preprocess, quiet, static_int8, strip_metadata

__all__ = ["METHODS", "QUANTISED_OPS", "quantize_onnx", "quantisable_nodes"]
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


def quantize_onnx(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                  calibration: Sequence[dict[str, np.ndarray]] = (), method: str = "minmax",
                  per_channel: bool = True, dynamic: bool = False,
                  exclude: Sequence[str] = (), preprocessed: bool = False,
                  ranges: str | os.PathLike[str] | None = None) -> Path:
    """Quantise the fp32 ONNX file ``source`` to int8 at ``target`` and return ``target``.

    Args:
        calibration: the calibration feeds (``{input name: array}`` per batch, see
            :func:`prunekit.quantize.calibration.feeds`); required unless ``dynamic``.
        method: minmax, entropy or percentile (99.999th) activation ranges; static only.
        per_channel: one weight scale per output channel (else one per tensor).
        dynamic: ``quantize_dynamic`` of MatMul/Gemm weights instead of static QDQ.
        exclude: node names (:func:`quantisable_nodes` of the pre-processed file) kept in fp32.
        preprocessed: ``source`` already went through :func:`preprocess` (skip it here).
        ranges: a calibration cache file (static only): read if it exists, else written; pass the
            same file when quantising the same pre-processed ``source`` again, to calibrate once.
    The file appears only when complete; ``source`` is not changed.
    """
    require("onnxruntime", extra="onnx", feature="int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic

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
        if dynamic and not quantisable_nodes(prepared, dynamic=True):
            # NOTE: quantize_dynamic would write an fp32 file under an int8 name.
            raise ConfigError("quantize: the model has no MatMul or Gemm layer with constant weights for dynamic "
                              "int8 to quantise (ONNX Runtime); nothing would be int8. Use static int8 instead "
                              "(drop --dynamic; dynamic=False).")
        file = Path(tmp) / target.name
        try:
            if dynamic:
                with quiet():
                    quantize_dynamic(str(prepared), str(file), weight_type=QuantType.QInt8,
                                     per_channel=per_channel, op_types_to_quantize=list(_DYNAMIC_OPS),
                                     nodes_to_exclude=list(exclude))
            else:
                static_int8(prepared, file, calibration, method=method, per_channel=per_channel, exclude=exclude,
                            ranges=None if ranges is None else Path(ranges))
        except PrunekitError:
            raise
        except Exception as exc:  # NOTE: ORT raises many types; name the file and the cause.
            raise _failure(source, exc) from exc
        strip_metadata(file)
        os.replace(file, target)
    return target


def _failure(source: Path, exc: Exception) -> PrunekitError:
    """ORT's error in one line, with advice that fits it: its reason whole (an input shape error lists
    each wrong index on a line of its own), without its status prefix and generic closing advice."""
    reason = " ".join(str(exc).split())
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : | ?Please fix either the inputs/outputs or the model\.",
                    "", reason)
    if re.search(r"(invalid dimensions|invalid rank) for input", reason, flags=re.IGNORECASE):
        advice = ("The calibration batches do not have the shape the fp32 file takes: pass batches shaped "
                  "like the model's input (an image folder loaded at the size the model was trained at: "
                  "--image-size H[xW]).")
    else:
        advice = "Try --dynamic, or check that the fp32 file runs in ONNX Runtime."
    return PrunekitError(f"quantize: ONNX Runtime could not quantise '{source.name}' "
                         f"({type(exc).__name__}: {reason[:500]}). {advice}")


def _all_nodes(path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
