"""The three static calibration methods calibrate differently: entropy and percentile clip a long
tail that minmax covers (ONNX Runtime's defaults gave entropy one candidate, minmax's range)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import torch
from _quantize_models import tiny_cnn

from prunekit.measure import export_onnx
from prunekit.measure.onnx_int8 import entropy_threshold, preprocess
from prunekit.quantize import quantize_onnx
from prunekit.quantize.calibration import feeds


def _activation_scales(path: Path) -> dict[str, float]:
    """The scale of every per-tensor (activation) QuantizeLinear of an int8 file."""
    model = onnx.load(str(path))
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(constants[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and constants[n.input[1]].size == 1}


def test_entropy_and_percentile_clip_a_long_tail(tmp_path: Path) -> None:
    model = tiny_cnn()
    fp32 = preprocess(export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    batches = torch.randn(4, 512, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batches[0, 0, 0, 0, 0] = 100.0  # NOTE: one outlier in 131072 values: past the 99.999th percentile
    calibration = feeds(list(batches), ["input"], ["tensor(float)"])
    files = {m: quantize_onnx(fp32, tmp_path / f"{m}.onnx", calibration=calibration, method=m, preprocessed=True)
             for m in ("minmax", "entropy", "percentile")}
    scales = {m: _activation_scales(f) for m, f in files.items()}
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    for method in ("entropy", "percentile"):
        assert files[method].read_bytes() != files["minmax"].read_bytes()
        narrower = [t for t in scales["minmax"] if scales[method][t] < 0.9 * scales["minmax"][t]]
        assert narrower, (method, scales[method], scales["minmax"])  # the outlier's effects are clipped
    assert scales["entropy"]["input"] < scales["minmax"]["input"] / 4  # the outlier itself, by entropy


def test_entropy_threshold_is_onnxruntimes() -> None:
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(2)
    values = np.concatenate([rng.standard_t(4, 20000), rng.normal(3, 1, 1000)]).astype(np.float32)
    collector = HistogramCollector(method="entropy", symmetric=False, num_bins=2048, num_quantized_bins=128,
                                   percentile=99.999, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"x": [values]})
    histogram = collector.histogram_dict["x"]
    low, high = entropy_threshold(histogram, 128)
    assert (low, high) == collector.get_entropy_threshold(histogram, 128)
    assert values.min() < low < 0 < high < values.max()  # the tail is clipped
    assert low.dtype == high.dtype == np.float32
