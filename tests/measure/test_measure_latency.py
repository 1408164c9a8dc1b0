from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import LatencyStats, measure_latency
from prunekit.measure.latency import MAX_REPEATS, MIN_REPEATS


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def _check_stats(stats: LatencyStats, backend: str, batch_size: int) -> None:
    assert (stats.backend, stats.batch_size, stats.threads) == (backend, batch_size, 2)
    assert stats.median_ms > 0 and stats.mean_ms > 0 and stats.std_ms >= 0
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_model_and_threads_unchanged(backend: str) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    model = _bn_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(1)
    stats = measure_latency(model, torch.randn(1, 1, 8, 8), backend=backend, batch_size=3,
                            threads=2, warmup=1, min_time_s=0.0)
    assert torch.get_num_threads() == 1
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "BN stats must not move"
    _check_stats(stats, backend, 3)
    assert stats.repeats == MIN_REPEATS


def test_explicit_repeats(mlp: nn.Module) -> None:
    stats = measure_latency(mlp, torch.randn(1, 8), warmup=0, repeats=7)
    _check_stats(stats, "torch", 1)
    assert stats.repeats == 7


def test_adaptive_repeats_are_bounded(mlp: nn.Module) -> None:
    stats = measure_latency(mlp, torch.randn(1, 8), warmup=1, min_time_s=60.0)
    assert stats.repeats == MAX_REPEATS


def test_unknown_backend_lists_allowed(mlp: nn.Module) -> None:
    with pytest.raises(ConfigError, match="torch, onnxruntime") as info:
        measure_latency(mlp, torch.randn(1, 8), backend="tensorrt")
    assert "tensorrt" in str(info.value)


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"threads": 0}, {"repeats": 0},
                                    {"batch_size": 1.5}, {"warmup": -1}])
def test_bad_numbers_are_config_errors(mlp: nn.Module, option: dict) -> None:
    name = next(iter(option))
    with pytest.raises(ConfigError, match=name):
        measure_latency(mlp, torch.randn(1, 8), **option)
