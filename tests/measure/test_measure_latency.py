from __future__ import annotations

import itertools
from pathlib import Path

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


@pytest.mark.parametrize("backend", ["torch", "torch-fused", "onnxruntime"])
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
    with pytest.raises(ConfigError, match="torch, torch-fused, onnxruntime") as info:
        measure_latency(mlp, torch.randn(1, 8), backend="tensorrt")
    assert "tensorrt" in str(info.value)


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"threads": 0}, {"repeats": 0},
                                    {"batch_size": 1.5}, {"warmup": -1}])
def test_bad_numbers_are_config_errors(mlp: nn.Module, option: dict) -> None:
    name = next(iter(option))
    with pytest.raises(ConfigError, match=name):
        measure_latency(mlp, torch.randn(1, 8), **option)


def test_interleaved_rounds_cancel_drift_that_hits_a_whole_round() -> None:
    from prunekit.measure.latency import interleaved

    dense, pruned, other = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    slowdown = iter([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.5, 1.5, 9.0])  # round 3: `other` disturbed
    cost = {id(dense): 10.0, id(pruned): 4.0, id(other): 5.0}
    pairs = interleaved({"dense": dense, "pruned": pruned, "other": other},
                        lambda m: cost[id(m)] * next(slowdown), reference="dense", rounds=3)
    assert pairs["pruned"].ratio == pytest.approx(0.4)  # every round says 0.4, whatever the drift
    assert pairs["pruned"].median_ms == pytest.approx(15.0 * 0.4)  # dense median 15 ms x ratio
    assert pairs["pruned"].round_ms == (4.0, 8.0, 6.0)
    assert pairs["other"].ratio == pytest.approx(0.5)  # one disturbed round (3.0) is outvoted
    assert pairs["dense"].ratio == 1.0


def test_paired_latency_measures_real_models_and_rejects_bad_arguments() -> None:
    from prunekit.errors import ConfigError
    from prunekit.measure import paired_latency

    big, small = nn.Linear(256, 256), nn.Linear(256, 8)
    pairs = paired_latency({"big": big, "small": small}, torch.randn(1, 256), reference="big",
                           rounds=2, batch_size=4, min_time_s=0.01)
    assert set(pairs) == {"big", "small"} and all(len(p.round_ms) == 2 for p in pairs.values())
    assert pairs["big"].ratio == 1.0 and pairs["small"].median_ms > 0
    with pytest.raises(ConfigError, match="reference 'dense' is not one of"):
        paired_latency({"big": big}, torch.randn(1, 256), reference="dense")
    with pytest.raises(ConfigError, match="rounds must be an int >= 1"):
        paired_latency({"big": big}, torch.randn(1, 256), reference="big", rounds=0)


def test_onnx_files_are_timed_in_interleaved_rounds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import prunekit.measure.latency as latency

    log: list[str] = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def get_inputs(self) -> list:
            return [type("Input", (), {"name": "input"})()]

        def run(self, outputs: object, feed: dict) -> None:
            log.append(f"{self.name}{feed['input'].shape[0]}")
    monkeypatch.setattr(latency, "ort_session", lambda path, threads: Session(str(path)[-1]))
    stats = latency.interleaved_onnx_latencies({"dense": tmp_path / "a", "pruned": tmp_path / "b"}, torch.zeros(1, 3),
                                               batch_sizes=(1, 4), rounds=3, warmup=1, min_time_s=0.0)
    # NOTE: per batch size, 3 rounds of (1 warm-up + MIN_REPEATS timed calls) of a, then of b
    runs = [(name, len(list(calls))) for name, calls in itertools.groupby(log)]
    assert runs == [(f"{f}{b}", 1 + MIN_REPEATS) for b in (1, 4) for _ in range(3) for f in "ab"]
    assert [s.batch_size for s in stats["dense"]] == [1, 4] and stats["pruned"][1].repeats == 3 * MIN_REPEATS
    with pytest.raises(ConfigError, match="'rounds' must be an integer >= 1"):
        latency.interleaved_onnx_latencies({"a": tmp_path / "a"}, torch.zeros(1, 3), rounds=0)
