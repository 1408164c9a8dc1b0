"""Strategies behind one interface: branch and bound finds the brute-force optimum, every strategy
is reproducible from its seed and resumable from its state, Pareto fronts and knees are right."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from _models import Residual

from prunekit import tasks
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.search import Proxy
from prunekit.search.cost import Cost
from prunekit.search.evaluator import Evaluator
from prunekit.search.pareto import knee, non_dominated
from prunekit.search.search import search
from prunekit.search.space import SearchSpace


def _tiny() -> tuple:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(1, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    space = SearchSpace.from_graph(graph, levels=(1.0, 0.75, 0.5, 0.25))
    return model, x, graph, space


def _proxy() -> Proxy:
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(3)]
    return Proxy(tasks.create("classification"), batches[:2], batches[2:])


def _evaluator(metric_of=None) -> Evaluator:
    model, x, graph, space = _tiny()
    return Evaluator(space, {}, model=model, graph=graph, scores=score(graph, model, "l2"),
                     metric=_proxy(), cost=Cost(model, graph, space, x), metric_of=metric_of)


def _brute_force(evaluator: Evaluator, limit: float) -> float:
    space = evaluator.space
    best = -math.inf
    for choices in itertools.product(*(d.choices for d in space.dimensions)):
        config = dict(zip(space.names, choices))
        if evaluator.costs(config)["macs"] <= limit:
            best = max(best, evaluator.metric_value(config))
    return best


@pytest.mark.parametrize("monotone", [True, False])
def test_backtracking_returns_the_brute_force_optimum(monotone: bool) -> None:
    if monotone:  # NOTE: a metric that never falls as widths grow: the optimistic bound is valid
        names = _evaluator().space.names
        evaluator = _evaluator(lambda c: sum(math.log(c[n]) * (i + 1) for i, n in enumerate(names)))
    else:
        evaluator = _evaluator()  # the real proxy: not monotone, only the feasibility bound prunes
    want = _brute_force(_evaluator(evaluator.metric_of), 0.5)
    result = search(evaluator.space, ["metric", "macs"], {"macs": 0.5}, "backtracking", 1000, seed=0,
                    evaluator=evaluator, options={"monotone": monotone})
    assert result.best is not None and result.best.values["metric"] == pytest.approx(want)
    assert result.best.values["macs"] <= 0.5
    assert result.evaluations < evaluator.space.cardinality or not monotone


@pytest.mark.parametrize("strategy", ["greedy", "random", "rl", "tpe", "nsga2", "gp", "gates", "local"])
def test_the_same_seed_gives_the_same_result(strategy: str, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        evaluator = _evaluator()
        result = search(evaluator.space, ["metric", "macs"], {"macs": 0.6}, strategy, 6, seed=3,
                        evaluator=evaluator, state_dir=tmp_path / str(i))
        runs.append([(r.config, r.values) for r in result.records])
        assert result.evaluations <= 6 and result.records
        assert all(r.values["macs"] <= 0.6 for r in result.records if r.feasible)
    assert runs[0] == runs[1]


class Killed(Exception):
    pass


def _killed_after(metric, calls: int):
    count = [0]

    def run(model, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise Killed
        return metric(model, **kwargs)
    return run


@pytest.mark.parametrize("strategy", ["greedy", "random", "rl", "tpe", "local"])
def test_a_killed_search_resumes_to_the_same_result(strategy: str, tmp_path: Path) -> None:
    whole = _evaluator()
    want = search(whole.space, ["metric", "macs"], {"macs": 0.5}, strategy, 8, seed=1, evaluator=whole)
    first = _evaluator()
    first.metric = _killed_after(first.metric, 2)
    with pytest.raises(Killed):
        search(first.space, ["metric", "macs"], {"macs": 0.5}, strategy, 8, seed=1, evaluator=first,
               state_dir=tmp_path)
    assert (tmp_path / f"search-{strategy}-1.json").is_file() or strategy == "tpe"
    second = _evaluator()
    second.metric = _killed_after(second.metric, 6)  # NOTE: the two paid for are not run again
    got = search(second.space, ["metric", "macs"], {"macs": 0.5}, strategy, 8, seed=1, evaluator=second,
                 state_dir=tmp_path)
    assert second.evaluations == whole.evaluations
    pairs, wanted = [(r.config, r.values) for r in got.records], [(r.config, r.values) for r in want.records]
    if strategy == "tpe":  # NOTE: the study keeps the trials run; a new sampler's RNG continues differently
        assert pairs[:2] == wanted[:2] and len(pairs) == len(wanted)
    else:
        assert pairs == wanted


def test_greedy_meets_the_constraint_by_shrinking() -> None:
    evaluator = _evaluator()
    result = search(evaluator.space, ["metric", "macs"], {"macs": 0.4}, "greedy", 60, seed=0, evaluator=evaluator)
    assert result.best is not None and result.best.values["macs"] <= 0.4


def test_pareto_front_and_knee() -> None:
    points = [{"metric": 0.9, "macs": 1.0}, {"metric": 0.8, "macs": 0.5}, {"metric": 0.7, "macs": 0.6},
              {"metric": 0.5, "macs": 0.1}, {"metric": 0.8, "macs": 0.5}]
    directions = {"metric": "max", "macs": "min"}
    assert non_dominated(points, directions) == [0, 1, 3]
    assert knee([points[i] for i in (0, 1, 3)], directions) == 1


def test_bad_arguments_give_clear_errors() -> None:
    evaluator = _evaluator()
    with pytest.raises(ValueError, match="Unknown search strategy 'gredy'. Did you mean 'greedy'"):
        search(evaluator.space, ["metric"], {}, "gredy", 5, evaluator=evaluator)
    with pytest.raises(ValueError, match="objectives must include 'metric'"):
        search(evaluator.space, ["macs"], {}, "greedy", 5, evaluator=evaluator)
    with pytest.raises(ValueError, match="budget is the number of proxy evaluations"):
        search(evaluator.space, ["metric"], {}, "greedy", 0, evaluator=evaluator)


def test_the_search_command_writes_the_front_and_a_loadable_model(tiny_npz: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import prunekit

    out = tmp_path / "run"
    args = [sys.executable, "-m", "prunekit", "search", "--model", "simple_cnn", "--data", str(tiny_npz),
            "--target-macs", "0.5", "--trials", "6", "--baseline-epochs", "0", "--finetune-epochs", "0",
            "--val-samples", "32", "--no-progress", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0",
            "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    front = json.loads((out / "pareto.json").read_text())
    assert front["objectives"] == ["metric", "macs"] and any(p["chosen"] for p in front["points"])
    assert all(p["values"]["macs"] <= 0.5 for p in front["points"])
    assert "best: MACs kept" in done.stdout and "(not fine-tuned: --finetune-epochs 0)" in done.stdout
    loaded = prunekit.load(out / "model")
    assert sum(p.numel() for p in loaded.parameters()) > 0
    page = (out / "report.html").read_text()  # NOTE: the run's report draws the front it searched
    assert 'alt="Scatter' in page or "Pareto" in page, "the search report has no Pareto figure"
    assert "Pareto" in (out / "report.md").read_text()
    bad = subprocess.run(args[:8] + ["--target-macs", "1.5"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and ("--target-macs 1.5: the fraction of the dense model's macs to keep must be in "
                                    "(0, 1]") in bad.stderr


def test_a_recipe_search_stage_feeds_the_next_prune_stage(tiny_npz: Path, tmp_path: Path) -> None:
    import json

    from prunekit.recipes import parse_recipe, run_recipe

    recipe = {"model": "simple_cnn", "data": str(tiny_npz),
              "stages": [{"search": {"target": {"macs": 0.5}, "trials": 6, "val_samples": 32}},
                         {"prune": {"allocation": "search"}}]}
    results = run_recipe(parse_recipe(recipe), out_dir=tmp_path / "r", progress=False)
    searched, pruned = (s["summary"] for s in results["stages"])
    assert json.loads(Path(searched["pareto_file"]).read_text())["points"]
    best = searched["best"]["config"]
    assert {k: len(v) for k, v in pruned["plan"]["keep"].items()} == best
    with pytest.raises(ValueError, match="allocation: search needs a search stage"):
        run_recipe(parse_recipe({**recipe, "stages": [{"prune": {"allocation": "search"}}]}),
                   out_dir=tmp_path / "x", progress=False)


def test_backtracking_finds_the_best_balanced_partition_cuts() -> None:
    model, x, graph, _ = _tiny()
    costs = [5.0, 1.0, 4.0, 2.0, 2.0, 6.0, 1.0, 3.0]
    space = SearchSpace.from_graph(graph, groups=(), cuts=(3, len(costs)))
    valid = [dict(zip(space.names, c)) for c in itertools.product(*(d.choices for d in space.dimensions))]
    want = min(max(space.stages(c, costs)) for c in valid if space.valid(c))
    evaluator = Evaluator(space, {}, metric_of=lambda c: -max(space.stages(c, costs)))
    result = search(space, ["metric"], {}, "backtracking", 1000, evaluator=evaluator, options={"monotone": False})
    assert result.best is not None and -result.best.values["metric"] == want == 10.0
    stages = space.stages(result.best.config, costs)
    assert len(stages) == 3 and sum(stages) == sum(costs) and result.evaluations <= len(valid)


@pytest.mark.parametrize("limit, want", [(0.9, 5), (0.61, 3)])
def test_gates_round_down_where_rounding_up_breaks_the_budget(limit: float, want: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import prunekit.gates

    class HardenedToFour:
        """Gates that keep 4 of a's 6 channels (between the space's choices 5 and 3) and all of b's."""

        def __init__(self, *args, **kwargs) -> None: ...
        def fit(self, model, example): return self
        def penalty(self): return torch.zeros(())
        def step(self) -> None: ...
        def harden(self, **kwargs):
            return SimpleNamespace(plan=SimpleNamespace(keep={"a.weight:0": list(range(4)), "b.weight:0": list(range(8))}))
    monkeypatch.setattr(prunekit.gates, "ChannelGates", HardenedToFour)
    evaluator = _evaluator()
    assert evaluator.space.dimension("a.weight:0").choices == (6, 5, 3, 2)
    result = search(evaluator.space, ["metric", "macs"], {"macs": limit}, "gates", 1, seed=0, evaluator=evaluator)
    assert result.best is not None and result.best.values["macs"] <= limit
    assert result.best.config["a.weight:0"] == want  # NOTE: up to 5 where that fits, else down to 3


