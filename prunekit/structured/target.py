"""Target: how small the pruned model must be; ``search`` finds the plan that reaches it.

Conventions (the same in Python, YAML and the CLI):

- ``ratio`` is the fraction of channels *removed* from every prunable group, in [0, 1).
- ``macs``, ``params`` and ``latency`` are the fraction *kept* relative to the dense model, in
  (0, 1]: ``macs=0.5`` means "half the MACs" (``prunekit prune --target-macs 0.5``).
- ``size_mb`` is absolute: the most megabytes (10^6 bytes) the saved weights file may take ("fits in
  5 MB": ``prunekit prune --target-size-mb 5``). It is met as the ``params`` target that leaves room
  for the buffers and the file's header at their dense size (:func:`in_params`), so it is never exceeded
  by more than what a model mixing dtypes adds.

A ratio is allocated directly. The other three are reached by bisection over the ratio: more
channels removed never means more MACs, params or (up to noise) latency, so the smallest ratio
that meets the target is found in a few steps. MACs and params are counted once, on a meta-device
twin of the dense model (:func:`dense_terms`); a step's plan is measured from that count's terms
(:class:`~prunekit.measure.macs.MacsTerms`: each layer's MACs scale with its weight's size), checked
against a counted forward of the pruned twin whenever it cuts a group no counted plan cut before
(a model where they disagree is counted at every step); latency is timed on a pruned copy.
A ``macs``/``params`` plan is then *filled*: widths floored from one shared ratio move in steps of
a whole channel of the narrowest group, so the bisected plan can land well under the budget (ResNet-20
at 4x: 19.2 % of the MACs for a 25 % target). The best-scoring removed channels are added back, one
``round_to`` step of one group at a time, while the target still holds, ranked by score per MAC
(or per parameter) a channel costs, so cheap channels of an important group come back first.

Under ``round_to="auto"`` with ``timings`` in ``allocate_kwargs`` (a
:class:`~prunekit.structured.rounding.RoundingTable`) the plan is first found with exact widths;
then each group whose kept width, rounded up to its step, is measurably faster is pinned at the
rounded width and the others are searched again around it. Rounding is kept only if that plan
still lands within :data:`BAND` of a ``macs``/``params`` target and keeps at most :data:`OTHER_BAND`
more of the *other* count than the exact plan (params for a MACs target, MACs for a params target;
else the half of the roundings that cost the most budget is dropped and the rest tried again), so
it never costs more than 2 % of the budget nor buys speed with size, and the timings are asked once
per group (not at every bisection step).

Under ``round_to="auto"`` with :class:`~prunekit.structured.model_timing.ModelTimings` (ONNX Runtime)
the target is met once with exact widths and once per rounding rule near that plan
(:func:`_rounded_near`), and the whole models are timed. The same two bands hold for every rounded
candidate: its cut and fill respect the other count's ceiling, so that the fill does not spend the
leftover budget where a channel is cheap in the target's count and dear in the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from prunekit._options import OneLineErrors
from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import channels_removed
from prunekit.graph.fastmeta import fast_result
from prunekit.measure import count_macs, count_params, measure_latency
from prunekit.measure.latency import interleaved
from prunekit.measure.macs import MacsTerms, macs_terms
from prunekit.structured.allocate import _top, allocate, fill_candidates, grow, kept_width
from prunekit.structured.apply import apply
from prunekit.structured.cost import channel_costs
from prunekit.structured.plan import Plan
from prunekit.structured.model_timing import ModelTimings
from prunekit.structured.rounding import RoundingTable

__all__ = ["Target", "search", "KINDS", "macs_fraction", "dense_terms", "with_counts", "DenseCount", "in_params"]

KINDS = ("ratio", "macs", "params", "latency", "size_mb")
Kind = Literal["ratio", "macs", "params", "latency", "size_mb"]

_HIGHEST_RATIO = 1.0 - 1e-6  # NOTE: allocate needs ratio < 1; min_keep decides what is left.
_STEPS = {"macs": 12, "params": 12, "latency": 6}  # NOTE: latency is measured, so few steps.
BAND = 0.02  # NOTE: a macs/params plan under "auto" rounding keeps at least (1 - BAND) of the target
# NOTE: a rounded candidate keeps at most (1 + OTHER_BAND) of the exact plan's *other* count (params for
# a MACs target, MACs for a params target): rounding is chosen for speed and must not buy it with size.
# Unbounded, the fill spends leftover MACs where a channel costs the fewest (VGG-small's 7x7 last stage:
# 54.6 % of the params against the exact plan's 49.1 % at half the MACs, an int8 file 6.6x smaller
# instead of 7x). The same 2 % as BAND: rounding may move either count by that much, no more.
OTHER_BAND = BAND
# NOTE: bounds on the exchanges that bring a rounded plan into the band (DenseNet-121 has 107 groups;
# trying every one for every exchange took a minute, by hand)
EXCHANGES = 3
EXCHANGED_GROUPS = 8
_OTHER = {"macs": "params", "params": "macs"}
CONFIRM_ROUNDS = 5  # NOTE: interleaved rounds that confirm a latency plan before it is returned.


_MEANING = {
    "ratio": "the fraction of channels to remove, e.g. 0.5",
    "macs": "the fraction of the dense MACs to keep, e.g. 0.5 for half",
    "params": "the fraction of the dense parameters to keep, e.g. 0.5 for half",
    "latency": "the fraction of the dense latency to keep, e.g. 0.5 for twice as fast",
}
_MEANING_MORE = {
    "size_mb": "the most megabytes the saved weights may take, e.g. 5 for 5 MB",
    "batch_size": "the batch size at which latency is measured, e.g. 1",
}


class Target(BaseModel, metaclass=OneLineErrors):
    """How small the pruned model must be: exactly one of ``ratio``, ``macs``, ``params``, ``latency``,
    ``size_mb``.

    ``ratio`` is the fraction of channels removed; ``macs``, ``params`` and ``latency`` the fraction
    kept relative to the dense model; ``size_mb`` the most megabytes (10^6 bytes) of the saved weights.
    ``batch_size`` is the batch at which latency is measured (PyTorch eager, 2 threads).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: float | None = Field(None, ge=0, lt=1, description="fraction of channels to remove, in [0, 1)")
    macs: float | None = Field(None, gt=0, le=1, description="fraction of the dense MACs to keep, in (0, 1]")
    params: float | None = Field(None, gt=0, le=1,
                                 description="fraction of the dense parameters to keep, in (0, 1]")
    latency: float | None = Field(None, gt=0, le=1,
                                  description="fraction of the dense latency to keep, in (0, 1]")
    size_mb: float | None = Field(None, gt=0, description="most megabytes (10^6 bytes) the saved weights may take")
    batch_size: int = Field(1, ge=1, description="batch size at which latency is measured")

    @model_validator(mode="before")
    @classmethod
    def _in_range(cls, data: Any) -> Any:
        # NOTE: runs before the field bounds so the message says what the number means.
        for key in (*KINDS, "batch_size"):
            value = data.get(key) if isinstance(data, Mapping) else None
            if isinstance(value, bool):  # NOTE: pydantic takes True as 1.0: macs=True would cut nothing, silently
                raise ValueError(f"Target: '{key}' must be a number, not a bool; got {value}. Pass "
                                 f"{_MEANING.get(key, _MEANING_MORE.get(key, ''))}.")
        size = data.get("size_mb") if isinstance(data, Mapping) else None
        if isinstance(size, (int, float)) and not isinstance(size, bool) and not size > 0:
            raise ValueError(f"Target: 'size_mb' must be a positive number of megabytes; got {size}. Pass the most "
                             f"the saved weights may take, e.g. 5 for 5 MB.")
        for key, text in _MEANING.items():
            value = data.get(key) if isinstance(data, Mapping) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = 0 <= value < 1 if key == "ratio" else 0 < value <= 1
                if not ok:
                    interval = "[0, 1)" if key == "ratio" else "(0, 1]"
                    raise ValueError(f"Target: '{key}' must be a float in {interval}; got {value}. "
                                     f"Pass {text}.")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"Target: exactly one of ratio, macs, params, latency, size_mb must be given; got "
                f"{given or 'none'}. Pass e.g. {{macs: 0.5}} (keep half the MACs) or "
                f"{{ratio: 0.3}} (remove 30 % of the channels).")
        return self

    @property
    def kind(self) -> Kind:
        """Which quantity is targeted."""
        return next(k for k in KINDS if getattr(self, k) is not None)  # type: ignore[misc]

    @property
    def value(self) -> float:
        """The targeted number (removed fraction for ratio, kept fraction otherwise)."""
        return float(getattr(self, self.kind))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON data with only the fields that were set (``{"macs": 0.5}``)."""
        return self.model_dump(exclude_defaults=True)


_HEADER_BYTES_PER_TENSOR = 128  # NOTE: safetensors' JSON entry per tensor (name, dtype, shape, offsets), generously


def in_params(target: Target, model: nn.Module) -> Target:
    """``target`` as a kind the allocation meets: a ``size_mb`` budget becomes the ``params`` fraction
    that leaves room for ``model``'s buffers and the file's header at their dense size (both shrink, or
    stay, as channels go); any other target is returned as it is. A budget the model already fits is
    ``ratio=0`` (nothing cut); one its buffers and header alone exceed is a ConfigError."""
    if target.kind != "size_mb":
        return target
    state = model.state_dict(keep_vars=True)
    seen: set[tuple[int, int]] = set()
    param_bytes = other_bytes = 0
    params = {id(p) for p in model.parameters()}
    for tensor in state.values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.device.type != "meta" \
            else (id(tensor), 0)
        if key in seen:
            continue
        seen.add(key)
        nbytes = tensor.numel() * tensor.element_size()
        if id(tensor) in params:
            param_bytes += nbytes
        else:
            other_bytes += nbytes
    other_bytes += 8 + _HEADER_BYTES_PER_TENSOR * len(state)
    budget = target.value * 1e6
    if budget >= param_bytes + other_bytes:
        return Target(ratio=0.0)
    if budget <= other_bytes or param_bytes == 0:
        raise ConfigError(f"Target(size_mb={target.value:g}): {type(model).__name__}'s buffers and file header alone "
                          f"take {other_bytes / 1e6:.3g} MB of the {(param_bytes + other_bytes) / 1e6:.3g} MB its "
                          f"weights file takes; pass a budget above {other_bytes / 1e6:.3g} MB, or a params target.")
    return Target(params=(budget - other_bytes) / param_bytes)


def macs_fraction(target: Any, *, where: str, what: str, example: float) -> float | None:
    """The kept MACs fraction of a ``Target(macs=...)`` or its mapping; None without a target.

    For the methods whose budget can only be MACs (decompose's ranks, depth's blocks): a number or
    another kind of target is refused, naming ``where`` (the function), ``what`` it chooses, and
    an ``example`` fraction.
    """
    if target is None:
        return None
    from prunekit.config import parse_config

    if not isinstance(target, (Target, Mapping)):  # NOTE: a number or "macs=0.5" is not a target
        raise ConfigError(f"{where}: 'target' is a Target of kind macs; got {target!r}. Pass e.g. "
                          f"Target(macs={example}) or {{'macs': {example}}} to keep {example:.0%} of the dense MACs.")
    parsed = parse_config(Target, target)
    if parsed.kind != "macs":
        raise ConfigError(f"{where}: {what} for a MACs budget; got Target({parsed.kind}={parsed.value}). "
                          f"Pass e.g. Target(macs={example}).")
    return float(parsed.value)


def measure(model: nn.Module, example_inputs: Any, kind: str, *, batch_size: int = 1) -> float:
    """The quantity a ``macs``/``params``/``latency`` target constrains (latency: median ms,
    PyTorch eager, 2 threads), as measured for every target search and pruning step."""
    if kind == "macs":
        return float(count_macs(model, example_inputs))
    if kind == "params":
        return float(count_params(model))
    if kind == "latency":
        return measure_latency(model, example_inputs, backend="torch", batch_size=batch_size,
                               threads=2, min_time_s=0.3).median_ms
    raise ConfigError(f"measure: kind must be macs, params or latency; got '{kind}'.")


def _signature(plan: Plan) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((g, len(k)) for g, k in plan.keep.items()))


def _meta_twin(model: nn.Module, example_inputs: Any) -> tuple[nn.Module, Any]:
    """``model`` and its input on the meta device (shapes only): counting MACs there costs no
    arithmetic and pruning it copies no data."""
    from torch.utils._pytree import tree_map

    from prunekit._clone import clone_module

    memo: dict[int, Any] = {}
    for t in (*model.parameters(), *model.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    twin = clone_module(model, memo)
    inputs = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, example_inputs)
    return twin, inputs


def dense_terms(model: nn.Module, example_inputs: Any) -> tuple[nn.Module, Any, MacsTerms]:
    """The meta-device twin of ``model`` (and its input) with its MACs counted once as
    :class:`~prunekit.measure.macs.MacsTerms`; raises where the forward needs real values."""
    twin, inputs = _meta_twin(model, example_inputs)
    return twin, inputs, macs_terms(twin, inputs, shapes_only=fast_result)


class DenseCount:
    """One counted pass on the meta twin, shared by the rounding table (layer shapes), the search
    (dense MACs, per-module MACs) and a ratio target's ``achieved_``; None for a latency target or a
    model that needs real values. The twin (shapes only, no data) is taken from the model as it is
    at ``fit``; the pass runs on first use, so a ratio target with widths that need no rounding
    never counts during ``fit``."""

    def __init__(self, model: nn.Module, example_inputs: Any, target: Target) -> None:
        self.twin: tuple[nn.Module, Any] | None = None
        if target.kind != "latency":
            try:
                self.twin = _meta_twin(model, example_inputs)
            except Exception:  # noqa: BLE001  (the search measures the real model instead)
                self.twin = None
        self.counted = False
        self.terms: Terms | None = None

    def __call__(self) -> Terms | None:
        if not self.counted and self.twin is not None:
            try:
                self.terms = (*self.twin, macs_terms(*self.twin, shapes_only=fast_result))
            except Exception:  # noqa: BLE001  (the search measures the real model instead)
                self.terms = None
        self.counted = True
        return self.terms

    def shapes(self) -> Mapping[str, tuple[int, ...]] | None:
        """Each weighted module's input shape (without the batch dim), from the count."""
        terms = self()
        return terms[2].inputs if terms is not None else None


