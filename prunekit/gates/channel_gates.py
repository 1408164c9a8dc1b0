"""Learnable gates on ChannelGroups, trained with the loss under a MACs budget, hardened to a Plan.

Where a gate acts: on the *inputs of the consumers* of a group (the next conv's or linear's input
channels), the very weights the structural engine zeroes in its masked model. A closed gate is
therefore exactly a pruned channel, whatever BatchNorm or residual adds lie between producer and
consumer (a gate on a producer's output would be undone by the BatchNorm after it).

The budget: the expected MACs ``c``, the counted MACs of the model cut to the expected open
channels ``E[kept] = sum P(gate open)`` of every gated group (:class:`_MacsModel`: each weight's
MACs follow its cut shape, and the MACs of the ops between activations, attention's ``q k^T`` and
``attn v``, fall with the heads they lose). After every step the gates are projected onto the
budget ``t``: one shift common to every ``log_alpha`` (found by bisection; ``c`` rises with it)
makes ``c = t``, so ``c`` follows ``t`` and stays at it while the loss decides *which* channels stay
open. The Lagrangian ``l1 (c - t) + l2 (c - t)^2`` of Wang, Wohlwend and Lei (2020) and CoFi (Xia
et al. 2022), with multipliers ascended by Adam as the gates are, never settled: the multipliers
wound up while the gates lagged the budget, and the gates' momentum carried ``c`` from 0.5 down to
0.08 and back up to 0.58 on simple_cnn (its one-sided form, to 0.155, where the gates stayed closed).
``t`` can fall linearly from 1 to the target over ``warmup_steps``; in the warm-up ``c`` may stay
under it (the gates start almost open, not fully). ``harden()`` folds the deterministic gate values
into the consumer weights, ranks channels by them globally, and lets the structural engine cut to
the MACs target exactly.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from prunekit._checks import check_entry, positional_inputs
from prunekit.errors import ConfigError, NotFittedError
from prunekit.gates.hard_concrete import HardConcrete
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.fastmeta import fast_result
from prunekit.graph.groups import ChannelGroup, Member, tensor_of
from prunekit._modes import eval_mode
from prunekit.measure.macs import MacsTerms, macs_terms
from prunekit.config import parse_config
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan
from prunekit.structured.target import Target, dense_terms, search

__all__ = ["ChannelGates", "Hardened"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FITTED_PRIVATE = frozenset({"_handles", "_optimizer", "_sites", "_macs", "_current"})
# NOTE: the projection's shifts keep every log_alpha within this of where a gate is surely open or shut
_SHIFT_REACH = 20.0
_BISECTIONS = 50


@dataclass(frozen=True)
class Hardened:
    """What :meth:`ChannelGates.harden` returns: the pruned model, its plan and what it achieved."""

    model: nn.Module
    plan: Plan
    achieved: dict[str, Any]
    open_gates: dict[str, int] = field(default_factory=dict)


def _key(group_id: str) -> str:
    return group_id.replace(".", "__").replace(":", "_")


def _gateable(model: nn.Module, member: Member) -> str | None:
    """None if ``member`` is the input dim of a Linear or ungrouped Conv weight, else why not."""
    module = model.get_submodule(member.module)
    if not member.tensor.endswith(".weight") and member.tensor != "weight":
        return f"'{member.tensor}' is not a layer weight"
    if isinstance(module, nn.Linear) and member.axis == 1:
        return None
    if isinstance(module, _CONV) and module.groups == 1 and member.axis == 1:
        return None
    return f"'{member.module}' ({type(module).__name__}) reads it other than as a Linear or ungrouped Conv input"


class _MacsModel:
    """The counted MACs of a model as a differentiable function of its gated groups' removed channels.

    A weight read whole by its op (a Linear, a Conv, GPT-2's Conv1D) costs its element count times
    the MACs :func:`~prunekit.measure.macs.macs_terms` booked per element, so its MACs follow its cut
    shape exactly (the product of the kept widths of its axes). The other ops' MACs (attention's
    ``q k^T`` and ``attn v``, which read no weight) fall linearly with each group's removed channels,
    at the rate a counted pass of the model with half of that group cut shows (a pass per group,
    skipped when cutting half of every group leaves them unchanged, as in a CNN).
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, groups: Sequence[ChannelGroup],
                 example_inputs: Any) -> None:
        subject, terms, count = _counter(model, example_inputs)
        self.sizes = torch.tensor([float(g.size) for g in groups])
        self._weights(terms, _canonical_names(subject), groups)
        self.dense = terms.flops / 2
        self.rest = self.dense - float(self._weight_macs(torch.zeros(len(groups))))
        self.rates = torch.zeros(len(groups))

        def fewer(halved: Sequence[int]) -> float:
            """How much less the other ops cost with half of the groups ``halved`` cut."""
            removed = torch.zeros(len(groups))
            keep = {}
            for i in halved:
                removed[i] = groups[i].size // 2
                keep[groups[i].id] = tuple(range(groups[i].size - groups[i].size // 2))
            plan = Plan(keep=keep, sizes={groups[i].id: groups[i].size for i in halved})
            macs = count(apply(subject, graph, plan, verify_result=False))
            return self.rest - (macs - float(self._weight_macs(removed)))

        cuttable = [i for i, g in enumerate(groups) if g.size > 1]
        if cuttable and fewer(cuttable) > 0.5:  # NOTE: MACs are counted in halves (FLOPs / 2)
            for i in cuttable:
                self.rates[i] = fewer([i]) / (groups[i].size // 2)

    def _weights(self, terms: MacsTerms, canonical: Mapping[str, str], groups: Sequence[ChannelGroup]) -> None:
        """Index the weights' cut axes: ``axes`` (size, [(group, channels per group channel)]) and, per
        weight, its MACs at full width of its cut axes and the rows of ``axes`` it multiplies."""
        cuts: dict[tuple[str, int], dict[tuple[int, int], tuple[int, int]]] = defaultdict(dict)
        for i, g in enumerate(groups):
            for m in g.members:
                name = canonical.get(m.tensor)
                if name is not None and terms.per_weight.get(name):
                    cuts[(name, m.axis)][(m.start, m.inner)] = (i, m.inner)  # NOTE: a member listed twice counts once
        self.fixed = 0.0  # MACs of the weights no gated group cuts
        factors: list[float] = []
        rows: list[list[int]] = []
        sizes: list[float] = []
        matrix: list[list[float]] = []
        for name, per_element in terms.per_weight.items():
            shape = terms.shapes[name]
            cut_axes = [axis for axis in range(len(shape)) if (name, axis) in cuts]
            factor = per_element / 2 * math.prod(s for axis, s in enumerate(shape) if axis not in cut_axes)
            if not cut_axes:
                self.fixed += factor
                continue
            factors.append(factor)
            rows.append([])
            for axis in cut_axes:
                rows[-1].append(len(sizes))
                sizes.append(float(shape[axis]))
                line = [0.0] * len(groups)
                for i, inner in cuts[(name, axis)].values():
                    line[i] += inner
                matrix.append(line)
        width = max((len(r) for r in rows), default=0)
        self.factors = torch.tensor(factors, dtype=torch.float64)
        self.axis_sizes = torch.tensor(sizes, dtype=torch.float64)
        self.cut_by = torch.tensor(matrix, dtype=torch.float64).reshape(len(sizes), len(groups))
        # NOTE: padded with the index of an appended 1, the neutral width
        self.rows = torch.tensor([r + [len(sizes)] * (width - len(r)) for r in rows], dtype=torch.long)

    def _weight_macs(self, removed: torch.Tensor) -> torch.Tensor:
        widths = (self.axis_sizes - self.cut_by @ removed.double()).clamp_min(0.0)
        widths = torch.cat([widths, widths.new_ones(1)])
        kept = widths[self.rows].prod(dim=1) if len(self.rows) else widths.new_zeros(0)
        return self.fixed + (self.factors * kept).sum()

    def fraction(self, kept: torch.Tensor) -> torch.Tensor:
        """The MACs kept, as a fraction of the dense count, with ``kept[i]`` channels of group ``i`` kept."""
        removed = self.sizes - kept
        macs = self._weight_macs(removed) + self.rest - (self.rates.double() * removed.double()).sum()
        return (macs / self.dense).float()


def _counter(model: nn.Module, example_inputs: Any) -> tuple[nn.Module, MacsTerms, Callable[[nn.Module], float]]:
    """The model to cut and count (its meta-device twin where its forward runs there, else itself),
    its dense count and how to count a cut copy of it (MACs as FLOPs / 2)."""
    try:
        twin, inputs, terms = dense_terms(model, example_inputs)
        return twin, terms, lambda cut: macs_terms(cut, inputs, shapes_only=fast_result).flops / 2
    except Exception:  # noqa: BLE001  (the forward needs real values: count the model itself)
        return model, macs_terms(model, example_inputs), lambda cut: macs_terms(cut, example_inputs).flops / 2


def _canonical_names(model: nn.Module) -> dict[str, str]:
    """Every name a parameter goes by (tied ones have several) -> the one ``named_parameters`` gives."""
    first: dict[int, str] = {}
    return {name: first.setdefault(id(p), name) for name, p in model.named_parameters(remove_duplicate=False)}


class ChannelGates:
    """Hard Concrete gates on a model's prunable channel groups, as a training-loop callback.

    Args:
        target: the MACs budget, a :class:`~prunekit.structured.Target` (or its mapping) of kind
            ``macs``: the fraction of the dense MACs to keep, e.g. ``Target(macs=0.5)``.
        ignore: module names whose channels are not gated (as for structural pruning).
        init_log_alpha: start value of every gate's ``log_alpha`` (3.0: fully open in eval).
        init_importance: a data-free importance (``"l2"``, ``"l1"``, ``"bn_scale"``, ...) that sets
            each gate's start to ``init_log_alpha * score / mean score of its group``: the budget's
            pressure then closes the weakest channels first and training only has to correct the
            ranking, instead of discovering it from all-equal gates in a short fine-tune.
        warmup_steps: optimizer steps over which the budget falls linearly from 1 to the target.
        round_to: kept widths at :meth:`harden`, as for :func:`~prunekit.structured.allocate`.
        lr: learning rate of the gates' own Adam optimizer (the log-alphas, no weight
            decay), stepped by :meth:`step`. Gate gradients are tiny next to weight gradients, so
            plain SGD at the weights' learning rate (and their weight decay pulling every gate to
            half open) barely moves them in a short fine-tune; Adam's steps do not depend on the
            gradient's scale. ``None`` hands :meth:`parameters` to the training optimizer instead.

    ``__init__`` only stores the arguments; :meth:`fit` checks them, traces the model and puts the
    gates on it (hooks until :meth:`detach` or :meth:`harden`; the model's weights are trained by
    the caller's loop as usual). Learned attributes end in ``_`` (``graph_``, ``groups_``,
    ``gates_``, ``skipped_``, ``steps_``).

    Use: ``gates = ChannelGates(Target(macs=0.5)).fit(model, x)``; ``train(model, data, cfg,
    callbacks=[gates])`` (or add ``gates.penalty()`` to your loss and call ``gates.step()`` after
    your optimizer's step); then ``gates.harden().model``. Single process only: under DDP the gate
    parameters would not be averaged across ranks, so ``train`` refuses the gates under torchrun.
    """

    single_process: ClassVar[bool] = True  # NOTE: read by prunekit.train, which refuses it with several ranks

    def __init__(self, target: Target | Mapping[str, Any], *, ignore: Iterable[str] = (),
                 init_log_alpha: float = 3.0, warmup_steps: int = 0, round_to: int | str = "auto",
                 lr: float | None = 0.1, init_importance: str | None = None) -> None:
        self.target = target
        self.ignore = ignore
        self.init_log_alpha = init_log_alpha
        self.warmup_steps = warmup_steps
        self.round_to = round_to
        self.lr = lr
        self.init_importance = init_importance

    def validate_params(self) -> Target:
        """Check the arguments (no model needed); returns the parsed target."""
        if isinstance(self.target, (int, float)):
            raise ConfigError(f"ChannelGates: 'target' must be a Target of kind macs; got {self.target!r}. "
                              f"Pass e.g. Target(macs={self.target}) or {{'macs': {self.target}}}.")
        target = parse_config(Target, self.target)
        if target.kind != "macs":
            raise ConfigError(f"ChannelGates: the gates' budget is a MACs target; got Target({target.kind}="
                              f"{target.value}). Pass e.g. Target(macs=0.5) for half the dense MACs.")
        if self.warmup_steps < 0:
            raise ConfigError(f"ChannelGates: warmup_steps must be >= 0; got {self.warmup_steps}.")
        if self.lr is not None and not float(self.lr) > 0:
            raise ConfigError(f"ChannelGates: lr must be > 0 (or None to train the gates with the model's "
                              f"optimizer); got {self.lr}. Pass e.g. 0.1.")
        return target

    def fit(self, model: nn.Module, example_inputs: Any, *, graph: DependencyGraph | None = None) -> ChannelGates:
        """Trace ``model`` (or take its already traced ``graph``), choose the groups, put gates on
        them and install the hooks; ``example_inputs`` is an input batch, for tracing and MACs (a
        tensor, a tuple of positional inputs, or a dict keyed by ``forward``'s parameter names).
        Fitting again first removes the hooks of the earlier fit.
        The model only runs in eval mode under ``no_grad``: its weights, buffers (BatchNorm
        statistics) and every module's train/eval mode are left as they were."""
        target = self.validate_params()
        check_entry(model, example_inputs, "ChannelGates.fit")
        # NOTE: as StructuredPruner does: verification, MACs and harden() pass example inputs positionally
        example_inputs = positional_inputs(model, example_inputs, "ChannelGates.fit")
        if self.__dict__.get("_handles"):  # NOTE: fitted before: its hooks would be traced, then left behind for good
            self.detach()
        self.model_, self.example_inputs_, self.target_ = model, example_inputs, target
        if graph is None:
            with eval_mode(model):  # NOTE: trace restores model.train(mode), switching a frozen submodule
                graph = DependencyGraph.trace(model, example_inputs, ignore=tuple(self.ignore))
        self.graph_ = graph
        self.skipped_: dict[str, str] = {}
        self.groups_: list[ChannelGroup] = self._choose_groups()
        self.gates_ = nn.ModuleDict({_key(g.id): HardConcrete(g.size, init_log_alpha=self.init_log_alpha)
                                     for g in self.groups_})
        if self.init_importance is not None:
            self._init_from(self.init_importance, float(self.init_log_alpha))
        self._macs = _MacsModel(model, graph, self.groups_, example_inputs)
        self._check_reachable(target)
        self.steps_ = 0
        self._optimizer = None if self.lr is None else torch.optim.Adam(list(self.gate_parameters()),
                                                                        lr=float(self.lr))
        self._sites = self._consumer_sites()
        self._current: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.attach()
        return self

    def _check_reachable(self, target: Target) -> None:
        """Refuse a target under the MACs left with every gate closed (one channel kept per group)."""
        lowest = float(self._macs.fraction(torch.ones(len(self.groups_))))
        if target.value < lowest:
            skipped = f"; {len(self.skipped_)} groups carry no gate (skipped_ says why)" if self.skipped_ else ""
            raise ConfigError(f"ChannelGates: Target(macs={target.value}) cannot be met: with every gate closed (one "
                              f"channel kept per group) the model keeps {lowest:.4g} of its MACs, in layers no gate "
                              f"reaches{skipped}. Ask for macs >= {math.ceil(lowest * 1000) / 1000}, or gate more of "
                              f"the model (ignore fewer modules).")

    def _gate(self, group_id: str) -> HardConcrete:
        return cast(HardConcrete, self.gates_[_key(group_id)])

    def __getattr__(self, name: str) -> Any:
        # NOTE: only reached for missing attributes; learned ones get the "not fitted" message.
        if (name.endswith("_") and not name.startswith("_")) or name in _FITTED_PRIVATE:
            raise NotFittedError(f"ChannelGates: '{name}' is not set because the gates are not fitted yet. "
                                 f"Call gates.fit(model, example_inputs) first.")
        raise AttributeError(name)

    def _init_from(self, importance: str, scale: float) -> None:
        """Start each gate at ``scale * score / group mean`` of a data-free importance."""
        from prunekit.importance import IMPORTANCE, score

        if IMPORTANCE.get(importance).meta.get("needs_data"):
            raise ConfigError(f"ChannelGates: init_importance='{importance}' needs calibration data; use a "
                              f"data-free importance such as 'l2', 'l1' or 'bn_scale'.")
        scores = score(self.graph_, self.model_, importance)
        with torch.no_grad():
            for g in self.groups_:
                values = scores[g.id].float()
                self._gate(g.id).log_alpha.copy_(scale * values / values.mean().clamp_min(1e-12))

    # -- which groups get gates --------------------------------------------------------------
    def _choose_groups(self) -> list[ChannelGroup]:
        chosen = []
        for group in self.graph_.prunable:
            consumers = group.by_role("consumer")
            reason = None
            if not group.exact:
                reason = "its channels pass through an op that mixes them (LayerNorm, softmax)"
            elif not consumers:
                reason = "no layer weight reads these channels"
            else:
                reason = next((r for r in (_gateable(self.model_, m) for m in consumers) if r), None)
            if reason is None:
                chosen.append(group)
            else:
                self.skipped_[group.id] = reason
        chosen = self._called(chosen)
        if not chosen:
            raise ConfigError(f"ChannelGates: no group of this model can carry a gate ({len(self.skipped_)} "
                              f"skipped; e.g. {next(iter(self.skipped_.items()), ('-', '-'))}). Gates need "
                              f"channels read by nn.Linear or ungrouped nn.Conv modules.")
        return chosen

    def _called(self, groups: list[ChannelGroup]) -> list[ChannelGroup]:
        """Drop groups whose consumer module is never *called* (weights used functionally)."""
        names = {m.module for g in groups for m in g.by_role("consumer")}
        seen: set[str] = set()
        handles = [self.model_.get_submodule(n).register_forward_pre_hook(
            lambda module, args, n=n: seen.add(n)) for n in names]
        try:
            with eval_mode(self.model_), torch.no_grad():  # NOTE: train mode would update BatchNorm statistics
                _call(self.model_, self.example_inputs_)
        finally:
            for h in handles:
                h.remove()
        kept = []
        for g in groups:
            missing = [m.module for m in g.by_role("consumer") if m.module not in seen]
            if missing:
                self.skipped_[g.id] = f"'{missing[0]}' is not called as a module (its weight is used functionally)"
            else:
                kept.append(g)
        return kept

    def _consumer_sites(self) -> dict[str, list[tuple[str, Member]]]:
        sites: dict[str, list[tuple[str, Member]]] = defaultdict(list)
        for g in self.groups_:
            for m in g.by_role("consumer"):
                sites[m.module].append((g.id, m))
        return dict(sites)

    # -- hooks ------------------------------------------------------------------------------
    def attach(self) -> None:
        """Install the hooks (done by ``__init__``; again after :meth:`detach`)."""
        if self._handles:
            return
        self._handles.append(self.model_.register_forward_pre_hook(self._sample))
        for name in self._sites:
            module = self.model_.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._gate_input(name, module)))

    def detach(self) -> None:
        """Remove every hook: the model computes as if it had no gates."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._current.clear()

    def _sample(self, module: nn.Module, args: Any) -> None:
        """One draw of every gate per forward pass, shared by all consumers of a group."""
        train = self.model_.training
        self._current = {g.id: (self._gate(g.id).train(train))() for g in self.groups_}

    def _gate_input(self, name: str, module: nn.Module) -> Any:
        axis = -1 if isinstance(module, nn.Linear) else 1
        sites = self._sites[name]

        def hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            width = x.shape[axis]
            scale = torch.ones(width, dtype=x.dtype, device=x.device)
            for group_id, member in sites:
                z = self._current[group_id].to(x.dtype)
                size = z.numel()
                index = member.indices(torch.arange(size)).to(x.device)
                scale = scale.index_copy(0, index, z.repeat_interleave(member.inner).to(x.device))
            shape = [1] * x.dim()
            shape[axis] = width
            return (x * scale.view(shape), *args[1:])

        return hook

    # -- the budget -------------------------------------------------------------------------
    def expected_macs(self, shift: float = 0.0) -> torch.Tensor:
        """Expected fraction of the dense MACs kept under the current gate probabilities (with every
        ``log_alpha`` moved by ``shift``): the counted MACs of the model cut to the expected open channels."""
        kept = torch.stack([self._gate(g.id).open_probability(shift).sum() for g in self.groups_])
        return self._macs.fraction(kept)

    def budget(self) -> float:
        """The target fraction at this step (falls from 1 to the target's over the warm-up)."""
        goal = self.target_.value
        if self.warmup_steps == 0:
            return goal
        progress = min(1.0, self.steps_ / self.warmup_steps)
        return 1.0 - (1.0 - goal) * progress

    def penalty(self) -> torch.Tensor:
        """Zero: the budget is kept by :meth:`step`'s projection, not by a loss term; kept so that
        loops adding it to their loss (as the Lagrangian form asked) run unchanged."""
        return next(self.gates_.parameters()).new_zeros(())

    def _project(self) -> None:
        """Shift every ``log_alpha`` by one amount so that the expected MACs equal the budget (in the
        warm-up, only when they are over it). ``c`` rises with the shift, so bisection finds it."""
        goal = self.budget()
        with torch.no_grad():
            now = float(self.expected_macs())
            if now <= goal and self.steps_ < self.warmup_steps:
                return
            alphas = torch.cat([self._gate(g.id).log_alpha for g in self.groups_])
            low, high = -_SHIFT_REACH - float(alphas.max()), _SHIFT_REACH - float(alphas.min())
            for _ in range(_BISECTIONS):
                middle = (low + high) / 2
                low, high = (low, middle) if float(self.expected_macs(middle)) > goal else (middle, high)
            for g in self.groups_:
                self._gate(g.id).log_alpha.add_((low + high) / 2)

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        """The gates' ``log_alpha``s."""
        yield from self.gates_.parameters()

    def parameters(self) -> Iterator[nn.Parameter]:
        """What joins the training optimizer (``fit`` asks): the gate parameters when ``lr`` is
        None, else nothing (the gates' own optimizer trains them in :meth:`step`)."""
        if self._optimizer is None:
            yield from self.gate_parameters()

    # -- training-loop callback -------------------------------------------------------------
    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        """:meth:`step`."""
        self.step()

    def step(self) -> None:
        """One step of the gates' optimizer (if they have their own) and of the budget's warm-up,
        then the projection onto the budget; call it after ``optimizer.step()`` in your own loop."""
        if self._optimizer is not None:
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
        self.steps_ += 1
        self._project()

    def state_dict(self) -> dict[str, Any]:
        """Gate parameters, the gates' optimizer and the step count (checkpointed by ``prunekit.train``)."""
        state: dict[str, Any] = {"gates": self.gates_.state_dict(), "steps": self.steps_}
        if self._optimizer is not None:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.gates_.load_state_dict(state["gates"])
        self.steps_ = int(state["steps"])
        if self._optimizer is not None and "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])

    def open_gates(self) -> dict[str, int]:
        """Group id -> how many of its gates are open (deterministic value > 0)."""
        return {g.id: int((self._gate(g.id).deterministic() > 0).sum()) for g in self.groups_}

    # -- to a plain, smaller model ------------------------------------------------------------
    def harden(self, *, verify_result: bool = True) -> Hardened:
        """Fold the gates into the weights and cut to the MACs target; ends gating (hooks removed).

        Channels are ranked globally by their deterministic gate value (ties: ``log_alpha``); the
        structural engine's search removes the lowest until the MACs target is met, applies the
        plan to a folded copy and verifies it. ``self.model_`` itself is left unchanged.
        """
        self.detach()
        try:
            hardened = self._hardened(verify_result)
        except BaseException:
            self.attach()  # NOTE: a failed harden leaves the model gated, as it was, to retry or train on
            raise
        return hardened

    def _hardened(self, verify_result: bool) -> Hardened:
        folded = copy.deepcopy(self.model_)
        scores: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for g in self.groups_:
                gate = self._gate(g.id)
                z = gate.deterministic()
                scores[g.id] = z + 1e-3 * torch.sigmoid(gate.log_alpha)
                for m in g.by_role("consumer"):
                    t = tensor_of(folded, m.tensor)
                    scale = torch.ones(t.shape[m.axis], dtype=t.dtype)
                    scale[m.indices(torch.arange(g.size))] = z.repeat_interleave(m.inner).to(t.dtype)
                    shape = [1] * t.dim()
                    shape[m.axis] = -1
                    t.mul_(scale.view(shape))
        open_gates = self.open_gates()
        plan, achieved = search(folded, self.graph_, scores, self.target_,
                                allocate_kwargs={"scope": "global", "max_ratio": 1.0, "normalize": False,
                                                 "round_to": self.round_to},
                                example_inputs=self.example_inputs_, verify_result=False)
        pruned = apply(folded, self.graph_, plan, example_inputs=self.example_inputs_, verify_result=verify_result)
        return Hardened(model=pruned, plan=plan, achieved=achieved, open_gates=open_gates)


def _call(model: nn.Module, inputs: Any) -> Any:
    """``model`` on example inputs as :func:`positional_inputs` leaves them: a tuple is the positional
    inputs, anything else (a tensor, a dict ``forward`` takes whole) the one input."""
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)
