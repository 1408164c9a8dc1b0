"""round_to="auto" times layers on the backend the user names (``PrunerOptions.backend``, ``prunekit
prune --backend``; ONNX Runtime times the whole model instead, tests/structured/test_rounding_model.py):
with a fake timer under which rounding pays for a different group on each
backend, the backend decides which group is rounded, and readings are cached per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from prunekit.structured import rounding
from prunekit.structured.pruner import StructuredPruner

from _two_conv import X, TwoConv


# NOTE: the group whose writer has this many channels gets faster when rounded, on that backend only.
FASTER_WHEN_ROUNDED = {"torch": 32, "torch-fused": 64}


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Replace the timer: [gain, A/A spread] from the backend and the group's writing layer; log each call."""
    monkeypatch.setenv("PRUNEKIT_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []

    def fake(self: rounding.LayerTimings, layers: Any, exact: int, rounded: int) -> list[float]:
        calls.append(self.backend)
        writer = next(layer for layer in layers if layer.writes)
        return [0.3 if writer.out_channels == FASTER_WHEN_ROUNDED[self.backend] else 0.0, 0.01]
    monkeypatch.setattr(rounding.LayerTimings, "_measure", fake)
    return calls


def _rounded(backend: str) -> dict[str, int]:
    torch.manual_seed(0)
    model = TwoConv()
    pruner = StructuredPruner({"macs": 0.5}, options={"backend": backend}).fit(model, X)
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5
    return dict(pruner.plan_.meta.get("rounded", {}))


def test_the_backend_decides_which_groups_are_rounded(timed: list[str]) -> None:
    assert _rounded("torch") == {"conv1.weight:0": 24}
    assert _rounded("torch-fused") == {"conv2.weight:0": 48}
    assert set(timed) == {"torch", "torch-fused"}


def test_readings_are_cached_per_backend(timed: list[str], tmp_path: Path) -> None:
    _rounded("torch")
    first = len(timed)
    assert first > 0 and (tmp_path / "cache" / "rounding.json").is_file()
    _rounded("torch")  # NOTE: a second fit on the same backend times nothing
    assert len(timed) == first
    _rounded("torch-fused")  # NOTE: another backend is timed afresh
    assert len(timed) > first and set(timed[first:]) == {"torch-fused"}


def test_prune_cli_passes_the_backend_to_the_pruner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    import prunekit.workflows.prune as workflow
    from prunekit.cli import main
    from prunekit.cli.prune import BACKENDS, ROUNDING_BACKENDS
    from prunekit.errors import ConfigError
    from prunekit.measure.latency import BACKENDS as MEASURED
    from prunekit.structured.model_timing import MODEL_BACKENDS

    assert BACKENDS == MEASURED and ROUNDING_BACKENDS == MODEL_BACKENDS
    stages: list[dict[str, Any]] = []

    def fake(model: str, data: str, *, stage: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        stages.append(stage)
        StructuredPruner(**stage).validate_params()
        raise ConfigError("stop here")
    monkeypatch.setattr(workflow, "prune", fake)
    base = ["prune", "--model", "simple_cnn", "--target-macs", "0.5"]
    assert main([*base, "--backend", "onnxruntime", "--out", str(tmp_path / "a")]) == 2
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    assert main([*base, "--backend", "onnxruntime-int8", "--out", str(tmp_path / "d")]) == 2
    assert stages[0]["options"] == {"backend": "onnxruntime"} and stages[1]["options"] is None
    assert stages[2]["options"] == {"backend": "onnxruntime-int8"}
    assert capsys.readouterr().err.count("prunekit prune: error: stop here") == 3
    with pytest.raises(SystemExit):
        main([*base, "--backend", "tensorrt", "--out", str(tmp_path / "c")])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
