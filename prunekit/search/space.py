"""A search space built from the graph: the choices a search picks one of, per dimension.

Dimensions, each an ordered tuple of choices with the dense (unchanged) choice first:

- ``width``: a prunable channel group's kept width, in ``round_to`` steps (named by the group id);
- ``block``: a residual block kept (True) or removed (False) (named ``block:<module>``);
- ``rank``: a layer's factorisation, ``"none"`` or ``"<method>:<fraction of full rank>"``
  (named ``rank:<module>``);
- ``cut``: a partition cut point, the index of the layer a pipeline stage ends after
  (named ``cut:<i>``; cuts must rise).

A *configuration* maps every dimension name to one of its choices; it is plain JSON.
:meth:`SearchSpace.plan` turns its widths into a :class:`~prunekit.structured.Plan` (the
highest-scoring channels of each group kept) and :func:`build` into a smaller ``nn.Module``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.structured import Plan, apply, remove_blocks

__all__ = ["Dimension", "SearchSpace", "Config", "widths", "build", "DEFAULT_LEVELS"]

Config = dict[str, Any]
Kind = Literal["width", "block", "rank", "cut"]
DEFAULT_LEVELS = tuple(round(1.0 - 0.1 * i, 1) for i in range(10))  # NOTE: kept fractions 1.0 ... 0.1


@dataclass(frozen=True)
class Dimension:
    """One choice a search makes: ``choices[0]`` is the dense model's; for widths they fall."""

    name: str
    kind: Kind
    choices: tuple[Any, ...]
    size: int = 0  # a width dimension's group size