def _canonical_names(model: nn.Module) -> dict[str, str]:
    """Every name a parameter goes by (tied ones have several) -> the one ``named_parameters`` gives."""
    first: dict[int, str] = {}
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names[name] = first.setdefault(id(p), name)
    return names


class _Meter:
    """Measures (and caches per kept widths) the targeted quantity of a model pruned by a plan.

    MACs and params are counted on a meta-device twin of the model when it runs there (the pruned
    twin is sliced without copying data); latency, and models that need real values, use the
    real model. The dense count is kept split by parameter (:class:`~prunekit.measure.macs.MacsTerms`),
    which gives a plan's MACs and params from its kept widths alone; a plan cutting a group that no
    counted plan has cut yet is still counted and compared with that estimate, and after one
    disagreement (a layer applied across a cut channel axis, attention over cut heads) every plan
    is counted.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, example_inputs: Any, target: Target,
                 terms: tuple[nn.Module, Any, MacsTerms] | None = None):
        self.model, self.graph, self.inputs, self.target = model, graph, example_inputs, target
        self.cache: dict[tuple[tuple[str, int], ...], dict[str, float]] = {}
        self.twin: tuple[nn.Module, Any] | None = None
        self.terms: MacsTerms | None = None
        self.checked: set[str] = set()  # NOTE: groups cut by a counted plan that agreed with the estimate
        self.exact = True  # NOTE: False after the estimate once disagreed with a count
        if target.kind != "latency":
            try:
                twin, inputs, self.terms = terms if terms is not None else dense_terms(model, example_inputs)
                self.twin = (twin, inputs)
                self.canonical = _canonical_names(twin)
                self.dense = {"macs": float(self.terms.macs), "params": float(count_params(twin))}
                return
            except Exception:  # noqa: BLE001  (the forward needs real values: measure the real model)
                self.twin, self.terms = None, None
        self.dense = self._measure(model)

    def _measure(self, model: nn.Module, *, latency: bool = True) -> dict[str, float]:
        kinds = ("macs", "params", "latency") if self.target.kind == "latency" and latency else ("macs", "params")
        return {k: measure(model, self.inputs, k, batch_size=self.target.batch_size) for k in kinds}

    def _measure_twin(self, twin: nn.Module) -> dict[str, float]:
        assert self.twin is not None
        # NOTE: count_macs's number; shapes_only skips the slow meta kernels of activations and norms
        macs = macs_terms(twin, self.twin[1], shapes_only=fast_result).macs
        return {"macs": float(macs), "params": float(count_params(twin))}

    def _estimate(self, plan: Plan) -> dict[str, float]:
        """MACs and params of the model pruned by ``plan``, from the dense count's terms."""
        assert self.terms is not None
        shapes = {name: list(shape) for name, shape in self.terms.shapes.items()}
        cut: dict[tuple[str, int, int, int], int] = {}  # NOTE: (parameter, axis, start, inner) -> removed
        for group_id, kept in plan.keep.items():
            removed = plan.sizes[group_id] - len(kept)
            for m in self.graph.group(group_id).members if removed else ():
                name = self.canonical.get(m.tensor)
                if name is not None:
                    cut[(name, m.axis, m.start, m.inner)] = removed * m.inner
        for (name, axis, _, _), n in cut.items():
            shapes[name][axis] -= n
        return {"macs": float(self.terms.estimate(shapes)), "params": float(sum(math.prod(s) for s in shapes.values()))}

    def _count(self, plan: Plan) -> dict[str, float]:
        """The plan's MACs and params from the estimate where that is known to hold, else counted."""
        assert self.twin is not None
        cut = {g for g in plan.keep if len(plan.keep[g]) < plan.sizes[g]}
        estimate = self._estimate(plan) if self.exact else None
        if estimate is not None and cut <= self.checked:
            return estimate
        counted = self._measure_twin(apply(self.twin[0], self.graph, plan, verify_result=False))
        if estimate == counted:
            self.checked |= cut
        else:
            self.exact = False
        return counted

    def __call__(self, plan: Plan) -> dict[str, float]:
        """Kept fractions (relative to dense) and absolute counts for the model pruned by ``plan``."""
        key = _signature(plan)
        if all(len(k) == plan.sizes[g] for g, k in plan.keep.items()):
            self.cache[key] = self.dense  # NOTE: nothing removed; skip one (costly) measurement.
        if key not in self.cache and self.twin is not None:
            self.cache[key] = self._count(plan)
        if key not in self.cache:
            pruned = apply(self.model, self.graph, plan, example_inputs=self.inputs, verify_result=False)
            self.cache[key] = self._measure(pruned, latency=False)
            if self.target.kind == "latency":
                self.cache[key]["latency"] = self._paired_latency(pruned)
        absolute = self.cache[key]
        kept = {k: absolute[k] / max(self.dense[k], 1e-12) for k in absolute}
        return {**kept, **{f"{k}_count": absolute[k] for k in absolute}}

    def confirm(self, plan: Plan, rounds: int = CONFIRM_ROUNDS) -> float:
        """The kept latency of ``plan`` re-measured in ``rounds`` interleaved rounds (the cache
        keeps this reading from now on)."""
        pruned = apply(self.model, self.graph, plan, example_inputs=self.inputs, verify_result=False)
        key = _signature(plan)
        counts = self.cache[key] if key in self.cache else self._measure(pruned, latency=False)
        self.cache[key] = {**counts, "latency": self._paired_latency(pruned, rounds)}
        return self(plan)["latency"]

    def _paired_latency(self, pruned: nn.Module, rounds: int = 2) -> float:
        """The pruned model's latency, measured in rounds interleaved with the dense model, as the
        dense reading taken at the start times the per-round ratio: load that drifts during the
        search (a shared CPU) hits both sides of the ratio alike."""
        def latency(model: nn.Module) -> float:
            return measure(model, self.inputs, "latency", batch_size=self.target.batch_size)

        pair = interleaved({"dense": self.model, "pruned": pruned}, latency, reference="dense", rounds=rounds)
        return pair["pruned"].ratio * self.dense["latency"]


