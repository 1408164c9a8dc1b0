"""StructuredPruner: trace, score, allocate against a Target, then apply, in scikit-learn's shape.

``__init__`` only stores its arguments; ``fit`` validates them, traces the model and finds the plan
(``graph_``, ``scores_``, ``plan_``, ``achieved_``) without changing the model; ``transform`` applies
the plan to a copy and verifies it. ``get_params()`` is the recipe stage: plain data that survives
a YAML round trip and rebuilds an equal pruner.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from prunekit._checks import check_entry, positional_inputs
from prunekit.errors import ConfigError, NotFittedError
from prunekit.graph.dependency import DependencyGraph
from prunekit.importance import score
from prunekit.importance.stats import LossFn
from prunekit._options import OneLineErrors
from prunekit.config import parse_config
from prunekit.structured.allocate import valid_round_to
from prunekit.structured.apply import VerificationError, apply
from prunekit.structured.fallback import cause, plan_without_blamed
from prunekit.structured.plan import Plan
from prunekit.structured.model_timing import ModelTimings
from prunekit.structured.rounding import LayerTimings, RoundingTable, TimingTable
from prunekit.structured.target import DenseCount, Target, in_params, search, with_counts

__all__ = ["StructuredPruner", "PrunerOptions"]


class PrunerOptions(BaseModel, metaclass=OneLineErrors):
    """Rare options of :class:`StructuredPruner` (the ``options`` key of the recipe stage)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layer_ratios: dict[str, float] = Field(
        default_factory=dict, description="module -> fraction of its output channels to remove")
    layer_channels: dict[str, int] = Field(
        default_factory=dict, description="module -> number of its output channels to remove")
    max_ratio: float = Field(0.9, gt=0, le=1, description="most any group loses (global scope)")
    min_keep: int = Field(1, ge=1, description="fewest channels any group keeps")
    cost: Literal["none", "latency"] = Field(
        "none", description="'latency': cut more where time per MAC is high (layers timed on this "
                            "machine at cost_batch_size; prunekit.structured.cost), so a MACs or "
                            "params target buys more speed")
    cost_batch_size: int = Field(1, ge=1, description="batch size at which cost='latency' (and round_to='auto') "
                                                      "times the layers")
    backend: Literal["torch", "torch-fused", "onnxruntime", "onnxruntime-int8"] = Field(
        "torch", description="the runtime round_to='auto' times on: a group is rounded up only where "
                             "that is faster there (torch: each group's layers timed alone; onnxruntime: the "
                             "whole pruned model, exact widths against rounded, since its blocked layouts "
                             "make speed depend on how layers meet; onnxruntime-int8: the same, each "
                             "candidate quantised to static int8 as prunekit quantize ships it)")
    timings: str | None = Field(
        None, description="a JSON rounding table (prunekit.structured.rounding.TimingTable) that round_to='auto' "
                          "follows instead of timing the layers")


def _is_int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _names(value: Iterable[str] | None) -> tuple[str, ...]:
    """Module names from an ``ignore`` or ``freeze`` argument; None means none (as ``options=None``
    means the defaults)."""
    return () if value is None else tuple(value)


def _are_names(value: Any) -> bool:
    return value is None or (isinstance(value, Iterable) and not isinstance(value, str)
                             and all(isinstance(n, str) for n in value))


def _is_importance(value: Any) -> bool:
    from prunekit.importance import IMPORTANCE

    if isinstance(value, str):
        IMPORTANCE.get(value)  # NOTE: raises UnknownNameError with a "did you mean".
        return True
    return False


# NOTE: name -> (check, what is expected, what to do); validated in fit, never in __init__.
_CONSTRAINTS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "importance": (_is_importance, "an importance name", "Pass e.g. 'l2' or 'l1'."),
    "scope": (lambda v: v in ("local", "global"), "'local' or 'global'",
              "Use 'local' (same ratio per group) or 'global' (one ranking over all groups)."),
    "round_to": (valid_round_to, "'auto' or an int >= 1",
                 "Pass e.g. 8 to keep widths multiples of 8, 1 for exact widths, or 'auto'."),
    "ignore": (_are_names, "a list of module names", "Pass e.g. ['conv1'], not a bare string."),
    "freeze": (_are_names, "a list of module names", "Pass e.g. ['fc'], not a bare string."),
    "steps": (_is_int(1), "an int >= 1", "Pass the number of pruning steps, e.g. 1."),
    "seed": (_is_int(0), "an int >= 0", "Pass e.g. 0."),
}


