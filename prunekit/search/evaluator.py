"""Evaluator: a configuration in, its objective values out (cheap costs, and the proxy metric).

Costs (MACs and params kept, :class:`~prunekit.search.cost.Cost`; latency from a
:class:`~prunekit.search.latency_table.LatencyTable`) are cheap and never counted. The proxy
metric builds the configuration's model and scores it (:class:`~prunekit.search.proxy.Proxy`),
at a *fidelity* of so many fine-tune steps (0: BatchNorm re-estimation only); each such call is
one *proxy evaluation*, the budget every strategy is compared at. Results are remembered by
configuration and fidelity, so a resumed search replays what it already paid for at no cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.search.space import Config, SearchSpace, build

__all__ = ["Evaluator", "Record", "OBJECTIVES", "CONSTRAINTS", "BudgetSpent", "directions", "key_of",
           "successive_halving"]

OBJECTIVES = {"metric": "max", "macs": "min", "params": "min", "latency": "min"}
# NOTE: budgets as a Target states them: kept fractions of the dense model's macs, params and latency,
# or the latency in ms; ``latency`` and ``latency_ms`` both bound the ``latency`` value (ms)
CONSTRAINTS = ("macs", "params", "latency", "latency_ms")


def directions(objectives: Sequence[str], higher_is_better: bool = True) -> dict[str, str]:
    """Each objective's direction (``max``/``min``): the metric's as its task says, the costs' minimised."""
    return {o: ("max" if higher_is_better else "min") if o == "metric" else OBJECTIVES[o] for o in objectives}


class BudgetSpent(Exception):
    """Raised inside a strategy when the proxy-evaluation budget is used up."""


def key_of(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True)


@dataclass
class Record:
    """One evaluated configuration: its values (``metric``, ``macs``/``params`` kept fractions,
    ``latency`` in ms when a table is given), whether it meets the constraints, and its fidelity."""

    config: Config
    values: dict[str, float]
    feasible: bool
    fidelity: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "values": self.values, "feasible": self.feasible, "fidelity": self.fidelity}


