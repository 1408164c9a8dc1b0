"""One interface over every strategy: ``search(space, objectives, constraints, strategy, budget, seed)``.

The evaluator scores configurations (its budget is the number of proxy evaluations); the strategy
decides which; the result holds every evaluated configuration, the Pareto front over the
objectives among the feasible ones, and the best (highest metric) feasible configuration.

Resuming: with ``state_dir`` the strategy's state and the evaluations paid for are kept in
``state_dir/search-<strategy>-<seed>.json`` (Optuna strategies also keep their study there, as
SQLite, unless ``storage`` names another), written after every step; calling ``search`` again with
the same arguments continues from it. Reproducible: the same seed gives the same result.

Starting points (``start``, e.g. the uniform allocation at the budget) are scored before the
strategy runs, inside the budget, so a search never reports a best worse (by its own proxy) than
the allocation it was meant to improve on; Optuna strategies get them as the study's first trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError
from prunekit.io import save_json
from prunekit.search.evaluator import CONSTRAINTS, OBJECTIVES, Evaluator, Record, directions, key_of
from prunekit.search.pareto import knee, non_dominated
from prunekit.search.space import Config, SearchSpace
from prunekit.search.strategies import STRATEGIES, strategy as strategy_fn

__all__ = ["search", "check_constraints", "SearchResult", "PARETO_FILE", "uniform_start", "finalists_of", "NEAR",
           "FINALISTS"]

PARETO_FILE = "pareto.json"


@dataclass
class SearchResult:
    """Every evaluated configuration (``records``, last fidelity wins), the indices of the feasible
    Pareto front over ``objectives``, and the best feasible record (None if none was feasible)."""

    records: list[Record]
    objectives: tuple[str, ...]
    front: list[int]
    best: Record | None
    evaluations: int
    higher_is_better: bool = True  # NOTE: the metric's direction (a loss or MSE: lower is better)
    metric_name: str = "metric"  # NOTE: what the metric is (accuracy, mse, perplexity), for people reading it

    @property
    def directions(self) -> dict[str, str]:
        return directions(self.objectives, self.higher_is_better)

    def knee(self) -> Record | None:
        """The front's balanced point (:func:`prunekit.search.pareto.knee`)."""
        if not self.front:
            return None
        points = [self.records[i].values for i in self.front]
        return self.records[self.front[knee(points, self.directions)]]

    def pareto(self, chosen: Sequence[Config] = ()) -> dict[str, Any]:
        """What ``pareto.json`` holds: ``{"objectives", "points": [{"values", "config", "chosen"}]}``: the
        ``chosen`` configurations first, in their order (the saved one first), then the rest of the front.
        A chosen one off the front (re-ranked by fine-tuning, or timed again) is listed all the same."""
        index = {key_of(r.config): i for i, r in enumerate(self.records)}
        keys = list(dict.fromkeys(key_of(c) for c in chosen if key_of(c) in index))
        rows = [index[k] for k in keys] + [i for i in self.front if key_of(self.records[i].config) not in keys]
        return {"objectives": list(self.objectives), "metric_name": self.metric_name,
                "higher_is_better": self.higher_is_better,
                "points": [{"values": self.records[i].values, "config": self.records[i].config,
                            "chosen": key_of(self.records[i].config) in keys} for i in rows]}

    def to_dict(self) -> dict[str, Any]:
        return {"objectives": list(self.objectives), "metric_name": self.metric_name,
                "higher_is_better": self.higher_is_better, "evaluations": self.evaluations,
                "best": self.best.to_dict() if self.best else None, "front": self.front,
                "records": [r.to_dict() for r in self.records]}


def _check(objectives: Sequence[str], constraints: Mapping[str, float], strategy: str, budget: int) -> None:
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or "metric" not in objectives:
        raise ConfigError(f"search: objectives must include 'metric' and come from {', '.join(OBJECTIVES)}; got "
                          f"{list(objectives)}. Pass e.g. objectives=['metric', 'macs'].")
    check_constraints(constraints)
    if strategy not in STRATEGIES:
        strategy_fn(strategy)  # NOTE: raises the "did you mean" error
    if not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"search: budget is the number of proxy evaluations, an int >= 1; got {budget!r}. "
                          f"Pass e.g. 40.")


