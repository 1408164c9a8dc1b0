"""The workflows with a user's task: ``sensitivity`` takes the user's own module, its cache tells
metric functions apart (in every process alike), and a NaN dense metric stops a metric budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from prunekit.errors import DataError
from prunekit.structured import Target
from prunekit.workflows.metric_budget import Attempt, prune_within
from prunekit.workflows.sensitivity import sensitivity

# NOTE: one source for both metrics, run here and in a fresh process; the set literal compiles to a
# frozenset constant, whose order changes with the string hash seed.
_SOURCE = '''
def loss_fn(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean()

def squared(model, batches):
    errors = [float(((model(x) - y) ** 2).mean()) for x, y in batches]
    return sum(errors) / len(errors) if "mean" in {"mean", "sum"} else 0.0

def absolute(model, batches):
    errors = [float((model(x) - y).abs().mean()) for x, y in batches]
    return sum(errors) / len(errors) if "mean" in {"mean", "sum"} else 0.0
'''

_SETUP = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from prunekit.data import Loaders
from prunekit.tasks import Custom

def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    loader = DataLoader(TensorDataset(x, x[:, :1] * 2.0), batch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return model, Loaders("regression", train=loader, val=loader, test=loader)

def task(name):
    return Custom(functions["loss_fn"], functions[name], metric="error", higher_is_better=False)

def key():
    from prunekit.search import Proxy, sensitivity
    model, splits = regression()
    proxy = Proxy(task("squared"), [], list(splits.val)[:2], bn_batches=0)
    return sensitivity(model, torch.zeros(1, 4), proxy, ratios=(0.5,), depth=False)["key"]
'''


def _functions() -> dict[str, Any]:
    found: dict[str, Any] = {}
    exec(compile(_SOURCE, "<metrics>", "exec"), found)
    return found


def _setup() -> dict[str, Any]:
    scope: dict[str, Any] = {"functions": _functions()}
    exec(compile(_SETUP, "<setup>", "exec"), scope)
    return scope


def _run(scope: dict[str, Any], metric: str, cache: Path, out: Path | None = None) -> dict[str, Any]:
    """The sensitivity workflow on the user's module; the proxy scores the first validation batch."""
    model, splits = scope["regression"]()
    return sensitivity(model, splits, task=scope["task"](metric), ratios=(0.5,), depth=False, bn_batches=0,
                       val_samples=8, baseline_epochs=0, cache_dir=cache, out_dir=out)


def test_sensitivity_takes_the_users_module(tmp_path: Path) -> None:
    scope = _setup()
    results = _run(scope, "squared", tmp_path / "cache", tmp_path / "out")
    found = results["sensitivity"]
    assert results["model"] == "Sequential" and "baseline_training" not in results
    assert found["metric_name"] == "error" and found["higher_is_better"] is False
    model, splits = scope["regression"]()
    assert found["baseline"] == pytest.approx(scope["task"]("squared").evaluate(model, list(splits.val)[:1])["error"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["model"] == "Sequential"


def test_an_edited_metric_is_scored_anew_and_the_key_is_the_same_in_every_process(tmp_path: Path) -> None:
    scope, cache = _setup(), tmp_path / "cache"
    squared = _run(scope, "squared", cache)["sensitivity"]
    absolute = _run(scope, "absolute", cache)["sensitivity"]
    model, splits = scope["regression"]()
    assert squared["key"] != absolute["key"] and len(list(cache.glob("sensitivity-*.json"))) == 2
    assert absolute["baseline"] == pytest.approx(scope["task"]("absolute").evaluate(model, list(splits.val)[:1])["error"])
    assert absolute["baseline"] != pytest.approx(squared["baseline"])
    script = f"functions = {{}}\nexec(compile({_SOURCE!r}, '<metrics>', 'exec'), functions)\n{_SETUP}\nprint(key())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # NOTE: another string hash seed, another set order
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert there.stdout.strip().splitlines()[-1] == scope["key"]()


def test_a_nan_dense_metric_stops_a_metric_budget() -> None:
    tried: list[dict[str, Any]] = []

    def attempt(target: dict[str, Any]) -> Attempt:
        tried.append(target)
        return Attempt(None, nn.Linear(1, 1), None, {}, [], None)

    with pytest.raises(DataError) as caught:
        prune_within(nn.Linear(1, 1), Target(macs=0.5), max_metric_drop=0.01, tries=3, attempt=attempt,
                     score=lambda m: float("nan"), higher_is_better=False)
    assert str(caught.value) == (
        "metric budget: the dense model's validation metric is NaN; expected a number to measure each cut's "
        "drop from. Fix: check the task's metric on the validation split (a metric_fn or loss giving NaN, or "
        "NaN inputs), or drop max_metric_drop.")
    assert tried == []  # NOTE: refused before any cut is pruned and fine-tuned