@dataclass
class Evaluator:
    """Scores configurations of ``space`` on ``model``; ``metric`` is any ``model -> float`` taking
    ``finetune_steps=`` (a :class:`~prunekit.search.proxy.Proxy`), or ``metric_of`` maps a
    configuration directly (tests, synthetic objectives). ``example_inputs`` are needed to score a
    configuration that factorises layers (a space with rank dimensions)."""

    space: SearchSpace
    constraints: Mapping[str, float]
    model: nn.Module | None = None
    graph: DependencyGraph | None = None
    scores: Mapping[str, torch.Tensor] | None = None
    metric: Callable[..., float] | None = None
    cost: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None
    latency: Callable[[Mapping[str, Any]], float] | None = None
    metric_of: Callable[[Mapping[str, Any]], float] | None = None
    budget: int | None = None
    evaluations: int = 0
    memo: dict[str, float] = field(default_factory=dict)
    history: list[Record] = field(default_factory=list)
    example_inputs: Any = None  # NOTE: what a configuration with ranks is factorised on (its layers' shapes)
    factorised: dict[Any, Any] = field(default_factory=dict)  # NOTE: layers factorised so far, reused by build
    retime: Callable[[Mapping[str, Any]], float] | None = None  # NOTE: a fresh timing, to check the chosen one
    fidelity: int = 0  # NOTE: the fine-tune steps of a proxy evaluation unless a call names others
    _dense_ms: float | None = field(default=None, repr=False)
    higher_is_better: bool | None = None  # NOTE: None: the metric's own (a Proxy's task says; else higher)

    @property
    def maximise(self) -> bool:
        """Whether a higher metric is better (accuracy) or a lower one (a loss, MSE, perplexity)."""
        if self.higher_is_better is not None:
            return self.higher_is_better
        return bool(getattr(self.metric, "higher_is_better", True))

    def goodness(self, values: Mapping[str, float]) -> float:
        """The metric as a number to maximise, whichever way the task's metric points."""
        return values["metric"] if self.maximise else -values["metric"]

    def directions(self, objectives: Sequence[str]) -> dict[str, str]:
        """Each objective's direction (:func:`directions`, the metric's as this evaluator's task says)."""
        return directions(objectives, self.maximise)

    @property
    def limits(self) -> dict[str, float]:
        """Each constraint as an upper bound on a value of :meth:`costs`: ``macs`` and ``params``
        kept fractions as given, ``latency`` in ms, from ``latency_ms`` or from ``latency`` (a kept
        fraction of the dense model's latency, :meth:`dense_ms`)."""
        limits: dict[str, float] = {}
        for key, bound in self.constraints.items():
            if key == "latency_ms":
                limits["latency"] = float(bound)
            elif key == "latency":
                limits["latency"] = float(bound) * self.dense_ms()
            else:
                limits[key] = float(bound)
        return limits

    def dense_ms(self) -> float:
        """The dense model's latency (ms) as this evaluator prices every configuration, priced once."""
        if self._dense_ms is None:
            if self.latency is None:
                raise ConfigError("Evaluator: a latency constraint needs a latency measure (a LatencyTable's "
                                  "predict or measured). Pass latency=..., or constrain macs or params.")
            self._dense_ms = float(self.latency(self.space.dense()))
        return self._dense_ms

    def costs(self, config: Mapping[str, Any]) -> dict[str, float]:
        """The cheap objective values: ``macs`` and ``params`` kept fractions, ``latency`` (ms)."""
        values: dict[str, float] = {}
        if self.cost is not None:
            c = self.cost(config)
            values.update(macs=float(c["macs_kept"]), params=float(c["params_kept"]))
        if self.latency is not None:
            values["latency"] = float(self.latency(config))
        return values

    def feasible(self, values: Mapping[str, float]) -> bool:
        return all(values.get(k, 0.0) <= v + 1e-12 for k, v in self.limits.items())

    def violation(self, values: Mapping[str, float]) -> float:
        """How far over the constraints (relative), 0 when met."""
        return sum(max(0.0, values.get(k, 0.0) - v) / max(v, 1e-12) for k, v in self.limits.items())

    def cheap_feasible(self, config: Mapping[str, Any]) -> bool:
        return self.feasible(self.costs(config))

    def filled(self, config: Mapping[str, Any]) -> Config:
        """``config`` widened one width choice at a time, the group keeping the smallest fraction
        first, while the cheap costs meet the constraints: a configuration under the budget is
        brought up to it (the space's discrete widths rarely land on it by themselves)."""
        config = dict(config)
        dims = [d for d in self.space.dimensions if d.kind == "width"]
        closed: set[str] = set()
        while True:
            open_ = [d for d in dims if d.name not in closed and config[d.name] != d.choices[0]]
            if not open_:
                return config
            d = min(open_, key=lambda d: (config[d.name] / d.size, d.name))
            wider = {**config, d.name: d.choices[d.choices.index(config[d.name]) - 1]}
            if self.cheap_feasible(wider):
                config = wider
            else:
                closed.add(d.name)

    def metric_value(self, config: Mapping[str, Any], fidelity: int | None = None) -> float:
        """The proxy metric (one proxy evaluation unless remembered) at ``fidelity`` fine-tune steps
        (None: the evaluator's own); raises BudgetSpent when out."""
        fidelity = self.fidelity if fidelity is None else fidelity
        key = f"{fidelity}|{key_of(config)}"
        if key in self.memo:
            return self.memo[key]
        if self.budget is not None and self.evaluations >= self.budget:
            raise BudgetSpent
        self.evaluations += 1
        if self.metric_of is not None:
            value = float(self.metric_of(config))
        else:
            if self.model is None or self.graph is None or self.scores is None or self.metric is None:
                raise ConfigError("Evaluator: scoring a configuration needs model, graph, scores and metric (or "
                                  "metric_of). Pass them when building the Evaluator.")
            example = self.example_inputs if self.space.ranks(config) else None
            built = build(self.model, self.graph, self.space, config, self.scores, example_inputs=example,
                          cache=self.factorised)
            value = float(self.metric(built, finetune_steps=fidelity))
        self.memo[key] = value
        return value

    def __call__(self, config: Mapping[str, Any], fidelity: int | None = None) -> Record:
        config = self.space.check(config)
        fidelity = self.fidelity if fidelity is None else fidelity
        values = {**self.costs(config), "metric": self.metric_value(config, fidelity)}
        record = Record(config, values, self.feasible(values), fidelity)
        self.history.append(record)
        return record


def successive_halving(evaluator: Evaluator, configs: Sequence[Config], *, rungs: Sequence[int] = (0, 4),
                       eta: int = 2) -> list[Record]:
    """Score every config at fidelity ``rungs[0]``, keep the best ``1/eta`` (feasible first), score
    those at the next rung, and so on (Jamieson and Talwalkar 2016). Returns the last rung's
    records, best first; configs dropped early cost one cheap evaluation each."""
    survivors = list(configs)
    records: list[Record] = []
    for i, fidelity in enumerate(rungs):
        records = [evaluator(c, fidelity) for c in survivors]
        records.sort(key=lambda r: (not r.feasible, -evaluator.goodness(r.values)))
        if i + 1 < len(rungs):
            survivors = [r.config for r in records[:max(1, len(records) // eta)]]
    return records
