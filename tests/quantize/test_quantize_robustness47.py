"""Regression tests of quantisation robustness: a missed metric budget is flagged, activation damage
is measured, stale outputs go, dynamic int8 with nothing to quantise is refused, image Loaders take
static torch int8, the torch record names what stayed fp32, file modes, CLI wording, a quiet QAT fallback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from _quantize_models import labelled_by, tiny_cnn, with_outlier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data import DataSplits, Loaders
from prunekit.errors import ConfigError
from prunekit.measure import export_onnx
from prunekit.measure.onnx_int8 import preprocess, strip_metadata
from prunekit.quantize import Fallback, evaluate_onnx, quantisable_nodes, quantize_onnx, quantize_within
from prunekit.quantize.calibration import feeds
from prunekit.workflows import Measure
from prunekit.workflows.outputs import staged_output


def _prepared(model: nn.Module, x: torch.Tensor, folder: Path) -> Path:
    return preprocess(export_onnx(model, x[:2], folder / "fp32.onnx"), folder / "prepared.onnx")


def test_quantize_within_flags_a_missed_budget(tmp_path: Path) -> None:
    model = with_outlier(tiny_cnn())
    data = labelled_by(model, 64)
    fp32 = _prepared(model, data.tensors[0], tmp_path)
    calibration = feeds([data.tensors[0]], ["input"], ["tensor(float)"])
    missed = quantize_within(fp32, tmp_path / "q.onnx", score=lambda p: 0.5, fp32_metric=1.0, max_metric_drop=0.01,
                             calibration=calibration)
    assert missed.budget_met is False and missed.metric == 0.5
    met = quantize_within(fp32, tmp_path / "q2.onnx", score=lambda p: 1.0, fp32_metric=1.0, max_metric_drop=0.01,
                          calibration=calibration)
    assert met.budget_met is True


def _splits(x: torch.Tensor, y: torch.Tensor) -> DataSplits:
    part = TensorDataset(x, y)
    return DataSplits(name="tiny", train=part, val=part, test=part, num_classes=4, input_shape=tuple(x.shape[1:]))


def test_quantize_model_warns_and_records_a_missed_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunekit.workflows.quantize as workflow

    model = tiny_cnn()
    data = labelled_by(model, 64)

    def missed(source, target, **kwargs):  # the real search, reporting a budget it could not meet
        quantize_onnx(source, target, calibration=kwargs["calibration"], preprocessed=True)
        return Fallback(path=Path(target), metric=0.25, excluded=("a",), budget_met=False)

    monkeypatch.setattr(workflow, "quantize_within", missed)
    with pytest.warns(UserWarning, match=r"misses max_metric_drop 0.01: .*accuracy 0.25 against fp32 1 .*Raise"):
        record = workflow.quantize_model(model, _splits(*data.tensors), tmp_path, task=None, max_metric_drop=0.01,
                                         calibration_batches=1, measure=Measure(max_eval_batches=1))
    assert record["budget_met"] is False and record["val"]["int8"] == 0.25


def test_fallback_measures_the_damage_of_an_activation_between_two_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 10)).eval()
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=1.4)
            nn.init.zeros_(m.bias)
    with torch.no_grad():  # the same function, with channel 0 between layers 2 and 3 scaled 1e4
        net[2].weight[0] *= 1e4
        net[2].bias[0] = 50.0
        net[4].weight[:, 0] /= 1e4
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labelled = TensorDataset(x[256:], net(x[256:]).argmax(1))
    fp32 = _prepared(net, x, tmp_path)
    calibration = feeds([x[i:i + 64] for i in range(0, 256, 64)], ["input"], ["tensor(float)"])
    chosen = quantize_within(fp32, tmp_path / "q.onnx", score=lambda p: evaluate_onnx(p, labelled)["accuracy"],
                             fp32_metric=1.0, max_metric_drop=0.05, calibration=calibration)
    around = tuple(quantisable_nodes(fp32)[1:3])
    assert chosen.budget_met is True and chosen.excluded == around
    worst = max(chosen.tensor_damage, key=chosen.tensor_damage.__getitem__)
    assert chosen.tensor_nodes[worst] == around and chosen.tensor_damage[worst] > 10 * max(chosen.damage.values())


def test_staged_output_removes_outputs_this_run_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("earlier")
    (out / "keep.txt").write_text("user's")
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, outputs={"model.onnx", "model"}) as stage:
            (stage / "model").mkdir()
            raise KeyboardInterrupt
    assert (out / "model.onnx").read_text() == "earlier" and not (out / "model").exists()
    with staged_output(out, outputs={"model.onnx", "model"}) as stage:
        (stage / "model").mkdir()
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "model"]


def test_onnx_dynamic_without_matmul_or_gemm_is_refused(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    fp32 = export_onnx(net, torch.randn(2, 1, 8, 8), tmp_path / "conv.onnx")
    with pytest.raises(ConfigError, match="no MatMul or Gemm layer .* dynamic int8 to quantise"):
        quantize_onnx(fp32, tmp_path / "q.onnx", dynamic=True)
    assert not (tmp_path / "q.onnx").exists()


def _loaders(x: torch.Tensor, y: torch.Tensor) -> Loaders:
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return Loaders(name="mine", train=loader, val=loader, test=loader, task="classification")


def test_static_torch_int8_takes_image_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunekit.workflows.quantize as workflow
    from prunekit.quantize.torch_int8 import TorchInt8

    seen = {}

    def fake(net, example, *, dynamic, calibration, compile):
        seen.update(example=example, calibration=calibration)
        return TorchInt8(model=net, record={"kind": "quantize", "backend": "torch"})

    monkeypatch.setattr(workflow, "quantize_torch", fake)
    model = tiny_cnn()
    data = labelled_by(model, 32)
    int8 = workflow.quantize_model_torch(model, _loaders(*data.tensors), task=None, compile=True,
                                         calibration_batches=2, measure=Measure(max_eval_batches=1))
    assert [tuple(b.shape) for b in seen["calibration"]] == [(16, 1, 8, 8)] * 2
    assert int8.record["val"] == {"fp32": 1.0, "int8": 1.0}
    tokens = _loaders(torch.randint(0, 9, (32, 6)), torch.randint(0, 4, (32,)))
    with pytest.raises(ConfigError, match=r"image models .* int64 tensor of shape \(1, 6\)"):
        workflow.quantize_model_torch(nn.Sequential(nn.Embedding(9, 4), nn.Flatten(), nn.Linear(24, 4)), tokens,
                                      task=None, compile=True)


def test_torch_dynamic_record_names_the_attention_weights_left_fp32() -> None:
    pytest.importorskip("torchao")
    from prunekit.quantize import quantize_torch

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    record = quantize_torch(Attn().eval(), torch.randn(2, 5, 16), dynamic=True).record
    assert record["quantised"] == ["head"]
    assert sorted(record["kept_fp32"]) == ["attn.in_proj_weight", "attn.out_proj.weight"]
    assert "except" in record["layers"]


def test_stripped_onnx_file_has_the_users_umask(tmp_path: Path) -> None:
    path = export_onnx(nn.Linear(3, 2).eval(), torch.randn(2, 3), tmp_path / "m.onnx")
    old = os.umask(0o022)
    try:
        strip_metadata(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_cli_torch_backend_errors_name_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.cli import main

    assert main(["quantize", "--model", str(tmp_path / "none"), "--data", str(tmp_path / "none.npz"), "--backend",
                 "torch", "--method", "entropy", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "Pass --method minmax, or --backend onnxruntime" in err and "method='minmax'" not in err


def test_qat_fallback_does_not_print_the_traced_graph(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchao")
    from prunekit.quantize import qat

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.conv(x))
            if y.mean() > 0.3:  # data-dependent control flow: torch.export cannot capture it
                y = y * 2
            return self.head(y.mean((2, 3)))

    result = qat(DataDependent(), torch.randn(2, 1, 8, 8), lambda m, callbacks: None)
    assert result.flow == "weight-fake-quant"
    assert "def forward" not in capfd.readouterr().err