Terms = tuple[nn.Module, Any, MacsTerms]


def search(model: nn.Module, graph: DependencyGraph, scores: Mapping[str, torch.Tensor], target: Target, *,
           allocate_kwargs: Mapping[str, Any] | None = None, example_inputs: Any,
           verify_result: bool = True, fill: bool = True,
           terms: Terms | Callable[[], Terms | None] | None = None,
           counted: bool = True) -> tuple[Plan, dict[str, Any]]:
    """The plan that meets ``target`` with the fewest channels removed, and what it achieved.

    Args:
        model, graph, scores: the dense model, its traced graph and per-group scores.
        target: a :class:`Target`.
        allocate_kwargs: passed to :func:`~prunekit.structured.allocate` (scope, round_to, ...).
        example_inputs: input for MAC counting, latency and the final verification.
        fill: for ``macs``/``params`` targets, add back the best removed channels while the target
            holds (see the module docstring); False keeps the bisected plan as allocated.
        terms: :func:`dense_terms` of ``model`` where the caller has it already (else counted here),
            or a callable giving it (or None) when first needed.
        counted: False leaves the MACs and params out of a ``ratio`` target's ``achieved`` (nothing
            is counted: a ratio plan needs no count); :func:`with_counts` adds them later.

    Returns ``(plan, achieved)``; ``achieved`` holds the kept fractions ``macs``, ``params`` (and
    ``latency``), their absolute values (``macs_count``...), the allocation ``ratio`` and
    ``channels_removed`` (fraction of the listed channels cut) and ``filled_channels`` (added back).
    """
    kwargs = dict(allocate_kwargs or {})
    counted = counted or target.kind != "ratio"  # NOTE: only a ratio plan is allocated without counting
    meters: list[_Meter] = []

    def meter() -> _Meter:  # NOTE: built once, when something first needs a count
        if not meters:
            meters.append(_Meter(model, graph, example_inputs, target, _resolve(terms)))
        return meters[0]

    timings = kwargs.pop("timings", None) if kwargs.get("round_to", "auto") == "auto" else None
    plan, achieved = _search(model, graph, scores, target, meter() if counted else None, kwargs, example_inputs, fill)
    if isinstance(timings, ModelTimings):
        plan, achieved = _fastest_rounding(model, graph, scores, target, meter(), kwargs, example_inputs, fill,
                                           timings, (plan, achieved))
        pinned = {}
    else:
        pinned = _faster_rounded(graph, plan, timings) if timings is not None else {}
    if pinned:
        dense = meter().terms
        price = channel_costs(model, graph, example_inputs, "params" if target.kind == "params" else "macs",
                              macs=dense.by_module if dense is not None else None)
        exact = {g: len(k) for g, k in plan.keep.items()}
        other = _OTHER.get(target.kind)
        ceiling = (1.0 + OTHER_BAND) * achieved[other] if other is not None else math.inf
        # NOTE: cheapest roundings first, so halving the list drops the ones that cost the budget most
        order = sorted(pinned, key=lambda g: ((pinned[g] - exact[g]) * price.get(g, 0.0), g))
        while order:
            rounded = _pinned_search(model, graph, scores, target, meter() if counted else None, {**kwargs, "widths": {
                g: pinned[g] for g in order}}, example_inputs, fill, ceiling)
            if rounded is not None:
                plan, achieved = rounded
                break
            order = order[:len(order) // 2]
    if isinstance(timings, ModelTimings) and timings.readings:
        achieved = {**achieved, "rounding": dict(timings.readings)}
    if verify_result:
        apply(model, graph, plan, example_inputs=example_inputs, verify_result=True)
    return plan, achieved


def _resolve(terms: Terms | Callable[[], Terms | None] | None) -> Terms | None:
    return terms() if callable(terms) else terms


def with_counts(achieved: Mapping[str, Any], model: nn.Module, graph: DependencyGraph, plan: Plan, target: Target,
                example_inputs: Any, terms: Terms | Callable[[], Terms | None] | None = None) -> dict[str, Any]:
    """``achieved`` of a ``ratio`` search run with ``counted=False``, with the kept fractions and
    absolute counts of MACs and params of ``model`` pruned by ``plan`` where ``search`` puts them."""
    head = {k: achieved[k] for k in ("ratio", "channels_removed", "filled_channels") if k in achieved}
    counts = _Meter(model, graph, example_inputs, target, _resolve(terms))(plan)
    return {**head, **counts, **{k: v for k, v in achieved.items() if k not in head}}


def _search(model: nn.Module, graph: DependencyGraph, scores: Mapping[str, torch.Tensor], target: Target,
            meter: _Meter | None, kwargs: dict[str, Any], example_inputs: Any,
            fill: bool) -> tuple[Plan, dict[str, Any]]:
    """The plan for ``target``; ``meter`` None (a ratio target only) leaves the counts out of ``achieved``."""
    # NOTE: keyword overrides of kwargs let an unreachable target's message try looser options
    plan_at: Callable[..., Plan] = lambda r, **over: allocate(graph, scores, r, **{**kwargs, **over})  # noqa: E731
    if target.kind == "ratio":
        ratio = target.value
    else:
        assert meter is not None
        ratio = _bisect(plan_at, lambda p: meter(p)[target.kind], target, graph, kwargs)
    if target.kind == "latency":
        assert meter is not None
        ratio = _confirm(plan_at, meter, ratio, target.value)
    plan = plan_at(ratio)
    added = 0
    if fill and target.kind in ("macs", "params"):
        assert meter is not None
        twin = meter.twin or (model, example_inputs)  # NOTE: shapes are all the costs need
        costs = channel_costs(twin[0], graph, twin[1], target.kind,
                              macs=meter.terms.by_module if meter.terms is not None else None)
        plan, added = _fill(plan, graph, scores, lambda p: meter(p)[target.kind], target.value,
                            {**kwargs, "costs": costs})
    plan = Plan(keep=plan.keep, sizes=plan.sizes,
                meta={**plan.meta, "target": target.to_dict(), "filled_channels": added})
    achieved = {"ratio": ratio, "channels_removed": channels_removed(graph.groups, plan.keep, plan.sizes),
                "filled_channels": added, **(meter(plan) if meter is not None else {})}
    return plan, achieved


def _pinned_search(model: nn.Module, graph: DependencyGraph, scores: Mapping[str, torch.Tensor], target: Target,
                   meter: _Meter | None, kwargs: dict[str, Any], example_inputs: Any,
                   fill: bool, ceiling: float = math.inf) -> tuple[Plan, dict[str, Any]] | None:
    """The plan with ``kwargs["widths"]`` pinned, or None where those widths cannot meet the target,
    leave a ``macs``/``params`` plan more than :data:`BAND` under it, or keep more of the other count
    (params for a MACs target, MACs for a params target) than ``ceiling`` (:data:`OTHER_BAND`)."""
    try:
        plan, achieved = _search(model, graph, scores, target, meter, kwargs, example_inputs, fill)
    except ConfigError:
        return None
    if target.kind in ("macs", "params") and (achieved[target.kind] < (1.0 - BAND) * target.value
                                              or achieved[_OTHER[target.kind]] > ceiling):
        return None
    return Plan(keep=plan.keep, sizes=plan.sizes, meta={**plan.meta, "rounded": dict(kwargs["widths"])}), achieved


def _fastest_rounding(model: nn.Module, graph: DependencyGraph, scores: Mapping[str, torch.Tensor],
                      target: Target, meter: _Meter, kwargs: dict[str, Any], example_inputs: Any, fill: bool,
                      timings: ModelTimings, exact: tuple[Plan, dict[str, Any]]) -> tuple[Plan, dict[str, Any]]:
    """The exact plan, or the same target met with rounded widths (the auto rule's multiples, or 16
    everywhere; :func:`_rounded_near`) where ``timings`` measures that model faster. Candidates that
    miss the target's band, or keep more than :data:`OTHER_BAND` over the exact plan's other count,
    are not timed."""
    candidates = {"exact": exact}
    for name, rule in (("auto", {"round_to": "auto", "timings": _ALWAYS}), ("16", {"round_to": 16})):
        found = _rounded_near(model, graph, scores, target, meter, {**kwargs, **rule}, example_inputs,
                              exact[0], exact[1]["ratio"])
        if found is None or any(dict(found[0].keep) == dict(p.keep) for p, _ in candidates.values()):
            continue
        candidates[name] = (found[0], {**found[1], "round_to": name})
    chosen = timings.fastest({name: plan for name, (plan, _) in candidates.items()})
    plan, achieved = candidates[chosen]
    return Plan(keep=plan.keep, sizes=plan.sizes, meta={**plan.meta, "rounding": chosen}), achieved


def _rounded_near(model: nn.Module, graph: DependencyGraph, scores: Mapping[str, torch.Tensor], target: Target,
                  meter: _Meter, kwargs: dict[str, Any], example_inputs: Any,
                  exact: Plan, ratio: float) -> tuple[Plan, dict[str, Any]] | None:
    """``exact`` with every movable group's width rounded to the nearest multiple of its
    ``kwargs["round_to"]`` step (at least one step), then cut by whole steps while over the target or
    over :data:`OTHER_BAND` of the exact plan's other count (least normalised score per MAC or
    parameter of the count that is over first) and grown back by whole steps while both hold
    (:func:`_fill`): a rounded plan near the balanced exact one. None where that misses the band.

    Allocating a rounded plan from scratch lands far from it on small networks (VGG-small at half the
    MACs: 16/32/128 channels per stage, 0.469 of the MACs), and so does rounding down before the
    fill, which spends the budget where a channel costs the fewest MACs (the last stage); bounding
    the other count keeps the fill from buying the target's leftovers with parameters."""
    if target.kind not in ("macs", "params"):
        return None
    kind, other = target.kind, _OTHER[target.kind]
    ceiling = (1.0 + OTHER_BAND) * meter(exact)[other]
    movable = fill_candidates(graph, scores, exact, **kwargs)  # NOTE: not full, not fixed by the user
    twin = meter.twin or (model, example_inputs)
    by_module = meter.terms.by_module if meter.terms is not None else None
    costs = {k: channel_costs(twin[0], graph, twin[1], k, macs=by_module) for k in (kind, other)}
    step = {g: kept_width(graph.group(g), 1, kwargs["round_to"], kwargs.get("timings")) for g in movable}
    width = {g: min(graph.group(g).size, max(step[g], (2 * len(exact.keep[g]) + step[g]) // (2 * step[g]) * step[g]))
             for g in movable}
    plan = Plan(keep={**exact.keep, **{g: _top(scores[g], width[g]) for g in movable}}, sizes=exact.sizes,
                meta=exact.meta)
    while True:
        counts = meter(plan)
        over = kind if counts[kind] > target.value else other if counts[other] > ceiling else None
        if over is None:
            break
        cuttable = [g for g in movable if width[g] - step[g] >= step[g]]
        if not cuttable:
            return None
        mean = {g: scores[g].float().mean().clamp_min(1e-12) for g in cuttable}
        loss = {g: float(torch.sort(scores[g].float()[list(plan.keep[g])]).values[:step[g]].sum() / mean[g])
                / max(costs[over].get(g, 1.0) * step[g], 1e-12) for g in cuttable}
        g = min(cuttable, key=lambda k: (loss[k], k))
        width[g] -= step[g]
        plan = Plan(keep={**plan.keep, g: _top(scores[g], width[g])}, sizes=plan.sizes, meta=plan.meta)

    def kept(p: Plan) -> float:  # NOTE: a step over the other count's ceiling breaks the target too
        counts = meter(p)
        return counts[kind] if counts[other] <= ceiling else math.inf

    rounded = sum(len(k) for k in plan.keep.values())
    floor = (1.0 - BAND) * target.value
    plan, _ = _fill(plan, graph, scores, kept, target.value, {**kwargs, "costs": costs[kind]})
    if meter(plan)[kind] < floor:
        # NOTE: steps move out of the groups dearest in the other count per unit of the target's
        dear = sorted(step, key=lambda g: (-costs[other].get(g, 0.0) / max(costs[kind].get(g, 0.0), 1e-12), g))
        plan = _exchanged(plan, graph, scores, kept, (floor, target.value), {**kwargs, "costs": costs[kind]},
                          {g: step[g] for g in dear[:EXCHANGED_GROUPS]})
    if meter(plan)[kind] < floor:
        plan = _topped_up(plan, graph, scores, kept, (floor, target.value), kwargs, costs[kind], movable)
    added = sum(len(k) for k in plan.keep.values()) - rounded
    achieved = {"ratio": ratio, "channels_removed": channels_removed(graph.groups, plan.keep, plan.sizes),
                "filled_channels": added, **meter(plan)}
    if achieved[kind] < floor or achieved[kind] > target.value:
        return None
    return plan, achieved


def _exchanged(plan: Plan, graph: DependencyGraph, scores: Mapping[str, torch.Tensor],
               kept: Callable[[Plan], float], band: tuple[float, float], kwargs: Mapping[str, Any],
               step: Mapping[str, int]) -> Plan:
    """A rounded plan whose fill stopped short of ``band`` (the kept fraction's floor and goal), improved
    by exchanges of whole steps: one step out of one group of ``step`` (group -> its step), then the
    fill (by whole steps, that group held) elsewhere; the exchange that keeps the most of the target
    is taken, while one keeps more, at most :data:`EXCHANGES` times (each tries every group: a fill
    each). The fill stops where the other count's ceiling binds (by hand: VGG-small's rounded plan at
    half the MACs reached 0.471 of them with its parameters at the ceiling); a step moved from a group
    dear in that count to one cheap in it goes on."""
    floor, goal = band
    fixed = dict(kwargs.get("widths") or {})
    best, best_kept = plan, kept(plan)
    for _ in range(EXCHANGES):
        found: tuple[Plan, float] | None = None
        for g in sorted(step):
            width = len(best.keep[g]) - step[g]
            if width < step[g] or g in fixed:
                continue
            shrunk = Plan(keep={**best.keep, g: _top(scores[g], width)}, sizes=best.sizes, meta=best.meta)
            grown, _ = _fill(shrunk, graph, scores, kept, goal, {**kwargs, "widths": {**fixed, g: width}})
            value = kept(grown)
            if best_kept < value <= goal and (found is None or value > found[1]):
                found = (grown, value)
        if found is None:
            break
        best, best_kept = found
        if best_kept >= floor:
            break
    return best


def _topped_up(plan: Plan, graph: DependencyGraph, scores: Mapping[str, torch.Tensor],
               kept: Callable[[Plan], float], band: tuple[float, float], kwargs: Mapping[str, Any],
               costs: Mapping[str, float], movable: Iterable[str]) -> Plan:
    """A rounded plan whose whole steps stop short of ``band`` (floor, goal), grown by single channels
    in one group only: the first, in the fill's order (best channel per unit of budget), that reaches
    the floor. One width off its multiple puts fewer layers off a runtime's channel blocks than all
    exact widths. ``plan`` itself where no single group reaches it."""
    floor, goal = band
    fixed = dict(kwargs.get("widths") or {})
    single = {**kwargs, "round_to": 1, "timings": None, "costs": costs}
    order = fill_candidates(graph, scores, plan, **{**single, "widths": fixed})
    movable = set(movable)
    for g in sorted((g for g in order if g in movable), key=lambda g: (-order[g][0], g)):
        others = {h: len(plan.keep[h]) for h in plan.keep if h != g}
        grown, _ = _fill(plan, graph, scores, kept, goal, {**single, "widths": {**others, **fixed}})
        if kept(grown) >= floor:
            return Plan(keep=grown.keep, sizes=grown.sizes, meta={**grown.meta, "topped_up": g})
    return plan


class _Always:
    """A rounding table that says every rounding pays: the candidate :class:`ModelTimings` times."""

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        return True


_ALWAYS = _Always()


def _faster_rounded(graph: DependencyGraph, plan: Plan, timings: RoundingTable) -> dict[str, int]:
    """Group id -> rounded width, for the groups of ``plan`` that ``timings`` says run faster rounded up."""
    pinned = {}
    for group_id, kept in plan.keep.items():
        group = graph.group(group_id)
        width = kept_width(group, len(kept), "auto", timings)
        if width != len(kept):
            pinned[group_id] = width
    return pinned


def _fill(plan: Plan, graph: DependencyGraph, scores: Mapping[str, torch.Tensor],
          kept: Callable[[Plan], float], goal: float, kwargs: Mapping[str, Any]) -> tuple[Plan, int]:
    """Add back removed channels while ``kept(plan) <= goal``: always the group whose best removed
    channel scores highest per unit of budget (normalised like a global ranking, over
    ``kwargs["costs"]``: the MACs or params one channel costs), one rounding step at a time; a
    group whose next step breaks the target is closed. Returns the plan and the channels added."""
    steps = fill_candidates(graph, scores, plan, **kwargs)
    added = 0
    while steps:
        group_id = max(steps, key=lambda g: (steps[g][0], g))
        _, size = steps[group_id]
        trial = grow(plan, scores, group_id, size)
        if kept(trial) <= goal:
            plan, added = trial, added + size
            nxt = fill_candidates(graph, scores, plan, only=group_id, **kwargs)
            steps.pop(group_id)
            steps.update(nxt)
        else:
            steps.pop(group_id)
    return plan, added


def _confirm(plan_at: Callable[[float], Plan], meter: _Meter, ratio: float, goal: float, steps: int = 4) -> float:
    """The bisection timed each step in two short rounds, so its answer can sit on a lucky reading
    (MobileNetV2 at a 2x target: 0.49 in the search, 0.58 re-measured). Re-measure the answer in
    ``CONFIRM_ROUNDS`` rounds; if it misses, bisect again above it on confirmed readings only."""
    if ratio == 0.0 or meter.confirm(plan_at(ratio)) <= goal:
        return ratio
    lo, hi = ratio, _HIGHEST_RATIO
    for _ in range(steps):
        mid = (lo + hi) / 2
        if meter.confirm(plan_at(mid)) <= goal:
            hi = mid
        else:
            lo = mid
    return hi


def _bisect(plan_at: Callable[..., Plan], kept: Callable[[Plan], float], target: Target,
            graph: DependencyGraph, options: Mapping[str, Any] | None = None) -> float:
    """Smallest ratio whose plan keeps at most ``target.value`` (kept fraction is monotone in ratio).

    ``plan_at(ratio, **overrides)`` allocates with ``options`` (the allocation's keyword arguments)
    overridden; an unreachable target raises a ConfigError naming what holds the model up
    (:func:`_unreachable`)."""
    goal = target.value
    if kept(plan_at(0.0)) <= goal:
        return 0.0
    best = kept(plan_at(_HIGHEST_RATIO))
    if best > goal:
        raise ConfigError(_unreachable(plan_at, kept, target, graph, dict(options or {}), best))
    lo, hi = 0.0, _HIGHEST_RATIO
    for _ in range(_STEPS[target.kind]):
        mid = (lo + hi) / 2
        if kept(plan_at(mid)) <= goal:
            hi = mid
        else:
            lo = mid
    return hi


_SMALLER_ROUND_TO = (16, 8, 4, 2, 1)  # NOTE: the round_to values an unreachable target's message may suggest


def _unreachable(plan_at: Callable[..., Plan], kept: Callable[[Plan], float], target: Target,
                 graph: DependencyGraph, options: dict[str, Any], best: float) -> str:
    """The one-line message of a target no plan meets: what the smallest model keeps, the allocation
    options that hold it up (round_to, min_keep, max_ratio, per-layer widths: each is loosened at the
    highest ratio, and named only where that lets more be cut) with the fix that applies, then the
    layers kept whole (ignored or frozen, else the model's fixed groups) where those do not suffice.

    Measured, not guessed: ``round_to=32`` on groups of 16 and 32 channels keeps every channel, and the
    old advice ("ask for macs >= 1.0, or ignore fewer layers") meant no pruning, with nothing ignored."""
    kind, goal = target.kind, target.value
    sizes = sorted(g.size for g in graph.prunable)
    causes: list[str] = []
    fixes: list[str] = []
    looser: dict[str, Any] = {}

    def at_most(over: Mapping[str, Any]) -> float:
        return kept(plan_at(_HIGHEST_RATIO, **over))

    round_to, min_keep = options.get("round_to", "auto"), options.get("min_keep", 1)
    max_ratio = options.get("max_ratio", 0.9)
    capped = options.get("scope", "local") == "global" or options.get("weights") is not None
    overrides = {k: None for k in ("layer_ratios", "layer_channels", "widths") if options.get(k)}
    checks: dict[str, dict[str, Any]] = {"round_to": {"round_to": 1}} if isinstance(round_to, int) and round_to > 1 \
        else {}
    if isinstance(min_keep, int) and min_keep > 1:
        checks["min_keep"] = {"min_keep": 1}
    if capped and max_ratio < 1.0:
        checks["max_ratio"] = {"max_ratio": 1.0}
    if overrides:
        checks["overrides"] = overrides
    # NOTE: loosened one at a time, until none lets more be cut: an option may bind only once another
    # is loosened (global scope's max_ratio keeps 2 of 16 channels, hiding min_keep=2). Latency is noisy.
    margin = 0.02 if kind == "latency" else 1e-9
    named: list[str] = []
    floor, found = best, True
    while found:
        found = False
        for name in (n for n in checks if n not in named):
            value = at_most({**looser, **checks[name]})
            if value < floor - margin:
                looser.update(checks[name])
                floor, found = value, True
                named.append(name)
    rest = [n for n in checks if n not in named]  # NOTE: these may bind only together (min_keep=2 and round_to=2)
    loosest = {**looser, **{k: v for n in rest for k, v in checks[n].items()}}
    if rest and (value := at_most(loosest)) < floor - margin:
        named += [n for n in rest if at_most({**loosest, **{k: options.get(k) for k in checks[n]}}) > value + margin]
        looser, floor = loosest, value
    for name in (n for n in checks if n in named):
        if name == "round_to":
            full = [s for s in sizes if s <= round_to]  # NOTE: rounded up to round_to, these keep every channel
            widths = "" if not full else f"{full[0]}" if full[0] == full[-1] else f"{full[0]}-{full[-1]}"
            causes.append(f"round_to={round_to} rounds every kept width up to a multiple of {round_to}"
                          + (f", so {len(full)} of the {len(sizes)} prunable groups ({widths} channels) keep all "
                             f"their channels" if full else ""))
            others = {k: v for k, v in looser.items() if k != "round_to"}
            reaches = next((r for r in _SMALLER_ROUND_TO if r < round_to
                            and at_most({**others, "round_to": r}) <= goal), None)
            fixes.append(f"pass a smaller round_to, e.g. round_to={reaches}" if reaches is not None
                         else "pass a smaller round_to (round_to=1 for exact widths)")
        elif name == "min_keep":
            causes.append(f"min_keep={min_keep} keeps at least {min_keep} channels in every group")
            fixes.append("pass a smaller min_keep in options")
        elif name == "max_ratio":
            causes.append(f"max_ratio={max_ratio} keeps at least {1.0 - max_ratio:.0%} of every group")
            fixes.append("pass a larger max_ratio in options (at most 1)")
        else:
            causes.append(f"{'/'.join(overrides)} fix the widths of some groups")
            fixes.append(f"cut those layers more or drop {'/'.join(overrides)}")
    fixed = [g for g in graph.groups if not g.prunable]
    held: dict[str, list[str]] = {}  # NOTE: "ignore"/"freeze" -> the layers it keeps whole
    for reason in dict.fromkeys(r for g in fixed for r in g.reasons):
        if reason.startswith(("ignored: ", "frozen: ")):
            option = "ignore" if reason.startswith("ignored") else "freeze"
            held.setdefault(option, []).append(reason.split(": ", 1)[1].split(" (")[0])
    if held and floor > goal:
        layers = [n for names in held.values() for n in names]
        causes.append(f"{'/'.join(held)} keep{'s' if len(held) == 1 else ''} {len(layers)} "
                      f"layer{'s' if len(layers) != 1 else ''} whole ({', '.join(layers[:3])}"
                      f"{', ...' if len(layers) > 3 else ''})")
        fixes.append(f"{' or '.join(held)} fewer layers")
    elif floor > goal:
        whole = {0: "", 1: "the fixed group keeps all its channels and "}.get(
            len(fixed), f"the {len(fixed)} fixed groups keep all their channels and ")
        causes.append((f"even with those loosened it keeps {floor:.3f}: " if looser else "")
                      + f"{whole}every prunable group keeps at least one channel")
    least = math.ceil(best * 1000) / 1000
    if least < 1.0:  # NOTE: "macs >= 1.0" would mean no pruning: not a fix
        fixes.append(f"ask for {kind} >= {least}")
    head = (f"Target {kind}={goal} cannot be reached: the smallest model these options allow keeps {best:.3f} "
            f"of the dense {kind} ({len(sizes)} prunable groups, {len(fixed)} fixed)")
    fix = " Nothing in this model can be cut toward it." if not fixes else \
        f" Fix: {'; '.join(fixes[:-1])}{'; or ' if len(fixes) > 1 else ''}{fixes[-1]}."
    return f"{head}: {'; '.join(causes)}.{fix}" if causes else f"{head}.{fix}"