def _rounding_table(model: nn.Module, graph: DependencyGraph, example_inputs: Any,
                    options: PrunerOptions, terms: DenseCount) -> RoundingTable:
    if options.timings is not None:
        return TimingTable.load(options.timings)
    if options.backend in ("onnxruntime", "onnxruntime-int8"):
        # NOTE: ONNX Runtime's speed depends on how layers meet (blocked layouts), not on layers alone.
        return ModelTimings(model, graph, example_inputs, backend=options.backend,
                            batch_size=options.cost_batch_size)
    # NOTE: the layer shapes are asked for only when a group's width is not a multiple already
    return LayerTimings(model, graph, example_inputs, backend=options.backend, batch_size=options.cost_batch_size,
                        shapes=terms.shapes)


class StructuredPruner:
    """Remove whole channels until ``target`` is met.

    Args:
        target: a :class:`Target` or its mapping, e.g. ``{"macs": 0.5}`` (keep half the MACs) or
            ``{"ratio": 0.3}`` (remove 30 % of each group's channels).
        importance: how channels are scored, a name from ``prunekit.importance.IMPORTANCE``.
        scope: ``local`` (every group cut alike) or ``global`` (one ranking over all groups).
        round_to: kept widths are rounded up to a multiple of this; ``"auto"`` follows
            ``allocate.AUTO_RULE``: a group is rounded up (to 16 or 8) only where its layers, timed
            on ``options.backend`` (or read from ``options.timings``), run faster so.
        ignore: module names whose outputs are kept whole (their input channels may still be cut,
            as Torch-Pruning does for a classifier); None: none.
        freeze: module names whose channels are never cut, inputs or outputs; None: none.
        steps: prune in this many steps, re-tracing and re-scoring the smaller model each time.
        seed: for random importance.
        options: :class:`PrunerOptions` or its mapping (per-layer ratios/counts, caps).
    """

    def __init__(self, target: Target | Mapping[str, Any], *, importance: str = "l2",
                 scope: str = "local", round_to: int | str = "auto", ignore: Iterable[str] | None = (),
                 steps: int = 1, seed: int = 0,
                 options: PrunerOptions | Mapping[str, Any] | None = None,
                 freeze: Iterable[str] | None = ()) -> None:
        self.target = target
        self.importance = importance
        self.scope = scope
        self.round_to = round_to
        self.ignore = ignore
        self.steps = steps
        self.seed = seed
        self.options = options
        self.freeze = freeze

    def get_params(self) -> dict[str, Any]:
        """The recipe stage: plain data; ``StructuredPruner(**get_params())`` is an equal pruner."""
        target = self.target.to_dict() if isinstance(self.target, Target) else dict(self.target)
        options = self.options.model_dump() if isinstance(self.options, PrunerOptions) else self.options
        return {"target": target, "importance": self.importance, "scope": self.scope,
                "round_to": self.round_to, "ignore": list(_names(self.ignore)), "steps": self.steps,
                "seed": self.seed, "options": dict(options) if options is not None else None,
                "freeze": list(_names(self.freeze))}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StructuredPruner) and self.get_params() == other.get_params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"StructuredPruner({args})"

    def validate_params(self) -> tuple[Target, PrunerOptions]:
        """Check every parameter against the constraints table; ``fit`` calls this first."""
        for name, (check, expected, hint) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not check(value):
                raise ConfigError(f"StructuredPruner: '{name}' must be {expected}; got {value!r}. {hint}")
        if isinstance(self.target, (int, float)):
            raise ConfigError(f"StructuredPruner: 'target' must be a Target or a mapping; got "
                              f"{self.target!r}. Pass e.g. {{'macs': 0.5}} or {{'ratio': {self.target}}}.")
        if not isinstance(self.target, (Target, Mapping)):
            raise ConfigError(f"StructuredPruner: 'target' must be a Target or a mapping; got "
                              f"{type(self.target).__name__} {self.target!r:.60}. Pass e.g. {{'macs': 0.5}} "
                              f"(keep half the MACs) or Target(ratio=0.3).")
        target = parse_config(Target, self.target)
        options = parse_config(PrunerOptions, self.options or {})
        return target, options

    def _meetable(self, model: nn.Module) -> tuple[Target, PrunerOptions]:
        """:meth:`validate_params`, with a size budget as the params target it means for ``model``."""
        target, options = self.validate_params()
        return in_params(target, model), options

    def allocate_kwargs(self, options: PrunerOptions | None = None) -> dict[str, Any]:
        """The keyword arguments this pruner passes to :func:`~prunekit.structured.allocate`."""
        options = options or parse_config(PrunerOptions, self.options or {})
        return {"scope": self.scope, "round_to": self.round_to, "min_keep": options.min_keep,
                "max_ratio": options.max_ratio, "layer_ratios": options.layer_ratios,
                "layer_channels": options.layer_channels,
                "meta": {"importance": self.importance, "pruner": self.get_params()}}

    def fit(self, model: nn.Module, example_inputs: Any,
            batches: Iterable[Any] | None = None, loss_fn: LossFn | None = None) -> StructuredPruner:
        """Trace ``model``, score its channels and find the plan meeting the target; ``model`` is unchanged.
        ``batches``: calibration data for the criteria that need it (``(inputs, labels)`` pairs);
        ``loss_fn``: ``(output, labels) -> loss`` for the gradient criteria (default: cross-entropy).

        Sets ``graph_``, ``scores_``, ``plan_`` (against this model's graph) and ``achieved_``
        (what the plan reaches: kept fractions of MACs and params, the ratio used).
        """
        check_entry(model, example_inputs, "StructuredPruner.fit")
        example_inputs = positional_inputs(model, example_inputs, "StructuredPruner.fit")
        target, options = self._meetable(model)
        batches = list(batches) if batches is not None else None
        graph = DependencyGraph.trace(model, example_inputs, ignore=_names(self.ignore), freeze=_names(self.freeze))
        if not graph.prunable and graph.groups:
            reasons = list(dict.fromkeys(r for g in graph.groups for r in g.reasons))
            warnings.warn(f"StructuredPruner: nothing in {type(model).__name__} can be cut ({'; '.join(reasons[:3])}"
                          f"{'; ...' if len(reasons) > 3 else ''}); the model is returned as it is. "
                          f"graph_.summary() lists every group and why it is kept.", stacklevel=2)
        scores = score(graph, model, self.importance, batches=batches, seed=self.seed, loss_fn=loss_fn)
        if self.steps == 1:
            plan, achieved, counts = self._plan(model, graph, scores, target, options, example_inputs)
        else:
            from prunekit.structured.iterative import plan_iteratively

            plan, achieved = plan_iteratively(model, example_inputs, self, graph, batches=batches, loss_fn=loss_fn)
            counts = None
        self.graph_, self.scores_, self.plan_, self._achieved = graph, scores, plan, achieved
        self._counts = counts
        self.example_inputs_ = example_inputs
        self._shapes = _shapes(model)
        return self

    def _plan(self, model: nn.Module, graph: DependencyGraph, scores: Any, target: Target, options: PrunerOptions,
              example_inputs: Any) -> tuple[Plan, dict[str, Any], tuple[Any, ...] | None]:
        """The one-step plan meeting ``target`` on ``graph``, what it achieves, and what ``achieved_``
        counts when first read (None: counted already)."""
        counts: tuple[Any, ...] | None = None
        kwargs = self.allocate_kwargs(options)
        terms = DenseCount(model, example_inputs, target)
        if self.round_to == "auto":
            kwargs["timings"] = _rounding_table(model, graph, example_inputs, options, terms)
        if options.cost == "latency":
            from prunekit.structured.cost import latency_weights

            kwargs["weights"] = latency_weights(model, graph, example_inputs, batch_size=options.cost_batch_size)
        # NOTE: transform verifies the model it returns; verifying here too cost a copy and two forwards.
        # A ratio plan is allocated without counting; its MACs and params are counted when read.
        plan, achieved = search(model, graph, scores, target, example_inputs=example_inputs,
                                allocate_kwargs=kwargs, verify_result=False, terms=terms,
                                counted=target.kind != "ratio")
        if "macs" not in achieved:
            counts = (model, graph, plan, target, example_inputs, terms)  # NOTE: with_counts' arguments
        return plan, achieved, counts

    @property
    def achieved_(self) -> dict[str, Any]:
        """What the plan reaches: kept fractions of MACs and params (and their counts), the ratio used.

        For a ``ratio`` target the counts are made on first read, on the shapes-only twin taken at
        ``fit`` (a model that needs real values is measured as it is then)."""
        achieved: dict[str, Any] = self.__dict__.get("_achieved")  # type: ignore[assignment]
        if achieved is None:
            raise AttributeError("achieved_")  # NOTE: __getattr__ turns this into NotFittedError
        pending = self.__dict__.get("_counts")
        if pending is not None:
            achieved = with_counts(achieved, *pending)
            self._achieved, self._counts = achieved, None
        return achieved

    def transform(self, model: nn.Module) -> nn.Module:
        """A new, smaller module with ``plan_`` applied and verified; ``model`` is never changed.

        If verification refuses the cut, the groups to blame are found, kept whole (with a
        warning that names them) and the target is met with the others (``prunekit.structured.fallback``);
        ``graph_``, ``plan_`` and ``achieved_`` then describe what was done. Nothing to blame, or
        too much: the error is raised.
        """
        plan: Plan = self.plan_
        _check_same_model(model, self.__dict__.get("_shapes"))
        try:
            return apply(model, self.graph_, plan, example_inputs=self.example_inputs_, verify_result=True)
        except VerificationError as error:
            if self.steps != 1:
                raise
            target, options = self._meetable(model)
            found = plan_without_blamed(
                model, self.graph_, plan, self.example_inputs_, error,
                lambda graph: self._plan(model, graph, self.scores_, target, options, self.example_inputs_))
            if found is None:
                raise
            graph, (plan, achieved, counts), blamed = found
            warnings.warn(f"StructuredPruner: cutting {', '.join(blamed)} failed verification ({cause(error)}); "
                          f"{'that group is' if len(blamed) == 1 else 'those groups are'} kept whole and the "
                          f"target is met with the others. Please report the model: prunekit missed a "
                          f"dependency there.", stacklevel=2)
            self.graph_, self.plan_, self._achieved, self._counts = graph, plan, achieved, counts
            return apply(model, graph, plan, example_inputs=self.example_inputs_, verify_result=True)

    def fit_transform(self, model: nn.Module, example_inputs: Any,
                      batches: Iterable[Any] | None = None, loss_fn: LossFn | None = None) -> nn.Module:
        """``fit`` then ``transform`` the same model."""
        return self.fit(model, example_inputs, batches, loss_fn).transform(model)

    def __getattr__(self, name: str) -> Any:
        # NOTE: only reached for missing attributes; learned ones get the "not fitted" message.
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(f"StructuredPruner: '{name}' is not set because this pruner is not "
                                 f"fitted yet. Call pruner.fit(model, example_inputs) first.")
        raise AttributeError(name)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape by name: what a plan made for ``model`` slices (buffers are left out:
    a forward may grow a cache; lazy parameters too: their first forward shapes them)."""
    from torch.nn.parameter import is_lazy

    return {name: tuple(t.shape) for name, t in model.named_parameters() if not is_lazy(t)}


def _check_same_model(model: nn.Module, fitted: dict[str, tuple[int, ...]] | None) -> None:
    """Refuse, in one line, to transform a model other than the one ``fit`` planned for."""
    if fitted is None:
        return
    mine = _shapes(model)
    if mine == fitted:
        return
    missing = sorted(fitted.keys() - mine.keys())
    extra = sorted(mine.keys() - fitted.keys())
    resized = sorted(k for k in fitted.keys() & mine.keys() if fitted[k] != mine[k])
    what = (f"'{missing[0]}' is missing" if missing else f"'{extra[0]}' is new" if extra else
            f"'{resized[0]}' has shape {mine[resized[0]]}, not {fitted[resized[0]]}")
    raise ConfigError(f"StructuredPruner.transform: this {type(model).__name__} is not the model the pruner was "
                      f"fitted on ({what}). Call fit(model, example_inputs) with this model first, or fit_transform.")

