"""round_to="auto" for ONNX Runtime times the whole pruned model (``ModelTimings``): the exact plan
against the same target allocated with rounded widths. With a fake timer the rounded model is kept
only when it is faster than exact widths beyond the A/A spread, a coarser rounding only when it beats
the finer one too, and every candidate meets the MACs target; one real run on ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from torch import nn

from prunekit.structured import model_timing, target
from prunekit.structured.model_timing import ModelTimings
from prunekit.structured.plan import Plan
from prunekit.structured.pruner import StructuredPruner

from _funnel import X8, Funnel
from _two_conv import X, TwoConv


class Chain(nn.Module):
    """Three convolutions (32, 64, 32 channels) on 8x8: half the MACs is 22/22/46 exact; allocated on
    multiples of 16 it is 16/16/64 (exactly half); on the auto rule's 8/16 the nearest multiples miss
    the 2 % band, and exchanging whole steps between groups lands it at 8/24/64."""

    def __init__(self) -> None:
        super().__init__()
        widths = (32, 64, 32)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip((1, *widths[:-1]), widths))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


SMALL = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _widths(pruner: StructuredPruner) -> list[int]:
    return sorted(len(kept) for kept in pruner.plan_.keep.values())


def _fake_timer(monkeypatch: pytest.MonkeyPatch, ms: Callable[[list[int]], float]) -> list[list[int]]:
    """Time each candidate model as ``ms(its kept widths)``; returns the widths of every model timed."""
    timed: list[list[int]] = []

    def call(self: ModelTimings, model: torch.nn.Module, file: object) -> Callable[[], object]:
        widths = sorted(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        timed.append(widths)
        return lambda: widths
    monkeypatch.setattr(ModelTimings, "_call", call)
    monkeypatch.setattr(model_timing, "_block_ms", lambda call, **_: ms(call()))
    return timed


def _fit(model: nn.Module | None = None, x: torch.Tensor = SMALL) -> StructuredPruner:
    torch.manual_seed(0)
    return StructuredPruner({"macs": 0.5}, options={"backend": "onnxruntime"}).fit(model or Chain(), x)


def test_exact_widths_stay_when_rounding_buys_no_time(monkeypatch: pytest.MonkeyPatch) -> None:
    timed = _fake_timer(monkeypatch, lambda widths: 1.0)
    pruner = _fit()
    exact = StructuredPruner({"macs": 0.5}, round_to=1).fit(Chain(), SMALL)
    assert _widths(pruner) == _widths(exact) == [22, 22, 46]
    assert timed == [[22, 22, 46], [8, 24, 64], [16, 16, 64]]  # NOTE: exact and the rounded plans in the band
    assert pruner.plan_.meta["rounding"] == "exact" and pruner.achieved_["rounding"]["chosen"] == "exact"


def test_rounded_widths_win_when_the_model_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timer(monkeypatch, lambda widths: 1.0 if all(w % 16 == 0 for w in widths) else 2.0)
    pruner = _fit()
    assert _widths(pruner) == [16, 16, 64] and pruner.plan_.meta["rounding"] == "16"
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5
    assert pruner.achieved_["rounding"]["gains"] == {"auto": pytest.approx(0.0), "16": pytest.approx(0.5)}
    small = pruner.transform(Chain())  # NOTE: transform verifies pruned == masked dense
    assert small(SMALL).shape == (1, 10)


def test_a_rounded_plan_short_of_the_band_is_topped_up_in_one_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: TwoConv's 32/64 channels on 8/16 steps land at most 0.38 or over 0.5 of the MACs: whole
    # steps stop short, so conv2 (the last conv, read only by the classifier) takes single channels.
    timed = _fake_timer(monkeypatch, lambda widths: 1.0 if widths[0] % 8 == 0 else 2.0)
    pruner = _fit(TwoConv(), X)
    assert timed == [[22, 46], [24, 42], [16, 63]]
    assert _widths(pruner) == [24, 42] and pruner.plan_.meta["rounding"] == "auto"
    assert pruner.plan_.meta["topped_up"] == "conv2.weight:0"
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5
    assert pruner.transform(TwoConv())(X).shape == (1, 10)


def test_a_target_rounding_cannot_meet_keeps_exact_widths_untimed(monkeypatch: pytest.MonkeyPatch) -> None:
    timed = _fake_timer(monkeypatch, lambda widths: 1.0)
    torch.manual_seed(0)
    pruner = StructuredPruner({"ratio": 0.3}, options={"backend": "onnxruntime"}).fit(TwoConv(), X)
    assert timed == [] and pruner.plan_.meta["rounding"] == "exact"
    assert pruner.achieved_["rounding"]["note"] == "no rounded plan lands within the target's band"


def _plans(widths: dict[str, list[int]]) -> tuple[ModelTimings, dict[str, Plan]]:
    model = Chain()
    graph = StructuredPruner({"ratio": 0.1}, round_to=1).fit(model, SMALL).graph_
    groups = sorted(graph.prunable, key=lambda g: g.id)
    plans = {name: Plan(keep={g.id: tuple(range(w)) for g, w in zip(groups, ws)},
                        sizes={g.id: g.size for g in groups}) for name, ws in widths.items()}
    return ModelTimings(model, graph, SMALL), plans


def test_a_coarser_rounding_must_beat_the_finer_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: on multiples of 8 the model is 40 % faster; on multiples of 16 only 1 % more: "auto" stays.
    def ms(widths: list[int]) -> float:
        if all(w % 16 == 0 for w in widths):
            return 0.59
        return 0.6 if all(w % 8 == 0 for w in widths) else 1.0
    _fake_timer(monkeypatch, ms)
    timings, plans = _plans({"exact": [22, 46, 22], "auto": [24, 40, 24], "16": [16, 48, 32]})
    assert timings.fastest(plans) == "auto"
    assert timings.readings["gains"] == {"auto": pytest.approx(0.4), "16": pytest.approx(0.41)}
    _fake_timer(monkeypatch, lambda widths: 0.3 if all(w % 16 == 0 for w in widths) else ms(widths))
    assert timings.fastest(plans) == "16"


def test_a_noisy_machine_keeps_exact_widths(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: per round: exact 1.0, rounded 0.8, exact again 1.5: a 35 % A/A spread hides a 36 % gain.
    readings = iter([1.0, 0.8, 1.5] * 10)
    _fake_timer(monkeypatch, lambda widths: next(readings))
    timings, plans = _plans({"exact": [22, 46, 22], "auto": [24, 48, 24]})
    assert timings.fastest(plans) == "exact"
    assert timings.readings["noise"] == pytest.approx(0.4) and timings.readings["gains"]["auto"] > 0.3


def test_the_model_is_timed_on_onnx_runtime_for_real() -> None:
    pytest.importorskip("onnxruntime")
    pruner = _fit()
    readings = pruner.achieved_["rounding"]
    assert readings["backend"] == "onnxruntime" and readings["chosen"] in ("exact", "auto", "16")
    assert set(readings["gains"]) and all(-1.0 < g < 1.0 for g in readings["gains"].values())
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5


def test_a_model_the_backend_cannot_run_keeps_exact_widths(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(self: ModelTimings, model: torch.nn.Module, file: object) -> Callable[[], object]:
        raise RuntimeError("the exporter does not know this op")
    monkeypatch.setattr(ModelTimings, "_call", fails)
    pruner = _fit()
    assert _widths(pruner) == [22, 22, 46] and pruner.plan_.meta["rounding"] == "exact"
    assert pruner.achieved_["rounding"]["error"] == "RuntimeError: the exporter does not know this op"


def test_rounding_for_speed_does_not_buy_it_with_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    timed = _fake_timer(monkeypatch, lambda widths: 1.0 if all(w % 8 == 0 for w in widths) else 2.0)
    pruner = _fit(Funnel(), X8)
    exact = StructuredPruner({"macs": 0.5}, round_to=1).fit(Funnel(), X8).achieved_
    assert exact["params"] == pytest.approx(0.490, abs=1e-3)
    assert len(timed) == 2 and pruner.plan_.meta["rounding"] == "auto"
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5
    assert pruner.achieved_["params"] <= (1 + target.OTHER_BAND) * exact["params"]
    assert _widths(pruner) == [16, 32, 48, 48, 80, 96]  # NOTE: the MACs-only fill kept 96 and 96


def test_the_int8_backend_times_each_candidate_quantised(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    ops: list[set[str]] = []
    real = model_timing.ort_session

    def spy(file: object, threads: int) -> object:
        ops.append({node.op_type for node in onnx.load(str(file)).graph.node})
        return real(file, threads)  # type: ignore[arg-type]
    monkeypatch.setattr(model_timing, "ort_session", spy)
    torch.manual_seed(0)
    pruner = StructuredPruner({"macs": 0.5}, options={"backend": "onnxruntime-int8"}).fit(Chain(), SMALL)
    readings = pruner.achieved_["rounding"]
    assert readings["backend"] == "onnxruntime-int8" and set(readings["gains"]), readings
    assert len(ops) == 1 + len(readings["gains"])  # NOTE: exact widths and each rounded candidate
    assert all({"QuantizeLinear", "DequantizeLinear"} <= found and "Conv" in found for found in ops)
    assert 0.98 * 0.5 <= pruner.achieved_["macs"] <= 0.5
