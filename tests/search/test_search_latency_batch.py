"""The batch size a search times latency at (``latency_batch_size``): the table's entries and the measured
models run at that batch, the command and the recipe stage pass it on, and bad values are one-line errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _models import tiny_splits, two_conv_classifier
from pydantic import ValidationError

from prunekit import tasks
from prunekit.errors import ConfigError
from prunekit.search.latency_table import LatencyTable
from prunekit.workflows.search import check_dimensions, search_model


def test_the_table_times_every_entry_at_the_batch_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    batches: list[int] = []

    def fake_time(self: LatencyTable, fresh: Any, x: Any) -> float:
        batches.append(int(x.shape[0]))
        return float(x.shape[0])

    def fake_whole(model: Any, example_inputs: Any, **kwargs: Any) -> SimpleNamespace:
        batches.append(int(kwargs["batch_size"]))  # NOTE: the dense model the table's rest is priced from
        return SimpleNamespace(median_ms=100.0)

    monkeypatch.setattr(LatencyTable, "_time", fake_time)
    monkeypatch.setattr("prunekit.search.latency_table.measure_latency", fake_whole)
    found = search_model(two_conv_classifier(), tiny_splits(), tasks.create("classification"), strategy="random",
                         budget=3, constraints={"macs": 0.5}, objectives=("metric", "macs", "latency"), seed=0,
                         levels=(1.0, 0.5), latency_batch_size=16, val_samples=16, state_dir=tmp_path)
    assert batches and set(batches) == {16}
    assert all(r.values["latency"] > 0 for r in found["result"].records)
    assert [f.name.split("-")[2] for f in (tmp_path / "latency").glob("latency-*.json")] == ["b16"]


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "64"])
def test_a_latency_batch_that_is_not_a_positive_int_is_a_one_line_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"--latency-batch-size is the batch size latency is timed at, an int >= 1; got ") as info:
        check_dimensions("greedy", ranks=False, widths=True, depth=False, latency_batch_size=bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"search: latency_batch_size is the batch size latency is timed at"):
        check_dimensions("greedy", ranks=False, widths=True, depth=False, latency_batch_size=bad, recipe=True)


def test_the_command_passes_the_latency_batch_on(search_arguments: Any) -> None:
    seen = search_arguments(["search", "--model", "simple_cnn", "--target-latency-ms", "1", "--latency-batch-size", "64"])
    assert seen["latency_batch_size"] == 64
    assert search_arguments(["search", "--model", "simple_cnn", "--target-macs", "0.5"])["latency_batch_size"] == 1


def test_the_recipe_stage_takes_a_latency_batch() -> None:
    from prunekit.recipes.schema import SearchStageOptions

    options = SearchStageOptions.model_validate({"target": {"macs": 0.5}, "objectives": ["metric", "latency"],
                                                 "latency_batch_size": 32})
    assert options.timed_batch == 32
    with pytest.raises(ValidationError, match="latency_batch_size"):
        SearchStageOptions.model_validate({"target": {"macs": 0.5}, "latency_batch_size": 0})