def check_constraints(constraints: Mapping[str, Any], where: str = "search",
                      flags: Mapping[str, str] | None = None) -> None:
    """One-line errors for bounds that mean nothing: an unknown name, a kept fraction outside (0, 1],
    a latency in ms that is not positive, or the latency bounded twice. ``flags``: the command-line
    flag of each constraint, named in the messages instead of the keyword."""
    def given(key: str, value: Any) -> str:
        return f"{flags[key]} {value}" if flags and key in flags else f"{key}={value}"

    if unknown := [c for c in constraints if c not in CONSTRAINTS]:
        raise ConfigError(f"{where}: constraints come from {', '.join(CONSTRAINTS)}; got "
                          f"{', '.join(map(str, unknown))}. Pass e.g. {given('macs', 0.25)} (a quarter of the MACs "
                          f"kept) or {given('latency', 0.5)} (twice as fast as the dense model).")
    for key, value in constraints.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if key == "latency_ms":
            if not number or value <= 0:
                raise ConfigError(f"{where}: {given(key, value)}: the most milliseconds a configuration may take "
                                  f"must be a number > 0. Pass e.g. {given(key, 5)}, or {given('latency', 0.5)} "
                                  f"(half the dense model's latency).")
        elif not number or not 0 < value <= 1:
            ms = (flags or {}).get("latency_ms", "latency_ms")
            unit = f" (for milliseconds use {ms})" if key == "latency" else ""
            raise ConfigError(f"{where}: {given(key, value)}: the fraction of the dense model's {key} to keep must "
                              f"be in (0, 1]{unit}. Pass e.g. {given(key, 0.5)}.")
    if "latency" in constraints and "latency_ms" in constraints:
        raise ConfigError(f"{where}: {given('latency', constraints['latency'])} (a fraction of the dense model's) "
                          f"and {given('latency_ms', constraints['latency_ms'])} both bound the latency; give one.")


def search(space: SearchSpace, objectives: Sequence[str], constraints: Mapping[str, float], strategy: str,
           budget: int, seed: int = 0, *, evaluator: Evaluator, state_dir: str | os.PathLike[str] | None = None,
           storage: str | None = None, options: Mapping[str, Any] | None = None,
           start: Sequence[Config] = ()) -> SearchResult:
    """Search ``space`` with ``strategy`` for at most ``budget`` proxy evaluations.

    Args:
        space: the dimensions (:class:`~prunekit.search.space.SearchSpace`).
        objectives: ``metric`` (maximised) and any of ``macs``, ``params`` (kept fractions),
            ``latency`` (ms), minimised.
        constraints: upper bounds, e.g. ``{"macs": 0.25}`` (a quarter of the MACs kept): kept fractions
            of ``macs``, ``params`` and ``latency`` (the dense model's, as the evaluator prices it), or
            ``latency_ms`` (see :attr:`Evaluator.limits`).
        strategy: a name from :data:`~prunekit.search.strategies.STRATEGIES`.
        budget: proxy evaluations, the same for every strategy.
        seed: the one source of randomness.
        evaluator: scores configurations (its ``constraints`` are set from ``constraints``).
        state_dir: where the resumable state lives (None: not resumable).
        storage: an Optuna storage URL for the Optuna strategies (None: SQLite under ``state_dir``).
        options: extra keyword arguments of the strategy (e.g. ``steps`` for greedy).
        start: configurations scored first (within ``budget``), e.g. ``space.uniform(0.5)``.
    """
    _check(objectives, constraints, strategy, budget)
    if space is not evaluator.space:
        raise ConfigError("search: the evaluator was built for another space. Build it with the same SearchSpace.")
    evaluator.constraints, evaluator.budget = dict(constraints), budget
    file = Path(state_dir) / f"search-{strategy}-{seed}.json" if state_dir is not None else None
    state: dict[str, Any] = json.loads(file.read_text()) if file is not None and file.is_file() else {}
    settings = _settings(space, objectives, constraints, evaluator)
    if file is not None and "settings" in state and state["settings"] != settings:
        changed = [k for k in settings if state["settings"].get(k) != settings[k]]
        was = "; ".join(f"{k} {state['settings'].get(k)} there, {settings[k]} now" for k in changed if k != "space")
        raise ConfigError(f"search: the state in {file} was made with other {' and '.join(changed)}"
                          f"{f' ({was})' if was else ' (search dimensions)'}: its evaluations would be judged by "
                          f"other rules. Use another folder, or the options of the run that made it.")
    state.pop("settings", None)
    evaluator.memo.update(state.pop("memo", {}))
    evaluator.evaluations = max(evaluator.evaluations, int(state.pop("evaluations", 0)))
    for row in state.pop("history", []):
        evaluator.history.append(Record(row["config"], row["values"], row["feasible"], row.get("fidelity", 0)))

    def save(current: dict[str, Any]) -> None:
        if file is not None:
            save_json({**current, "settings": settings, "memo": evaluator.memo, "evaluations": evaluator.evaluations,
                       "history": [r.to_dict() for r in evaluator.history]}, file)

    start = [space.check(c) for c in start]
    kwargs = dict(options or {})
    if strategy in ("nsga2", "tpe", "gp"):  # NOTE: the study's first trials (scored by whichever worker runs them)
        kwargs.update(objectives=tuple(objectives), storage=storage,
                      root=Path(state_dir) if state_dir is not None else None, start=start)
    else:  # NOTE: never the strategy's last evaluation (gates scores its one result with it)
        for config in start:
            if evaluator.budget is not None and evaluator.evaluations + 1 >= evaluator.budget:
                break
            evaluator(config)
        save(state)
    strategy_fn(strategy)(evaluator, seed=seed, state=state, save=save, **kwargs)
    save(state)
    return _result(evaluator, tuple(objectives))


