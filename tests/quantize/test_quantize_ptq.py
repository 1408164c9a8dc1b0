"""Post-training int8 with ONNX Runtime: static QDQ (three calibration methods), dynamic, the
per-layer fp32 fallback, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from _quantize_models import labelled_by, tiny_cnn, with_outlier
from torch import nn

from prunekit.errors import ConfigError, DataNotFoundError, PrunekitError
from prunekit.measure import evaluate, export_onnx
from prunekit.quantize import evaluate_onnx, quantisable_nodes, quantize_onnx, quantize_within
from prunekit.quantize.calibration import feeds
from prunekit.measure.onnx_int8 import preprocess


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, list, object]:
    root = tmp_path_factory.mktemp("ptq")
    model = tiny_cnn()
    data = labelled_by(model)
    fp32 = preprocess(export_onnx(model, data.tensors[0][:2], root / "fp32.onnx"), root / "prepared.onnx")
    calibration = feeds([data.tensors[0][i:i + 32] for i in range(0, 128, 32)], ["input"], ["tensor(float)"])
    return model, fp32, calibration, data


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_is_int8_and_keeps_predictions(exported, tmp_path: Path, method: str) -> None:
    model, fp32, calibration, data = exported
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calibration=calibration, method=method)
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(int8)
    weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(weights) == 2  # both convolutions store int8 weights
    scales = {t.name: t for t in graph.initializer}
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in {w.name for w in weights}]
    assert all(len(scales[n.input[1]].dims) == 1 and scales[n.input[1]].dims[0] == 8 for n in per_channel)
    accuracy = evaluate_onnx(int8, data)["accuracy"]
    # NOTE: labels are the fp32 model's own argmax, which small changes flip; entropy clips the sparse
    # tails of 128 samples' activations (measured 0.86; 0.96 minmax), as it is meant to.
    assert accuracy >= (0.8 if method == "entropy" else 0.9), accuracy


def test_fp32_onnx_scores_like_pytorch(exported) -> None:
    model, fp32, _, data = exported
    ort, torch_metrics = evaluate_onnx(fp32, data), evaluate(model, data)
    assert ort["accuracy"] == torch_metrics["accuracy"] == 1.0
    assert ort["loss"] == pytest.approx(torch_metrics["loss"], rel=1e-4)


def test_dynamic_quantises_linear_weights(exported, tmp_path: Path) -> None:
    _, fp32, _, data = exported
    int8 = quantize_onnx(fp32, tmp_path / "dyn.onnx", dynamic=True)
    assert "DynamicQuantizeLinear" in _ops(int8) or "MatMulInteger" in _ops(int8)
    assert "Conv" in _ops(int8)  # convolutions stay fp32 in dynamic mode
    assert evaluate_onnx(int8, data)["accuracy"] >= 0.9


def test_errors_are_one_line(exported, tmp_path: Path) -> None:
    _, fp32, calibration, _ = exported
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'; expected one of minmax, entropy, percentile"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calibration=calibration, method="kl")
    with pytest.raises(ConfigError, match="calibration data is empty"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calibration=[])
    with pytest.raises(ConfigError, match="calibration data is empty"):
        feeds([], ["input"], ["tensor(float)"])
    with pytest.raises(ConfigError, match=r"exclude names \['nope'\]"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calibration=calibration, exclude=["nope"])
    with pytest.raises(DataNotFoundError, match="does not exist"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", calibration=calibration)
    assert not (tmp_path / "x.onnx").exists()


def test_a_model_that_does_not_export_fails_in_one_line(tmp_path: Path) -> None:
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * int(x.abs().sum().item() > 1)  # branches on a value: no graph to trace

    with pytest.raises(PrunekitError, match="ONNX export of Unexportable failed"):
        export_onnx(Unexportable(), torch.randn(2, 3), tmp_path / "u.onnx")


def test_fallback_keeps_the_damaging_layer_fp32(tmp_path: Path) -> None:
    model = with_outlier(tiny_cnn())
    data = labelled_by(model, 256)
    fp32 = preprocess(export_onnx(model, data.tensors[0][:2], tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    calibration = feeds([data.tensors[0][:128]], ["input"], ["tensor(float)"])

    def score(path: Path) -> float:
        return evaluate_onnx(path, data)["accuracy"]

    everything = quantize_within(fp32, tmp_path / "all.onnx", score=score, fp32_metric=1.0, calibration=calibration)
    assert everything.excluded == () and everything.metric < 0.95  # the outlier channel hurts int8
    chosen = quantize_within(fp32, tmp_path / "within.onnx", score=score, fp32_metric=1.0,
                             max_metric_drop=0.02, calibration=calibration)
    assert set(chosen.damage) == set(quantisable_nodes(fp32))
    assert 1 <= len(chosen.excluded) < len(chosen.damage)
    assert chosen.metric >= 0.98 and chosen.metric == score(tmp_path / "within.onnx")
    worst = max(chosen.damage, key=chosen.damage.__getitem__)
    assert worst in chosen.excluded
    with pytest.raises(ConfigError, match="max_metric_drop must be >= 0"):
        quantize_within(fp32, tmp_path / "bad.onnx", score=score, fp32_metric=1.0, max_metric_drop=-1,
                        calibration=calibration)


def test_strip_metadata_drops_debugging_records_and_keeps_outputs(tmp_path: Path) -> None:
    import onnxruntime as ort

    from prunekit.measure.onnx_int8 import strip_metadata

    model = tiny_cnn()
    x = torch.randn(3, 1, 8, 8)
    path = export_onnx(model, x[:1], tmp_path / "fp32.onnx")
    raw = onnx.load(str(path))
    onnx.helper.set_model_props(raw, {"labels": "a,b"})
    raw.graph.metadata_props.add(key="trace", value="x" * 1000)
    raw.graph.value_info.extend(onnx.shape_inference.infer_shapes(raw).graph.value_info)
    raw.opset_import.add(domain="com.example.unused", version=1)
    onnx.save(raw, str(path))
    before = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    size = path.stat().st_size
    strip_metadata(path)
    stripped = onnx.load(str(path))
    assert path.stat().st_size < size - 1000
    assert not stripped.graph.metadata_props and not stripped.graph.value_info
    assert "com.example.unused" not in {o.domain for o in stripped.opset_import}
    assert {p.key: p.value for p in stripped.metadata_props}["labels"] == "a,b"  # the model's own record stays
    assert [n.name for n in stripped.graph.node] == [n.name for n in raw.graph.node]
    after = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert (before == after).all()


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_fallback_calibrates_once_for_all_its_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     method: str) -> None:
    import sys

    import onnxruntime.quantization.calibrate as calibrate

    ort_quantize = sys.modules["onnxruntime.quantization.quantize"]  # NOTE: the package's name is a function

    model = with_outlier(tiny_cnn())
    data = labelled_by(model, 256)
    fp32 = preprocess(export_onnx(model, data.tensors[0][:2], tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    calibration = feeds([data.tensors[0][:128]], ["input"], ["tensor(float)"])
    calls = []

    def counted(original):
        def create(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)
        return create

    monkeypatch.setattr(ort_quantize, "create_calibrator", counted(ort_quantize.create_calibrator))
    monkeypatch.setattr(calibrate, "create_calibrator", counted(calibrate.create_calibrator))
    chosen = quantize_within(fp32, tmp_path / "within.onnx", score=lambda p: evaluate_onnx(p, data)["accuracy"],
                             fp32_metric=1.0, max_metric_drop=0.02, calibration=calibration, method=method)
    assert chosen.tries > 2 and len(calls) == 1
    alone = quantize_onnx(fp32, tmp_path / "alone.onnx", calibration=calibration, method=method,
                          exclude=chosen.excluded, preprocessed=True)
    assert alone.read_bytes() == (tmp_path / "within.onnx").read_bytes()  # the cached ranges are the same


def test_fallback_damage_counts_every_output(tmp_path: Path) -> None:
    from prunekit.quantize.fallback import _output_error

    class Two(nn.Module):
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.shift = shift

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 1.0, x * 2.0 + self.shift

    x = torch.randn(4, 3)
    reference = export_onnx(Two(0.0), x, tmp_path / "reference.onnx")
    error = _output_error(reference, [{onnx.load(str(reference)).graph.input[0].name: x.numpy()}])
    assert error(reference) == 0.0
    assert error(export_onnx(Two(0.5), x, tmp_path / "second_output_off.onnx")) > 0.01
