"""A search's latency budget as a kept fraction of the dense model's latency (``latency``, as
``Target(latency=)`` and ``prunekit prune --target-latency`` say it) or in milliseconds
(``latency_ms``): the bound each configuration is held to, the dense time kept for a resumed search,
the command's and the recipe's spelling, and one-line errors for values that mean nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _models import tiny_splits, two_conv_classifier
from pydantic import ValidationError

from prunekit import tasks
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.search.evaluator import Evaluator
from prunekit.search.latency_table import LatencyTable
from prunekit.search.space import SearchSpace
from prunekit.workflows.search import search_model


def _space() -> SearchSpace:
    import torch

    net = two_conv_classifier()
    return SearchSpace.from_graph(DependencyGraph.trace(net, torch.randn(1, 1, 8, 8)), levels=(1.0, 0.5, 0.25))


def test_a_latency_fraction_bounds_the_latency_at_that_fraction_of_the_dense_models() -> None:
    space = _space()
    priced: list[str] = []

    def latency(config: dict[str, Any]) -> float:
        priced.append(repr(sorted(config.items())))
        return 4.0 * sum(config[d.name] for d in space.dimensions if d.kind == "width")

    evaluator = Evaluator(space, {"latency": 0.5, "macs": 0.9}, latency=latency)
    dense_ms = latency(space.dense())
    assert evaluator.limits == {"latency": 0.5 * dense_ms, "macs": 0.9}
    assert evaluator.feasible({"latency": 0.5 * dense_ms, "macs": 0.5})
    assert not evaluator.feasible({"latency": 0.51 * dense_ms, "macs": 0.5})
    evaluator.limits  # noqa: B018  (asked again: the dense model is priced once)
    assert priced.count(repr(sorted(space.dense().items()))) == 2  # NOTE: the test's own call, and the evaluator's
    assert Evaluator(space, {"latency_ms": 7.0}, latency=latency).limits == {"latency": 7.0}


def test_a_search_held_to_half_the_dense_latency_keeps_a_configuration_priced_under_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dense_timings: list[int] = []

    def fake_time(self: LatencyTable, fresh: Any, x: Any) -> float:  # NOTE: a layer's ms: its output channels
        return float(getattr(fresh, "out_channels", getattr(fresh, "out_features", 1)))

    def fake_whole(model: Any, example_inputs: Any, **kwargs: Any) -> SimpleNamespace:
        dense_timings.append(1)
        return SimpleNamespace(median_ms=40.0)

    monkeypatch.setattr(LatencyTable, "_time", fake_time)
    monkeypatch.setattr("prunekit.search.latency_table.measure_latency", fake_whole)

    def run() -> dict[str, Any]:
        return search_model(two_conv_classifier(), tiny_splits(), tasks.create("classification"), strategy="greedy",
                            budget=6, constraints={"latency": 0.5}, objectives=("metric", "latency"), seed=0,
                            levels=(1.0, 0.5, 0.25), val_samples=16, state_dir=tmp_path)

    found = run()
    # NOTE: the dense model: 40 ms timed; its layers 16 + 16 + 3 ms, so the rest is 5 ms and the goal 20 ms
    records = found["result"].records
    assert any(not r.feasible and r.values["latency"] < 40.0 for r in records)  # NOTE: the bound is not the dense time
    assert all(r.feasible == (r.values["latency"] <= 20.0 + 1e-9) for r in records)
    assert found["best"].values["latency"] <= 20.0
    assert dense_timings == [1, 1, 1]  # NOTE: the median of three timings, taken once
    run()  # NOTE: resumed from tmp_path: the dense time comes from the table's file, so the goal is the same
    assert dense_timings == [1, 1, 1]


def test_the_command_takes_a_latency_fraction_and_names_its_flags(search_arguments: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.cli import main

    seen = search_arguments(["search", "--model", "simple_cnn", "--target-latency", "0.5",
                             "--latency-batch-size", "8"])
    assert seen["constraints"] == {"latency": 0.5} and seen["latency_batch_size"] == 8
    seen = search_arguments(["search", "--model", "simple_cnn", "--target-latency-ms", "3"])
    assert seen["constraints"] == {"latency_ms": 3.0}
    for flags, message in [(["--target-latency", "5"], "search: --target-latency 5.0: the fraction of the dense "
                                                        "model's latency to keep must be in (0, 1] (for milliseconds "
                                                        "use --target-latency-ms)"),
                           (["--target-latency", "0.5", "--target-latency-ms", "3"],
                            "--target-latency 0.5 (a fraction of the dense model's) and --target-latency-ms 3.0 both "
                            "bound the latency; give one")]:
        capsys.readouterr()
        assert main(["search", "--model", "simple_cnn", *flags]) != 0  # NOTE: refused before any work
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("constraints", "message"), [
    ({"latency": 8.0}, r"latency=8.0: the fraction of the dense model's latency to keep must be in \(0, 1\] \(for "
                       r"milliseconds use latency_ms\)"),
    ({"latency_ms": -1}, r"latency_ms=-1: the most milliseconds a configuration may take must be a number > 0"),
    ({"macs": 0.0}, r"macs=0.0: the fraction of the dense model's macs to keep must be in \(0, 1\]"),
    ({"speed": 2}, r"constraints come from macs, params, latency, latency_ms; got speed"),
])
def test_a_bound_that_means_nothing_is_a_one_line_error_before_any_work(constraints: dict[str, Any],
                                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        search_model(two_conv_classifier(), None, None, constraints=constraints)  # NOTE: no data: refused first
    assert "\n" not in str(info.value)


def test_a_recipe_search_stage_takes_a_latency_target_and_its_batch() -> None:
    from prunekit.recipes.schema import SearchStageOptions

    options = SearchStageOptions.model_validate({"target": {"latency": 0.5, "batch_size": 16}})
    assert (options.target.kind, options.target.value, options.timed_batch) == ("latency", 0.5, 16)
    assert SearchStageOptions.model_validate({"target": {"macs": 0.5}, "latency_batch_size": 4}).timed_batch == 4
    with pytest.raises(ValidationError, match=r"the target's batch_size \(16\) and latency_batch_size \(32\) both"):
        SearchStageOptions.model_validate({"target": {"latency": 0.5, "batch_size": 16}, "latency_batch_size": 32})
    with pytest.raises(ValidationError, match="a search stage's target is macs, params or latency kept; got size_mb"):
        SearchStageOptions.model_validate({"target": {"size_mb": 5}})
