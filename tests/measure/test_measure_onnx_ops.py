"""op_times: ONNX Runtime's kernel time per operator type of an ONNX file, per run; an fp32 file runs
its convolutions, the int8 file of the same model runs quantised convolutions and adds, and bad
arguments get one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import export_onnx, op_times
from prunekit.measure.onnx_int8 import timing_int8

pytest.importorskip("onnxruntime")


class Residual(nn.Module):
    """Two convolutions and a residual add: two conv kernels and one add per run."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(torch.relu(self.a(x))) + x)


X = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ops")
    fp32 = export_onnx(Residual().eval(), X, root / "model.onnx")
    return fp32, timing_int8(fp32, (X,), root)


def test_fp32_time_is_in_its_convolutions(files: tuple[Path, Path]) -> None:
    ops = op_times(files[0], X, batch_size=4, runs=5, warmup=1)
    convs = sum(t.nodes for t in ops if t.op_type in ("Conv", "FusedConv"))
    assert convs == 2, ops
    assert all(t.ms > 0 for t in ops) and [t.ms for t in ops] == sorted((t.ms for t in ops), reverse=True)


def test_int8_file_runs_quantised_convolutions(files: tuple[Path, Path]) -> None:
    ops = {t.op_type: t for t in op_times(files[1], X, runs=5, warmup=1)}
    assert ops["QLinearConv"].nodes == 2 and "Conv" not in ops, ops


def test_bad_arguments_say_what_to_pass(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="runs and batch_size must be >= 1"):
        op_times(files[0], X, runs=0)