def _settings(space: SearchSpace, objectives: Sequence[str], constraints: Mapping[str, float],
              evaluator: Evaluator) -> dict[str, Any]:
    """What a saved state's records depend on (its feasibility flags, its proxy scores' fine-tune
    steps, the dimensions its configurations choose from); the budget is not among them, so a
    finished search may be continued with a larger one."""
    dims = [[d.name, d.kind, list(d.choices)] for d in space.dimensions]
    return {"constraints": {k: float(v) for k, v in sorted(constraints.items())}, "objectives": list(objectives),
            "fidelity": evaluator.fidelity,
            "space": hashlib.sha256(json.dumps(dims, sort_keys=True, default=str).encode()).hexdigest()[:16]}


def _result(evaluator: Evaluator, objectives: tuple[str, ...]) -> SearchResult:
    latest: dict[str, Record] = {}
    for record in evaluator.history:  # NOTE: a higher fidelity replaces the cheap score
        old = latest.get(key_of(record.config))
        if old is None or record.fidelity >= old.fidelity:
            latest[key_of(record.config)] = record
    records = list(latest.values())
    feasible = [i for i, r in enumerate(records) if r.feasible]
    ways = evaluator.directions(objectives)
    front = [feasible[i] for i in non_dominated([records[i].values for i in feasible], ways)]
    best = max((records[i] for i in feasible), key=lambda r: preferred(r.values, ways), default=None)
    return SearchResult(records, objectives, front, best, evaluator.evaluations, evaluator.maximise,
                        str(getattr(evaluator.metric, "metric_name", "metric")))


def preferred(values: Mapping[str, float], directions: Mapping[str, str]) -> tuple[float, ...]:
    """A sort key, higher is better: the metric, then each other objective in order (a tie on the metric
    goes to fewer MACs, say), so the best is always on the front."""
    order = ["metric", *(o for o in directions if o != "metric")]
    return tuple(values[o] if directions.get(o, "max") == "max" else -values[o] for o in order)


NEAR = 0.1  # NOTE: a finalist uses at least 90 % of each budget it is held to (see finalists_of)
FINALISTS = 4


def uniform_start(evaluator: Evaluator, steps: int = 30) -> Config | None:
    """The uniform allocation that meets the evaluator's constraints by cheap costs: every width cut
    by the same fraction, the largest such fraction (bisection), then :meth:`Evaluator.filled` (the discrete
    widths rarely land on the budget: at levels 1.0, 0.9, ..., ResNet-20's half widths keep 25.09 %
    of the MACs, and the next uniform step down only 17 %). None without width dimensions or where
    even the narrowest widths miss the constraints."""
    space = evaluator.space
    dims = [d for d in space.dimensions if d.kind == "width"]
    if not dims or not evaluator.cheap_feasible(space.uniform(0.0)):
        return None
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if evaluator.cheap_feasible(space.uniform(mid)) else (lo, mid)
    return evaluator.filled(space.uniform(lo))


def finalists_of(records: Sequence[Record], constraints: Mapping[str, float], start: Sequence[Config] = (),
                 count: int = FINALISTS, *, higher_is_better: bool = True) -> list[Record]:
    """The configurations worth a few fine-tune steps: the starting points and the ``count`` best
    feasible by the proxy among those using at least ``1 - NEAR`` of each budget (all feasible ones
    where none does). Without fine-tuning, a pruned model's proxy score is noisy; a configuration far
    under the budget that tops it is more often noise than a better allocation (ResNet-20 at 4x: GP's
    best by the proxy kept 5.6 % of the MACs for a 25 % budget and lost 10 points after fine-tuning)."""
    sign = -1.0 if higher_is_better else 1.0
    feasible = sorted((r for r in records if r.feasible), key=lambda r: sign * r.values["metric"])
    near = [r for r in feasible
            if all(r.values.get(k, bound) >= (1 - NEAR) * bound for k, bound in constraints.items())]
    keys = {key_of(c) for c in start}
    chosen = [r for r in feasible if key_of(r.config) in keys]
    for r in near or feasible:
        if len(chosen) >= len(keys) + count:
            break
        if r not in chosen:
            chosen.append(r)
    return chosen


def write_pareto(result: SearchResult, out_dir: str | os.PathLike[str], chosen: Sequence[Config] = ()) -> Path:
    """``out_dir/pareto.json`` (see :meth:`SearchResult.pareto`)."""
    return save_json(result.pareto(chosen), Path(out_dir) / PARETO_FILE)


__all__ += ["write_pareto"]
