"""Turn per-channel scores into a Plan: how many channels each group keeps, and which.

``ratio`` is always the fraction of channels *removed*. ``scope="local"`` removes that fraction
from every prunable group; ``scope="global"`` ranks all channels together (scores normalised per
group by their mean) and removes the lowest ``ratio`` of them, at most ``max_ratio`` of any group.

Per-layer controls name a module (``"conv1"``, ``"layer1.0.conv1"``): ``ignore`` keeps the
module's outputs whole (every group it produces or acts on channel-wise; its input channels may
still be cut, as for a classifier); ``layer_ratios`` / ``layer_channels`` set the fraction / the
number of channels removed from the group the module *produces* (its output channels), overriding
the shared ratio. A group always keeps at least one channel, and the model's output is never cut
(the graph freezes it).

Cost weights (``weights=``, from :func:`prunekit.structured.cost.latency_weights`) make the cut
follow time rather than channel count: in local scope a group of weight ``w`` keeps
``(1 - ratio) ** w`` of its channels, in global scope its scores are divided by ``w``.

``round_to="auto"`` (the default) rounds a group's kept width up to the multiple :data:`AUTO_MULTIPLES`
gives its size (16 from 64 channels, 8 from 16) only where ``timings`` (a
:class:`~prunekit.structured.rounding.RoundingTable`) says the group's layers run measurably faster
so; otherwise, and without timings, widths are exact, as are smaller groups and per-layer overrides.
Rounding used to be unconditional; on small networks it cost accuracy for speed that was not there
and overshot MACs targets (issue 20, :mod:`prunekit.structured.rounding`). Where it pays: odd widths
fall off the vectorised paths of CPU kernels, whose blocked
layouts (oneDNN's nChw16c, ONNX Runtime's NCHWc) hold 16 float32 channels on AVX-512 and 8 on AVX2.
Measured in benchmarks/RESULTS.md (``benchmarks/speed.py``, 2 threads): ResNet-50 at half the MACs ran
0.64x of its MACs reduction under ONNX Runtime with exact widths, 0.89x rounded to 8 and 0.99x rounded
to 16; MobileNetV2 cut by 10 % with its 16- and 24-channel groups left at 15 and 22 ran 1.14x *slower*
than dense under ONNX Runtime, 0.94x with them at 16 and 24; with its wide groups rounded to 8 it
still ran 1.02x of dense in PyTorch at batch 16 (1.05x with BatchNorm folded), 0.97x (0.96x) under
the 16 rule (``speed.py --part sweep``, two runs). The price is granularity: ResNet-20
(16-64 channels) at a quarter of the MACs lost 0.3 points of Fashion-MNIST accuracy against exact
widths (``round_to=1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from prunekit.errors import ConfigError, did_you_mean
from prunekit.graph.dependency import DependencyGraph, keeps_outputs
from prunekit.graph.groups import ChannelGroup
from prunekit.structured.plan import Plan
from prunekit.structured.rounding import RoundingTable, rounded_width

__all__ = ["allocate", "fill_candidates", "grow", "kept_width", "round_multiple", "valid_round_to", "RoundTo",
           "AUTO_MULTIPLES", "AUTO_RULE"]

RoundTo = int | Literal["auto"]
AUTO_MULTIPLES: tuple[tuple[int, int], ...] = ((64, 16), (16, 8))  # (smallest group size, multiple), widest first
# NOTE: help texts say it
AUTO_RULE = ("a multiple of " + " or ".join(f"{m} (groups of >= {n} channels)" for n, m in AUTO_MULTIPLES)
             + " only where timing the layers shows it is faster, else exact")


def round_multiple(size: int, round_to: RoundTo) -> int:
    """The multiple a group of ``size`` channels is rounded to under ``round_to``."""
    if round_to == "auto":
        return next((multiple for least, multiple in AUTO_MULTIPLES if size >= least), 1)
    return int(round_to)


def kept_width(group: ChannelGroup, exact: int, round_to: RoundTo, timings: RoundingTable | None = None) -> int:
    """The width a group keeps for ``exact`` wanted channels: rounded up to ``round_to``, or under
    ``"auto"`` to its :data:`AUTO_MULTIPLES` step only where ``timings`` says that is faster."""
    if round_to != "auto":
        return rounded_width(group.size, exact, int(round_to))
    rounded = rounded_width(group.size, exact, round_multiple(group.size, "auto"))
    return rounded if rounded != exact and timings is not None and timings.pays(group.id, exact, rounded) else exact


def valid_round_to(value: Any) -> bool:
    """True for ``"auto"`` or an int >= 1: the one rule every entry point (API, recipe, CLI) checks."""
    return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _check(ratio: float, round_to: RoundTo, min_keep: int, max_ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio must be a float in [0, 1); got {ratio}. Pass the fraction of "
                          f"channels to remove, e.g. 0.5.")
    if not valid_round_to(round_to):
        raise ConfigError(f"round_to must be 'auto' or an int >= 1; got {round_to!r}. Pass e.g. 8 "
                          f"to keep widths multiples of 8, 1 for exact widths, or 'auto'.")
    if not isinstance(min_keep, int) or min_keep < 1:
        raise ConfigError(f"min_keep must be an int >= 1; got {min_keep!r}.")
    if not 0.0 < max_ratio <= 1.0:
        raise ConfigError(f"max_ratio must be in (0, 1]; got {max_ratio}.")


def _n_keep(group: ChannelGroup, removed: int, round_to: RoundTo, min_keep: int,
            timings: RoundingTable | None) -> int:
    keep = min(max(group.size - removed, min_keep, 1), group.size)
    return kept_width(group, keep, round_to, timings)  # NOTE: rounds up: never below the target width


def _top(scores: torch.Tensor, k: int) -> tuple[int, ...]:
    # NOTE: a stable sort makes ties deterministic (lower index wins).
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return tuple(sorted(order.tolist()))


def allocate(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], ratio: float, *,
             scope: Literal["local", "global"] = "local", round_to: RoundTo = "auto", min_keep: int = 1,
             max_ratio: float = 0.9, ignore: Iterable[str] = (),
             layer_ratios: Mapping[str, float] | None = None,
             layer_channels: Mapping[str, int] | None = None,
             meta: Mapping[str, Any] | None = None, normalize: bool = True,
             weights: Mapping[str, float] | None = None, timings: RoundingTable | None = None,
             widths: Mapping[str, int] | None = None) -> Plan:
    """A Plan keeping the highest-scoring channels of every prunable group.

    Args:
        graph: the traced model's groups; only ``graph.prunable`` groups are cut.
        scores: group id -> ``Tensor[size]`` (higher = more important).
        ratio: fraction of channels to remove, in [0, 1).
        scope: ``local`` (same ratio per group) or ``global`` (one ranking for all groups).
        round_to: kept widths are rounded up to a multiple of this (e.g. 8 for hardware); ``"auto"``
            rounds by :data:`AUTO_RULE` (asking ``timings``) and keeps per-layer overrides exact.
        min_keep: no group keeps fewer channels.
        max_ratio: no group loses more than this fraction (global scope).
        ignore: module names whose outputs keep every channel (their inputs may still be cut).
        layer_ratios: module name -> fraction removed from the group it produces (overrides ratio).
        layer_channels: module name -> number of channels removed from the group it produces.
        normalize: in global scope, divide each group's scores by their mean before ranking
            (magnitudes differ by layer); False ranks raw scores that are already comparable
            (gate values in [0, 1]).
        weights: group id -> cost weight (``prunekit.structured.cost``): in local scope the group
            keeps ``(1 - ratio) ** weight`` of its channels (at most ``max_ratio`` removed), in
            global scope its scores are divided by the weight; missing groups weigh 1.
        timings: under ``round_to="auto"``, says per group and width whether rounding up is faster
            (:mod:`prunekit.structured.rounding`); None keeps exact widths.
        widths: group id -> kept width, fixed as given (how :func:`~prunekit.structured.search`
            pins the groups it rounded); unknown groups are an error.
    """
    _check(ratio, round_to, min_keep, max_ratio)
    if scope not in ("local", "global"):
        raise ConfigError(f"scope must be 'local' or 'global'; got '{scope}'. Pass 'local' (same "
                          f"ratio per group) or 'global' (one ranking over all groups).")
    ignored = tuple(ignore)
    _check_modules(graph, ignored, "ignore")
    fixed = _overrides(graph, layer_ratios or {}, layer_channels or {})
    fixed.update(_pinned(graph, widths or {}))
    groups = [g for g in graph.prunable if g.id in scores and not _touches(g, ignored)]
    free = [g for g in groups if g.id not in fixed]
    if scope == "global" and free:
        removed = _global_counts(free, scores, ratio, max_ratio, normalize, weights or {})
    elif weights is None:
        removed = {g.id: math.floor(g.size * ratio) for g in free}
    else:  # NOTE: a group of weight w keeps (1 - ratio) ** w, at most max_ratio removed
        removed = {g.id: min(math.floor(g.size * (1.0 - (1.0 - ratio) ** weights.get(g.id, 1.0))),
                             math.floor(g.size * max_ratio)) for g in free}
    removed.update({g.id: fixed[g.id] for g in groups if g.id in fixed})
    keep = {g.id: _top(scores[g.id], _n_keep(g, removed[g.id], 1 if round_to == "auto" and g.id in fixed
                                             else round_to, min_keep, timings))
            for g in groups}
    info = {"ratio": ratio, "scope": scope, "round_to": round_to, "min_keep": min_keep, **(meta or {})}
    return Plan(keep=keep, sizes={g.id: g.size for g in groups}, meta=info)


def _pinned(graph: DependencyGraph, widths: Mapping[str, int]) -> dict[str, int]:
    """Group id -> channels removed, from kept widths by group id."""
    sizes = {g.id: g.size for g in graph.prunable}
    for group_id, width in widths.items():
        if group_id not in sizes or not isinstance(width, int) or not 1 <= width <= sizes[group_id]:
            raise ConfigError(f"widths: '{group_id}' must name a prunable group and keep 1..its size channels; "
                              f"got {width!r}. Use ids from graph.prunable.")
    return {group_id: sizes[group_id] - width for group_id, width in widths.items()}


def _touches(group: ChannelGroup, modules: tuple[str, ...]) -> bool:
    """True when one of ``modules`` keeps its outputs in ``group`` (``ignore`` semantics)."""
    return keeps_outputs(group, modules) is not None


def _known_modules(graph: DependencyGraph) -> set[str]:
    """Every module (and parent module) that owns a parameter or buffer of the traced model."""
    names: set[str] = set()
    for tensor in graph.tensors:
        parts = tensor.split(".")[:-1]
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def _check_modules(graph: DependencyGraph, names: Iterable[str], option: str) -> None:
    known = _known_modules(graph)
    for name in names:
        if name not in known:
            raise ConfigError(f"{option}: the model has no module '{name}' with weights."
                              f"{did_you_mean(name, known)} Use a name from model.named_modules().")


def _produced_group(graph: DependencyGraph, module: str, option: str) -> ChannelGroup:
    """The group holding ``module``'s output channels (where it is a producer)."""
    _check_modules(graph, [module], option)
    for g in graph.groups:
        if any(m.module == module for m in g.by_role("producer")):
            if not g.prunable:
                raise ConfigError(f"{option}: the output channels of '{module}' cannot be pruned "
                                  f"({'; '.join(g.reasons)}). Remove '{module}' from {option}.")
            return g
    raise ConfigError(f"{option}: '{module}' produces no channel group (it has no output channels "
                      f"of its own). Name a conv or linear layer, e.g. the one feeding it.")


