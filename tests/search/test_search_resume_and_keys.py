"""Resumed searches replay what an uninterrupted one does (backtracking's walk; Optuna trials scored with
fine-tune steps, counted once), the sensitivity cache tells apart models that share weights but not
code, the proxy scores exactly ``val_samples`` of the user's loaders, and the search's latency table
is timed with the run's threads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _models import Residual
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from prunekit import tasks
from prunekit.data import DataSplits
from prunekit.data.loaders import Loaders
from prunekit.graph import DependencyGraph
from prunekit.search import Proxy, sensitivity
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator, key_of
from prunekit.search.search import search
from prunekit.search.space import SearchSpace
from prunekit.workflows.sensitivity import proxy_for

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class _Chain(nn.Module):
    """Four convolutions in a row: four channel groups, 256 configurations at four levels."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(4)))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.head(x.mean((2, 3)))


def _evaluator(metric_of: Any, fidelity: int = 0, model: nn.Module | None = None) -> Evaluator:
    torch.manual_seed(0)
    model, x = (model or Residual()).eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.75, 0.5, 0.25))
    return Evaluator(space, {}, model=model, graph=graph, cost=Cost(model, graph, space, x), metric_of=metric_of,
                     fidelity=fidelity)


class _Interrupted:
    """A metric of the configuration's widths (more channels never score lower) that raises
    KeyboardInterrupt on call ``after + 1`` (None: never), counting the calls."""

    def __init__(self, names: list[str], after: int | None = None) -> None:
        self.names, self.after, self.calls = names, after, 0

    def __call__(self, config: dict[str, Any]) -> float:
        if self.after is not None and self.calls >= self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return sum(math.log(config[n]) * (1 + (7 * i) % 5) for i, n in enumerate(self.names))


def _run(strategy: str, budget: int, state_dir: Path | None, after: int | None = None,
         fidelity: int = 0) -> tuple[Any, _Interrupted]:
    model = Residual() if strategy == "backtracking" else _Chain()  # NOTE: a space TPE rarely samples twice
    evaluator = _evaluator(None, fidelity, model)
    metric = _Interrupted(evaluator.space.names, after)
    evaluator.metric_of = metric
    try:
        result = search(evaluator.space, ["metric", "macs"], {"macs": 0.5}, strategy, budget, seed=0,
                        evaluator=evaluator, state_dir=state_dir)
    except KeyboardInterrupt:
        return None, metric
    return result, metric


def _rows(result: Any) -> list[tuple[str, dict[str, float], int]]:
    return [(key_of(r.config), r.values, r.fidelity) for r in result.records]


def test_a_resumed_backtracking_search_replays_the_uninterrupted_walk(tmp_path: Path) -> None:
    want, _ = _run("backtracking", 100, None)
    total = want.evaluations
    assert 5 < total < 100  # NOTE: the whole walk, within the budget
    other_walk, paid_twice = [], []
    for after in range(1, total):  # NOTE: a Ctrl-C before each proxy evaluation in turn
        folder = tmp_path / str(after)
        stopped, _ = _run("backtracking", 100, folder, after)
        assert stopped is None
        got, metric = _run("backtracking", 100, folder)
        if _rows(got) != _rows(want) or got.best is None or got.best.config != want.best.config:
            other_walk.append(after)
        if got.evaluations != total or metric.calls != total - after:  # NOTE: paid for once, then from memory
            paid_twice.append(after)
    assert other_walk == [] and paid_twice == []


def test_an_optuna_search_with_proxy_steps_is_continued_without_counting_its_trials_twice(tmp_path: Path) -> None:
    first, metric = _run("tpe", 3, tmp_path, fidelity=2)
    assert first.evaluations == 3 and metric.calls == 3
    more, metric = _run("tpe", 5, tmp_path, fidelity=2)  # NOTE: a finished search continued with a larger budget
    assert metric.calls == 2 and more.evaluations == 5 and len(more.records) == 5
    assert {r.fidelity for r in more.records} == {2}


