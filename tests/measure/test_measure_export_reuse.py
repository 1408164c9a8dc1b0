"""A workflow's profiles and A/A controls export each unchanged model to ONNX once
(``exports_reused`` with ``exports_kept``); a changed model is exported again."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.measure import onnx as onnx_module
from prunekit.measure.latency import aa_control, exports_kept, exports_reused, measure_latencies

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    real = onnx_module.export_onnx

    def counted(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        made.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx_module, "export_onnx", counted)
    return made


def _time(model: nn.Module, x: torch.Tensor) -> float:
    return measure_latencies(model, x, backend="onnxruntime", min_time_s=0, repeats=3)[0].median_ms


def test_an_unchanged_model_is_exported_once_and_a_changed_one_again(exports: list[str]) -> None:
    model, x = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval(), torch.randn(1, 8)
    with exports_reused():
        with exports_kept():
            assert _time(model, x) > 0
        assert _time(model, x) > 0
        aa_control(model, nn.Linear(8, 2).eval(), x, backend="onnxruntime", rounds=1, min_time_s=0)
        assert exports == ["Sequential", "Linear"]  # NOTE: the other model was made outside exports_kept
        with torch.no_grad():
            model[0].weight.add_(1.0)  # NOTE: changed in place: its version moves
        with exports_kept():
            _time(model, x)
        assert exports == ["Sequential", "Linear", "Sequential"]
        _time(model, torch.randn(1, 8))  # NOTE: the same shapes: the same export
        assert len(exports) == 3


def test_outside_the_scope_every_timing_exports(exports: list[str]) -> None:
    model, x = nn.Linear(4, 2).eval(), torch.randn(1, 4)
    with exports_kept():
        _time(model, x)
    _time(model, x)
    with exports_reused():
        _time(model, x)  # NOTE: not kept: a candidate timed while choosing widths
        _time(model, x)
    assert len(exports) == 4
