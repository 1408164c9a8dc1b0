"""A search priced by measured latency (``latency_model="measured"``): each configuration's whole
model is timed once, the constraint is judged on those times, and bad values are one-line errors."""

from __future__ import annotations

from typing import Any

import pytest
from _models import tiny_splits, two_conv_classifier

from prunekit import tasks
from prunekit.errors import ConfigError
from prunekit.search.latency_table import LatencyTable
from prunekit.workflows.search import check_dimensions, search_model


def test_measured_latency_times_each_configuration_once_and_constrains_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[str] = []

    def fake_measure(self: LatencyTable, config: dict[str, Any]) -> float:
        # NOTE: a stand-in for the clock: "ms" grow with the first conv's kept width, so the constraint binds
        timed.append(repr(sorted(config.items())))
        return float(config["0.weight:0"])

    monkeypatch.setattr(LatencyTable, "measure", fake_measure)
    monkeypatch.setattr(LatencyTable, "predict", lambda self, config: pytest.fail("the table was asked"))
    found = search_model(two_conv_classifier(), tiny_splits(), tasks.create("classification"), strategy="random", budget=6,
                         constraints={"latency_ms": 8.0}, objectives=("metric", "latency"), seed=0,
                         levels=(1.0, 0.75, 0.5, 0.25), latency_model="measured", val_samples=16)
    # NOTE: once per configuration however often asked, and the chosen one a second time to check it
    assert timed and len(timed) == len(set(timed)) + 1 and timed[-1] == repr(sorted(found["best"].config.items()))
    records = found["result"].records
    assert all(r.values["latency"] == float(r.config["0.weight:0"]) for r in records)
    assert found["best"].values["latency"] <= 8.0 and found["best"].config["0.weight:0"] <= 8


def test_a_wrong_latency_model_is_named() -> None:
    with pytest.raises(ConfigError, match="--latency-model guess is not a latency model; use one of table, measured"):
        check_dimensions("greedy", ranks=False, widths=True, depth=False, latency_model="guess")
    with pytest.raises(ConfigError, match="latency_model: guess is not a latency model"):
        check_dimensions("greedy", ranks=False, widths=True, depth=False, latency_model="guess", recipe=True)


def test_the_command_passes_the_latency_model_on(search_arguments: Any) -> None:
    seen = search_arguments(["search", "--model", "simple_cnn", "--target-latency-ms", "1", "--latency-model",
                             "measured", "--backend", "onnxruntime"])
    assert seen["latency_model"] == "measured" and seen["backend"] == "onnxruntime"


def _search(monkeypatch: pytest.MonkeyPatch, again: Any) -> Any:
    """A measured-latency search whose first timing of a configuration is its first conv's width and
    whose later timings are ``again(config, first)``."""
    seen: set[str] = set()

    def fake_measure(self: LatencyTable, config: dict[str, Any]) -> float:
        key, first = repr(sorted(config.items())), float(config["0.weight:0"])
        if key in seen:
            return float(again(config, first))
        seen.add(key)
        return first

    monkeypatch.setattr(LatencyTable, "measure", fake_measure)
    return search_model(two_conv_classifier(), tiny_splits(), tasks.create("classification"), strategy="random", budget=8,
                        constraints={"latency_ms": 8.0}, objectives=("metric", "latency"), seed=0,
                        levels=(1.0, 0.75, 0.5, 0.25), latency_model="measured", val_samples=16)


def test_the_chosen_configuration_is_timed_again_and_the_next_kept_where_it_misses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    steady = _search(monkeypatch, lambda config, first: first)
    assert steady["retimed"]["held"] and len(steady["retimed"]["tried"]) == 1
    chosen = steady["best"].config
    # NOTE: the same search, but the configuration it keeps runs slow when timed again
    found = _search(monkeypatch, lambda config, first: 100.0 if config == chosen else first)
    assert found["best"].config != chosen and found["best"].feasible
    assert [t["retimed_ms"] for t in found["retimed"]["tried"]][0] == 100.0 and found["retimed"]["held"]


def test_where_none_holds_when_timed_again_the_best_is_kept_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(UserWarning, match=r"timed again, none of the 3 best configurations met the latency goal of 8 ms"):
        found = _search(monkeypatch, lambda config, first: 100.0)
    assert not found["retimed"]["held"] and len(found["retimed"]["tried"]) == 3
    assert found["best"].values["latency"] <= 8.0