def _overrides(graph: DependencyGraph, layer_ratios: Mapping[str, float],
               layer_channels: Mapping[str, int]) -> dict[str, int]:
    """Group id -> channels removed, from the per-layer ratios and channel counts."""
    fixed: dict[str, int] = {}
    for module, value in layer_ratios.items():
        if not 0.0 <= float(value) < 1.0:
            raise ConfigError(f"layer_ratios: the ratio for '{module}' must be in [0, 1); got {value}. "
                              f"Pass the fraction of its output channels to remove, e.g. 0.5.")
        group = _produced_group(graph, module, "layer_ratios")
        fixed[group.id] = math.floor(group.size * float(value))
    for module, count in layer_channels.items():
        group = _produced_group(graph, module, "layer_channels")
        if not isinstance(count, int) or not 0 <= count < group.size:
            raise ConfigError(f"layer_channels: '{module}' has {group.size} output channels, so "
                              f"between 0 and {group.size - 1} can be removed; got {count!r}. "
                              f"Pass a smaller count.")
        fixed[group.id] = count
    return fixed


def _global_counts(groups: list, scores: Mapping[str, torch.Tensor], ratio: float,
                   max_ratio: float, normalize: bool = True,
                   weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """How many channels each group loses when all channels are ranked together (a group's
    scores divided by its cost weight, so costly groups are cut first at equal importance)."""
    weights = weights or {}
    normalised = [scores[g.id].float() / (scores[g.id].float().mean().clamp_min(1e-12) if normalize else 1.0)
                  / weights.get(g.id, 1.0) for g in groups]
    owners = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    flat = torch.cat(normalised)
    budget = math.floor(flat.numel() * ratio)
    counts = [0] * len(groups)
    caps = [math.floor(g.size * max_ratio) for g in groups]
    for index in torch.sort(flat, stable=True).indices.tolist():
        if budget == 0:
            break
        owner = int(owners[index])
        if counts[owner] < min(caps[owner], groups[owner].size - 1):
            counts[owner] += 1
            budget -= 1
    return {g.id: counts[i] for i, g in enumerate(groups)}


def fill_candidates(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], plan: Plan, *,
                    only: str | None = None, round_to: RoundTo = "auto", normalize: bool = True,
                    ignore: Iterable[str] = (), layer_ratios: Mapping[str, float] | None = None,
                    layer_channels: Mapping[str, int] | None = None, weights: Mapping[str, float] | None = None,
                    costs: Mapping[str, float] | None = None, timings: RoundingTable | None = None,
                    widths: Mapping[str, int] | None = None, **_: Any) -> dict[str, tuple[float, int]]:
    """Group id -> (priority, channels) of the next step that may add channels back to ``plan``:
    the group's best removed channel (score over the group mean when ``normalize``, divided by
    the group's cost weight and by what one of its channels costs in ``costs``, e.g. MACs) and
    one ``round_to`` step (under ``"auto"``: one channel, or up to the rounded width where ``timings``
    says that is faster). Per-layer overrides and ignored layers keep their widths; full groups
    have no step."""
    fixed = set(_overrides(graph, layer_ratios or {}, layer_channels or {})) | set(widths or {})
    ignored = tuple(ignore)
    steps: dict[str, tuple[float, int]] = {}
    for group in graph.prunable:
        gid = group.id
        if gid not in plan.keep or gid in fixed or (only is not None and gid != only) or _touches(group, ignored):
            continue
        kept = len(plan.keep[gid])
        if kept >= group.size:
            continue
        values = scores[gid].float()
        scale = values.mean().clamp_min(1e-12) if normalize else 1.0
        removed = torch.tensor(plan.removed(gid))
        size = kept_width(group, kept + 1, round_to, timings) - kept
        price = (weights or {}).get(gid, 1.0) * max((costs or {}).get(gid, 1.0), 1e-12)
        steps[gid] = (float(values[removed].max() / scale) / price, size)
    return steps


def grow(plan: Plan, scores: Mapping[str, torch.Tensor], group_id: str, n: int) -> Plan:
    """``plan`` with the ``n`` best-scoring removed channels of ``group_id`` kept again."""
    keep = {**plan.keep, group_id: _top(scores[group_id], len(plan.keep[group_id]) + n)}
    return Plan(keep=keep, sizes=plan.sizes, meta=plan.meta)
