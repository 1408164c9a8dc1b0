from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit.errors import ConfigError, DataError
from prunekit.measure import LatencyStats, Profile, compare, compare_markdown, profile
from prunekit.measure.latency import LatencyControl, aa_control, interleaved

FAST = {"warmup": 1, "repeats": 5}


def _stats(backend: str, batch: int, median: float) -> LatencyStats:
    return LatencyStats(backend=backend, batch_size=batch, threads=2, median_ms=median,
                        p10_ms=0.9 * median, p90_ms=1.2 * median, mean_ms=median,
                        std_ms=0.1 * median, repeats=20)


def _pair() -> tuple[Profile, Profile]:
    dense = Profile(name="dense", params=11_689_512, macs=1_820_000_000, size_bytes=46_830_000,
                    latency=(_stats("torch", 1, 20.0), _stats("onnxruntime", 1, 10.0)),
                    accuracy=0.9123, loss=0.31, input_shape=(1, 3, 224, 224))
    pruned = Profile(name="pruned", params=5_760_000, macs=900_000_000, size_bytes=23_000_000,
                     latency=(_stats("torch", 1, 11.0), _stats("onnxruntime", 1, 5.0)),
                     accuracy=0.9071, loss=0.33, input_shape=(1, 3, 224, 224))
    return dense, pruned


def test_profile_round_trips_through_json(simple_cnn: nn.Module) -> None:
    data = TensorDataset(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    steps: list[str] = []
    result = profile(simple_cnn, torch.randn(1, 1, 28, 28), name="cnn", batch_sizes=(1, 4),
                     backends=("torch",), dataset=data, progress=steps.append, **FAST)
    assert (result.params, result.macs, result.input_shape) == (26_138, 110_400, (1, 1, 28, 28))
    assert [(s.backend, s.batch_size) for s in result.latency] == [("torch", 1), ("torch", 4)]
    assert result.accuracy is not None and 0 <= result.accuracy <= 1 and result.loss is not None
    assert steps, "progress is reported"
    assert Profile.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_onnxruntime_failure_keeps_the_rest(branches_on_data: nn.Module) -> None:
    result = profile(branches_on_data, torch.randn(1, 8), batch_sizes=(1,), **FAST)
    assert [s.backend for s in result.latency] == ["torch"]
    assert len([n for n in result.notes if n.startswith("onnxruntime latency not measured")]) == 1
    assert "BranchesOnData" in compare(result)


def test_profile_with_both_backends(mlp: nn.Module) -> None:
    pytest.importorskip("onnxruntime")
    result = profile(mlp, torch.randn(1, 8), batch_sizes=(1, 8), **FAST)
    assert [(s.backend, s.batch_size) for s in result.latency] == [
        ("torch", 1), ("torch", 8), ("onnxruntime", 1), ("onnxruntime", 8)]
    assert not [n for n in result.notes if "onnxruntime" in n]


def test_busy_machine_is_noted(mlp: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    result = profile(mlp, torch.randn(1, 8), batch_sizes=(1,), backends=("torch",), **FAST)
    assert any("busy" in note for note in result.notes)
    assert "busy" in compare(result)


_CONTROLS = (LatencyControl("torch", 1, 2, ratio=20 / 11, noise=0.03, rounds=4),
             LatencyControl("onnxruntime", 1, 2, ratio=2.0, noise=0.02, rounds=4))


def test_compare_has_every_row_and_ratio() -> None:
    table = compare(*_pair(), controls=_CONTROLS)
    for row in ("params", "MACs", "size", "torch batch 1", "onnxruntime batch 1", "accuracy",
                "loss", "first/last", "dense", "pruned"):
        assert row in table
    assert "2.03x smaller" in table  # params 11.69 M -> 5.76 M
    assert "2.00x faster (A/A ±2 %)" in table  # onnxruntime 10 ms -> 5 ms, from the control
    assert "-0.52 pp" in table
    assert "11.69 M" in table and "46.83 MB" in table and "20.0 ms (18.0-24.0)" in table


def test_single_profile_has_no_ratio_column() -> None:
    assert "first/last" not in compare(_pair()[0])


def test_compare_markdown_is_a_table() -> None:
    lines = compare_markdown(*_pair(), controls=_CONTROLS).splitlines()
    assert lines[0].startswith("| ") and "dense" in lines[0] and "first/last" in lines[0]
    assert set(lines[1]) <= set("|:-")
    assert any(line.startswith("| params |") and "2.03x smaller" in line for line in lines)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        compare()
    with pytest.raises(ConfigError, match="torch, torch-fused, onnxruntime"):
        profile(nn.Linear(2, 2), torch.randn(1, 2), backends=("tvm",))
    with pytest.raises(DataError, match="params"):
        Profile.from_dict({"name": "x"})


def test_latency_ratios_need_the_a_a_control() -> None:
    """Profiles timed minutes apart give no latency ratio; inside the A/A band it says so; a wide
    A/A band says the machine is busy."""
    plain = compare(*_pair())
    assert "faster" not in plain and "A/A control" in plain
    quiet = compare(*_pair(), controls=(LatencyControl("torch", 1, 2, ratio=1.04, noise=0.06, rounds=4),))
    assert "within noise (A/A ±6 %)" in quiet and "machine busy" not in quiet
    busy = compare(*_pair(), controls=(LatencyControl("torch", 1, 2, ratio=3.0, noise=0.4, rounds=4),))
    assert "3.00x faster (A/A ±40 %)" in busy
    assert "machine busy: the same model timed twice differed by up to 40 %" in busy



def test_the_ratio_is_shown_with_the_times_it_was_made_of() -> None:
    """The first/last cell gives the medians of the interleaved rounds the ratio comes from, so a
    reader never sets it against the profiles' own medians timed at another moment."""
    control = LatencyControl("torch", 1, 2, ratio=2.5, noise=0.05, rounds=4, before_ms=0.19, after_ms=0.076)
    table = compare(*_pair(), controls=(control,))
    assert "2.50x faster: 0.190 -> 0.076 ms in the same rounds (A/A ±5 %)" in table
    inside = LatencyControl("torch", 1, 2, ratio=1.02, noise=0.05, rounds=4, before_ms=12.34, after_ms=12.1)
    assert inside.describe() == "within noise: 12.3 -> 12.1 ms in the same rounds (A/A ±5 %)"


def test_aa_control_times_the_same_model_against_itself(simple_cnn: nn.Module) -> None:
    """Smoke only (no timing claims): the same model as "after" gives a ratio whose size is the
    control's own noise, and the reading order interleaves A, B, A'."""
    control = aa_control(simple_cnn, simple_cnn, torch.randn(1, 1, 28, 28), rounds=3, min_time_s=0.0)
    assert (control.backend, control.batch_size, control.rounds) == ("torch", 1, 3)
    assert control.ratio > 0 and control.noise >= 0
    assert control.before_ms is not None and control.after_ms is not None
    assert control.before_ms / control.after_ms == pytest.approx(control.ratio)  # NOTE: the same rounds
    order: list[str] = []
    interleaved({"A": "a", "B": "b", "A2": "a2"}, lambda m: order.append(m) or 1.0, reference="A", rounds=2)
    assert order == ["a", "b", "a2", "a", "b", "a2"]
