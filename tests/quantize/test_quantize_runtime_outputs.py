"""OnnxModel returns every output in the structure the PyTorch model returns (a tuple, a dict), so a
task's metric reads the ONNX file as it reads the model; what cannot be rebuilt is a one-line error."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data import Loaders
from prunekit.errors import DataError
from prunekit.measure import export_onnx
from prunekit.quantize import OnnxModel
from prunekit.tasks import Custom
from prunekit.workflows import Measure
from prunekit.workflows.quantize import quantize_model


class TwoHeads(nn.Module):
    """``(aux logits [B, 3], value [B, 1])``, or the same as a dict with ``as_dict``."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.body, self.aux, self.value = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> Any:
        z = torch.relu(self.body(x))
        aux, value = self.aux(z), 10.0 + self.value(z)  # NOTE: the two heads differ in scale
        return {"value": value, "aux": aux} if self.as_dict else (aux, value)


def _model(as_dict: bool = False) -> TwoHeads:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoHeads(as_dict).eval()


def _x(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_outputs_come_back_in_the_models_structure(tmp_path: Path, as_dict: bool) -> None:
    model, x = _model(as_dict), _x()
    got = OnnxModel(export_onnx(model, x[:2], tmp_path / "m.onnx"))(x)
    with torch.no_grad():
        want = model(x)
    assert type(got) is type(want)
    if as_dict:
        assert list(got) == ["value", "aux"]
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
    else:
        assert len(got) == 2
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _with_record(path: Path, record: str | None) -> Path:
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != "prunekit.outputs"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if record is not None:
        onnx.helper.set_model_props(model, {"prunekit.outputs": record})
    onnx.save(model, str(path))
    return path


def test_a_file_without_a_record_gives_its_outputs_as_a_tuple(tmp_path: Path) -> None:
    model, x = _model(as_dict=True), _x()
    file = _with_record(export_onnx(model, x[:2], tmp_path / "m.onnx"), None)
    got = OnnxModel(file)(x)
    assert isinstance(got, tuple) and [tuple(t.shape) for t in got] == [(5, 1), (5, 3)]


def test_outputs_that_cannot_be_rebuilt_are_one_line_errors(tmp_path: Path) -> None:
    file = export_onnx(_model(), _x()[:2], tmp_path / "m.onnx")
    _with_record(file, "")
    with pytest.raises(DataError) as unknown:
        OnnxModel(file)
    assert str(unknown.value) == (
        f"OnnxModel: cannot rebuild the 2 outputs of '{file}' into what the model returned (a non-tensor "
        f"output or an unnamed container was not recorded). Fix: return a tensor, tuple or dict of tensors "
        f"from forward, or import the module defining the output type first.")
    _with_record(file, '[1, {"type": "builtins.tuple", "context": "null", "children_spec": ['
                       '{"type": null, "context": null, "children_spec": []}]}]')
    with pytest.raises(DataError) as count:
        OnnxModel(file)
    assert str(count.value) == (
        f"OnnxModel: '{file}' has 2 outputs; expected 1 from the structure recorded at export. Fix: "
        f"export the model again with prunekit.measure.export_onnx.")


def _value_mse(model: nn.Module, batches: Iterable[Any]) -> float:
    """Squared error of the second output (what a ``(aux, value)`` model is judged by)."""
    total = count = 0.0
    for x, y in batches:
        total += float(((model(x)[1] - y) ** 2).sum())
        count += y.numel()
    return total / count


def test_the_quantize_workflow_scores_the_fp32_file_as_pytorch_does(tmp_path: Path) -> None:
    model, x = _model(), _x(32)
    with torch.no_grad():
        y = model(x)[1] + 0.1
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    splits = Loaders("pairs", train=loader, val=loader, test=loader)
    task = Custom(lambda m, b: ((m(b[0])[1] - b[1]) ** 2).mean(), _value_mse, metric="mse",
                  higher_is_better=False)
    record = quantize_model(model, splits, tmp_path, task=task, dynamic=True,
                            measure=Measure(batch_sizes=(1,), min_time_s=0.0, threads=1))
    assert record["val"]["fp32"] == pytest.approx(task.evaluate(model, loader)["mse"], rel=1e-4)
    assert record["val"]["fp32"] == pytest.approx(0.01, rel=1e-3)