def test_an_interrupted_optuna_search_with_proxy_steps_resumes_with_every_trial_once(tmp_path: Path) -> None:
    want, _ = _run("tpe", 5, None, fidelity=2)
    stopped, _ = _run("tpe", 5, tmp_path, after=2, fidelity=2)
    assert stopped is None
    got, metric = _run("tpe", 5, tmp_path, fidelity=2)
    assert metric.calls == 3 and got.evaluations == want.evaluations == 5
    assert len(got.records) == len(want.records) == 5
    assert {r.fidelity for r in got.records} == {2}  # NOTE: the trials read back are at the steps they were scored at


class _Net(nn.Module):
    """A tiny classifier whose activation is an attribute: the same weights, two functions."""

    def __init__(self, act: str) -> None:
        super().__init__()
        self.conv, self.bn, self.fc, self.act = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Linear(6, 4), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu if self.act == "relu" else torch.tanh
        return self.fc(f(self.bn(self.conv(x))).mean((2, 3)))


def test_the_sensitivity_cache_tells_apart_models_with_the_same_weights_but_other_code(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)]
    proxy = Proxy(tasks.create("classification"), batches[:2], batches[2:], metric="loss")
    torch.manual_seed(0)
    relu = _Net("relu")
    tanh = _Net("tanh")
    tanh.load_state_dict(relu.state_dict())
    x = torch.randn(1, 3, 8, 8)
    shared = tmp_path / "shared"
    first = sensitivity(relu, x, proxy, ratios=(0.5,), depth=False, cache_dir=shared)
    got = sensitivity(tanh, x, proxy, ratios=(0.5,), depth=False, cache_dir=shared)
    fresh = sensitivity(tanh, x, proxy, ratios=(0.5,), depth=False, cache_dir=tmp_path / "empty")
    assert got["key"] != first["key"] and got == fresh
    assert got["baseline"] != first["baseline"]
    # the same model (another object, the same code and weights) is still served from the cache
    again = _Net("relu")
    again.load_state_dict(relu.state_dict())
    assert sensitivity(again, x, proxy, ratios=(0.5,), depth=False, cache_dir=shared) == first
    assert len(list(shared.glob("sensitivity-*.json"))) == 2


@pytest.mark.parametrize("batch_size", [32, 100, 500])
def test_the_proxy_scores_exactly_val_samples_of_the_users_loaders(batch_size: int) -> None:
    x, y = torch.randn(1000, 3, 4, 4), torch.randint(0, 4, (1000,))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    splits = Loaders("mine", train=loader, val=loader, task="classification")
    proxy = proxy_for(splits, tasks.create("classification"), bn_batches=2, val_samples=250)
    assert torch.equal(torch.cat([b[0] for b in proxy.validation]), x[:250])
    assert torch.equal(torch.cat([b[1] for b in proxy.validation]), y[:250])
    assert len(proxy.calibration) == 2  # NOTE: BatchNorm re-estimation counts batches, the loader's own
    everything = proxy_for(splits, tasks.create("classification"), val_samples=5000)
    assert sum(len(b[1]) for b in everything.validation) == 1000


def test_the_search_times_its_latency_table_with_the_runs_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from prunekit.search.latency_table import LatencyTable
    from prunekit.workflows import search as workflow
    from prunekit.workflows.common import Measure

    class Stop(Exception):
        pass

    seen: dict[str, Any] = {}

    def recording(self: LatencyTable, *args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop  # NOTE: timing the table's entries is not what is checked

    monkeypatch.setattr(LatencyTable, "__init__", recording)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 8, 8, generator=g), torch.randint(0, 5, (24,), generator=g)
    data = TensorDataset(x, y)
    splits = DataSplits("tiny", data, data, data, num_classes=5, input_shape=(3, 8, 8))
    with pytest.raises(Stop):
        workflow.search(Residual().eval(), splits, strategy="random", constraints={"latency": 0.9}, trials=2,
                        baseline_epochs=0, finetune_epochs=0, measure=Measure(threads=1, batch_sizes=(1,)))
    assert seen["threads"] == 1