def test_a_tie_on_the_metric_goes_to_fewer_macs_and_the_saved_config_leads_pareto() -> None:
    from prunekit.search.evaluator import Record
    from prunekit.search.search import _result

    uniform = Record({"a": 8}, {"metric": 0.1875, "macs": 0.499}, True)  # NOTE: scored first, as the start is
    smaller = Record({"a": 4}, {"metric": 0.1875, "macs": 0.241}, True)
    tiny = Record({"a": 2}, {"metric": 0.09375, "macs": 0.211}, True)
    evaluator = Evaluator(None, {}, history=[uniform, smaller, tiny], evaluations=3)  # type: ignore[arg-type]
    result = _result(evaluator, ("metric", "macs"))
    assert result.best is smaller and result.best in [result.records[i] for i in result.front]
    knee_config = result.knee().config
    points = result.pareto([result.best.config, knee_config])["points"]
    assert points[0]["config"] == smaller.config and points[0]["chosen"]
    # NOTE: a saved configuration off the front (re-ranked by fine-tuning) is listed, first and chosen
    points = result.pareto([uniform.config])["points"]
    assert points[0]["config"] == uniform.config and points[0]["chosen"]
    assert [p["config"] for p in points if p["chosen"]] == [uniform.config]
    assert {key for p in points for key in [tuple(p["config"].items())]} >= {(("a", 4),), (("a", 2),)}
