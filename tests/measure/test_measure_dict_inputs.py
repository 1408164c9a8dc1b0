"""A dict whose keys name forward's parameters (a tokenizer's output) is passed by name to every
measurement; any other dict is one input, and what needs tensors (ONNX) names its values' types."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import count_macs, macs_by_module, measure_latency, profile
from prunekit.measure.macs import as_inputs, macs_terms


class Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(4, 16)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.a(x) + (0 if y is None else self.b(y))


def _named(n: int = 2) -> dict[str, torch.Tensor]:
    return {"y": torch.randn(n, 4), "x": torch.randn(n, 8)}  # NOTE: not in forward's order


def test_a_dict_naming_forwards_parameters_is_counted_by_name() -> None:
    expected = 2 * (8 * 16 + 4 * 16)
    assert count_macs(Named(), _named()) == expected
    assert macs_by_module(Named(), _named()) == {"": expected, "a": 2 * 8 * 16, "b": 2 * 4 * 16}
    assert macs_terms(Named(), _named()).macs == expected


def test_a_dict_naming_forwards_parameters_is_timed_and_profiled() -> None:
    model = Named().eval()
    assert measure_latency(model, _named(1), batch_size=3, warmup=0, repeats=1).median_ms > 0
    result = profile(model, _named(1), backends=("torch",), batch_sizes=(1,), warmup=0, repeats=1)
    assert result.macs == 8 * 16 + 4 * 16 and result.input_shape == (1, 8)


def test_a_dict_naming_forwards_parameters_is_exported_by_name() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = Named().eval()
    x = {"x": torch.randn(1, 8)}
    assert measure_latency(model, x, backend="onnxruntime", warmup=0, repeats=1).median_ms > 0


class Batch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(batch["image"])


def test_a_batch_dict_is_one_input_and_onnx_names_its_values() -> None:
    batch = {"image": torch.randn(2, 8), "label": torch.tensor([0, 1])}
    assert count_macs(Batch(), batch) == 2 * 8 * 3
    assert measure_latency(Batch(), batch, warmup=0, repeats=1).median_ms > 0
    with pytest.raises(ConfigError, match=r"dict \{'image': 'Tensor', 'label': 'Tensor'\}.*as a tuple"):
        measure_latency(Batch(), batch, backend="onnxruntime")
    with pytest.raises(ConfigError, match=r"dict \{'image': 'Tensor', 'label': 'Tensor'\}"):
        as_inputs(batch)
    result = profile(Batch(), batch, batch_sizes=(1,), warmup=0, repeats=1)  # NOTE: onnxruntime noted, not raised
    assert result.macs == 8 * 3 and result.input_shape == (1, 8)
    assert any(note.startswith("onnxruntime latency not measured: this needs tensor inputs") for note in result.notes)


def test_an_input_left_at_its_default_is_no_onnx_input() -> None:
    # NOTE: forward's `mask` sits between x and y and is left at None: the ONNX file takes x and y only
    result = measure_latency(Named(), _named(), backend="onnxruntime", min_time_s=0.0)
    assert result.median_ms > 0