def widths(size: int, levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1,
           min_keep: int = 1) -> tuple[int, ...]:
    """Kept widths of a group of ``size`` channels at each kept fraction of ``levels``, rounded up
    to a multiple of ``round_to`` (never above ``size``), distinct, widest first."""
    found = {min(size, max(min_keep, math.ceil(max(1, math.ceil(size * f)) / round_to) * round_to)) for f in levels}
    return tuple(sorted(found | {size}, reverse=True))


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a search, in order (widths first, then blocks, ranks, cuts)."""

    dimensions: tuple[Dimension, ...]

    @classmethod
    def from_graph(cls, graph: DependencyGraph, *, levels: Sequence[float] = DEFAULT_LEVELS, round_to: int = 1,
                   min_keep: int = 1, blocks: Iterable[str] = (), ranks: Mapping[str, Sequence[str]] | None = None,
                   cuts: tuple[int, int] | None = None, groups: Iterable[str] | None = None) -> SearchSpace:
        """Widths of every prunable group (or only ``groups``), keep/remove of every block in
        ``blocks``, ``ranks`` (module -> choices like ``"svd:0.5"``; ``"none"`` is added first), and
        ``cuts = (stages, layers)``: ``stages - 1`` rising cut points among ``layers`` layers."""
        if not isinstance(round_to, int) or round_to < 1:
            raise ConfigError(f"SearchSpace: round_to must be an int >= 1; got {round_to!r}. Pass 1 for exact widths.")
        if not levels or not all(0 < f <= 1 for f in levels):
            raise ConfigError(f"SearchSpace: levels are kept fractions in (0, 1]; got {list(levels)}.")
        chosen = None if groups is None else set(groups)
        dims = [Dimension(g.id, "width", widths(g.size, levels, round_to, min_keep), g.size)
                for g in graph.prunable if chosen is None or g.id in chosen]
        dims += [Dimension(f"block:{b}", "block", (True, False)) for b in blocks]
        for module, options in (ranks or {}).items():
            dims.append(Dimension(f"rank:{module}", "rank", ("none", *[o for o in options if o != "none"])))
        if cuts is not None:
            stages, layers = cuts
            dims += [Dimension(f"cut:{i}", "cut", tuple(range(layers - 1))) for i in range(stages - 1)]
        return cls(tuple(dims))

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise ConfigError(f"SearchSpace has no dimension '{name}'; it has {', '.join(self.names[:8])} ...")

    def dense(self) -> Config:
        """The configuration of the unchanged model (cuts spread evenly)."""
        config = {d.name: d.choices[0] for d in self.dimensions}
        cuts = [d for d in self.dimensions if d.kind == "cut"]
        for i, d in enumerate(cuts):
            config[d.name] = d.choices[(i + 1) * len(d.choices) // (len(cuts) + 1)]
        return config

    def uniform(self, fraction: float) -> Config:
        """The dense configuration with every width cut alike: each group at its narrowest choice that
        still keeps ``fraction`` of its channels (the uniform allocation a search starts from)."""
        config = self.dense()
        for d in self.dimensions:
            if d.kind == "width":
                config[d.name] = min((c for c in d.choices if c >= d.size * fraction - 1e-9), default=d.choices[0])
        return config

    @property
    def cardinality(self) -> int:
        """How many configurations there are (cut orderings not excluded)."""
        return math.prod(len(d.choices) for d in self.dimensions)

    def valid(self, config: Mapping[str, Any]) -> bool:
        """Every dimension set to one of its choices, and cut points strictly rising."""
        if set(config) != set(self.names) or any(config[d.name] not in d.choices for d in self.dimensions):
            return False
        cuts = [config[d.name] for d in self.dimensions if d.kind == "cut"]
        return all(a < b for a, b in zip(cuts, cuts[1:]))

    def check(self, config: Mapping[str, Any]) -> Config:
        """``config`` as a plain dict, or a ConfigError naming what is wrong."""
        if not self.valid(config):
            bad = sorted(set(self.names) ^ set(config)) or [d.name for d in self.dimensions
                                                            if config[d.name] not in d.choices]
            raise ConfigError(f"Configuration does not fit the search space (at {bad[:3] or 'cut order'}). "
                              f"Build configurations from space.dense() or a strategy.")
        return dict(config)

    def sample(self, rng: random.Random) -> Config:
        """A uniformly random valid configuration (cuts drawn without replacement, sorted)."""
        config = {d.name: rng.choice(d.choices) for d in self.dimensions if d.kind != "cut"}
        cuts = [d for d in self.dimensions if d.kind == "cut"]
        if cuts:
            points = sorted(rng.sample(list(cuts[0].choices), len(cuts)))
            config.update({d.name: p for d, p in zip(cuts, points)})
        return {n: config[n] for n in self.names}

    def plan(self, config: Mapping[str, Any], scores: Mapping[str, torch.Tensor]) -> Plan:
        """The Plan keeping each width dimension's highest-scoring channels (``scores``: group id ->
        ``Tensor[size]``, higher = keep)."""
        keep, sizes = {}, {}
        for d in self.dimensions:
            if d.kind != "width":
                continue
            order = torch.sort(scores[d.name].float(), descending=True, stable=True).indices[:int(config[d.name])]
            keep[d.name], sizes[d.name] = tuple(sorted(order.tolist())), d.size
        return Plan(keep=keep, sizes=sizes, meta={"search": {k: v for k, v in config.items()}})

    def removed_blocks(self, config: Mapping[str, Any]) -> list[str]:
        return [d.name.removeprefix("block:") for d in self.dimensions if d.kind == "block" and not config[d.name]]

    def ranks(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Module -> ``"method:fraction"`` of every factorised layer of ``config`` (not those inside a
        block it removes: they are gone)."""
        gone = tuple(b + "." for b in self.removed_blocks(config))
        return {d.name.removeprefix("rank:"): config[d.name] for d in self.dimensions
                if d.kind == "rank" and config[d.name] != "none"
                and not (d.name.removeprefix("rank:") + ".").startswith(gone or ("\0",))}

    def unfactorised(self, config: Mapping[str, Any]) -> Config:
        """``config`` with every rank dimension at ``"none"``: its widths and blocks alone."""
        return {n: "none" if d.kind == "rank" else config[n] for n, d in zip(self.names, self.dimensions)}

    def cuts(self, config: Mapping[str, Any]) -> list[int]:
        return [int(config[d.name]) for d in self.dimensions if d.kind == "cut"]

    def stages(self, config: Mapping[str, Any], layer_costs: Sequence[float]) -> list[float]:
        """Each pipeline stage's summed cost when ``config``'s cut points split ``layer_costs`` (one
        per layer, in order; a cut ``i`` ends a stage after layer ``i``): the largest is the
        pipeline's bottleneck, the number a partition search minimises."""
        bounds = [0, *(c + 1 for c in self.cuts(config)), len(layer_costs)]
        return [float(sum(layer_costs[a:b])) for a, b in zip(bounds, bounds[1:])]


def build(model: nn.Module, graph: DependencyGraph, space: SearchSpace, config: Mapping[str, Any],
          scores: Mapping[str, torch.Tensor], *, example_inputs: Any = None, weights: bool = True,
          cache: dict[Any, Any] | None = None) -> nn.Module:
    """A new model with ``config``'s widths, blocks and ranks (``model`` is not changed); with
    ``example_inputs`` the pruned widths are verified and ranks are factorised with MAC counts
    (``weights=False``: as uninitialised layers of the right shapes, for counting only; ``cache``:
    factorised layers to reuse, see :func:`prunekit.search.ranks.factorise`)."""
    pruned = apply(model, graph, space.plan(config, scores), example_inputs=example_inputs,
                   verify_result=example_inputs is not None)
    if blocks := space.removed_blocks(config):
        pruned = remove_blocks(pruned, blocks)
    if ranks := space.ranks(config):
        from prunekit.search.ranks import factorise

        pruned = factorise(pruned, ranks, example_inputs, weights=weights, cache=cache).model
    return pruned
