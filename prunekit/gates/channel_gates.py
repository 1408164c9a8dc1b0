"""Learnable gates on ChannelGroups, trained with the loss towards a MACs budget, hardened to a Plan.

Where a gate acts: on the *inputs of the consumers* of a group (the next conv's or linear's input
channels), the very weights the structural engine zeroes in its masked model. A closed gate is
therefore exactly a pruned channel, whatever BatchNorm or residual adds lie between producer and
consumer (a gate on a producer's output would be undone by the BatchNorm after it).

The budget: the expected MACs, ``E[MACs] = sum_layers MACs * E[kept in]/in * E[kept out]/out``
with ``E[kept] = sum P(gate open)``, enters a Lagrangian ``l1 * g + l2 * g^2`` (Wang, Wohlwend and
Lei 2020; CoFi, Xia et al. 2022) whose multipliers are trained by gradient *ascent*, so the
constraint is met rather than traded off. The constraint is the inequality ``c <= t``, so ``g`` is
the excess ``max(c - t, 0)``: the equality form ``g = c - t`` kept pushing after the budget was met
(its multiplier's momentum) and left ResNet-20's expected MACs at 0.21 for a 0.25 target, training
a smaller network than allowed; with the excess, ``c`` follows ``t`` and stays at it. ``t`` can fall
linearly from 1 to the target over ``warmup_steps``. ``harden()`` folds the deterministic gate
values into the consumer weights, ranks channels by them globally, and lets the structural engine
cut to the MACs target exactly.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from prunekit.errors import ConfigError, NotFittedError
from prunekit.gates.hard_concrete import HardConcrete
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import ChannelGroup, Member, tensor_of
from prunekit._modes import eval_mode
from prunekit.measure.macs import macs_by_module
from prunekit.config import parse_config
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan
from prunekit.structured.target import Target, search

__all__ = ["ChannelGates", "Hardened"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FITTED_PRIVATE = frozenset({"_handles", "_optimizer", "_sites", "_shapes", "_macs", "_fixed_macs",
                             "_dense_macs", "_current"})


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
        lr: learning rate of the gates' own Adam optimizer (log-alphas and multipliers, no weight
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
        them and install the hooks; ``example_inputs`` is an input batch, for tracing and MACs.
        Fitting again first removes the hooks of the earlier fit.
        The model only runs in eval mode under ``no_grad``: its weights, buffers (BatchNorm
        statistics) and every module's train/eval mode are left as they were."""
        target = self.validate_params()
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
        self.multipliers_ = nn.Parameter(torch.zeros(2))
        self.multipliers_.register_hook(lambda grad: -grad)  # NOTE: gradient ascent on the multipliers
        self.steps_ = 0
        self._optimizer = None if self.lr is None else torch.optim.Adam(list(self.gate_parameters()),
                                                                        lr=float(self.lr))
        self._sites = self._consumer_sites()
        self._shapes = self._weight_shapes()
        self._macs, self._fixed_macs, self._dense_macs = self._mac_table()
        self._current: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.attach()
        return self

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
                self.gates_[_key(g.id)].log_alpha.copy_(scale * values / values.mean().clamp_min(1e-12))

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

    def _weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(module.weight.shape) for name, module in self.model_.named_modules()
                if isinstance(module, (nn.Linear, *_CONV)) and module.weight is not None}

    def _mac_table(self) -> tuple[dict[str, int], int, int]:
        """MACs of every Linear/Conv leaf; the rest of the model's MACs count as fixed."""
        counts = macs_by_module(self.model_, self.example_inputs_)
        dense = int(counts.get("", sum(v for k, v in counts.items() if k)))
        leaves = {name: int(counts.get(name, 0)) for name in self._shapes}
        return leaves, max(dense - sum(leaves.values()), 0), max(dense, 1)

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
        self._current = {g.id: (self.gates_[_key(g.id)].train(train))() for g in self.groups_}

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
    def expected_macs(self) -> torch.Tensor:
        """Expected fraction of the dense MACs kept under the current gate probabilities."""
        kept = {g.id: self.gates_[_key(g.id)].open_probability() for g in self.groups_}
        gated = {g.id for g in self.groups_}
        total = torch.tensor(float(self._fixed_macs))
        for name, macs in self._macs.items():
            if macs == 0:
                continue
            shape = self._shapes[name]
            frac_in = self._fraction(name, 1, shape[1] if len(shape) > 1 else 1, kept, gated)
            frac_out = self._fraction(name, 0, shape[0], kept, gated)
            total = total + macs * frac_in * frac_out
        return total / self._dense_macs

    def _fraction(self, module: str, axis: int, width: int, kept: dict[str, torch.Tensor],
                  gated: set[str]) -> torch.Tensor:
        removed = torch.tensor(0.0)
        for g in self.groups_:
            for m in g.members:
                if m.module == module and m.axis == axis and m.tensor == f"{module}.weight":
                    removed = removed + (g.size - kept[g.id].sum()) * m.inner
        return (width - removed) / width

    def budget(self) -> float:
        """The target fraction at this step (falls from 1 to the target's over the warm-up)."""
        goal = self.target_.value
        if self.warmup_steps == 0:
            return goal
        progress = min(1.0, self.steps_ / self.warmup_steps)
        return 1.0 - (1.0 - goal) * progress

    def penalty(self) -> torch.Tensor:
        """The Lagrangian term ``l1 * g + l2 * g^2`` on the excess ``g = max(c - t, 0)`` of the
        expected MACs ``c`` over the budget ``t``, to add to the loss."""
        gap = torch.relu(self.expected_macs() - self.budget())
        return self.multipliers_[0] * gap + self.multipliers_[1] * gap * gap

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        """Gate ``log_alpha``s and the two multipliers (ascended: their gradient is negated)."""
        yield from self.gates_.parameters()
        yield self.multipliers_

    def parameters(self) -> Iterator[nn.Parameter]:
        """What joins the training optimizer (``fit`` asks): the gate parameters when ``lr`` is
        None, else nothing (the gates' own optimizer trains them in :meth:`step`)."""
        if self._optimizer is None:
            yield from self.gate_parameters()

    # -- training-loop callback -------------------------------------------------------------
    def on_loss(self, step: int, model: nn.Module, batch: Any, outputs: Any,
                loss: torch.Tensor) -> torch.Tensor:
        """``loss + penalty()``."""
        return loss + self.penalty()

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        """Advance the budget's warm-up."""
        self.step()

    def step(self) -> None:
        """One step of the gates' optimizer (if they have their own) and of the budget's warm-up;
        call it after ``optimizer.step()`` in your own loop."""
        if self._optimizer is not None:
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
        self.steps_ += 1

    def state_dict(self) -> dict[str, Any]:
        """Gate parameters, multipliers, the gates' optimizer and the step count (checkpointed by
        ``prunekit.train``)."""
        state = {"gates": self.gates_.state_dict(), "multipliers": self.multipliers_.detach().clone(),
                 "steps": self.steps_}
        if self._optimizer is not None:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.gates_.load_state_dict(state["gates"])
        with torch.no_grad():
            self.multipliers_.copy_(state["multipliers"])
        self.steps_ = int(state["steps"])
        if self._optimizer is not None and "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])

    def open_gates(self) -> dict[str, int]:
        """Group id -> how many of its gates are open (deterministic value > 0)."""
        return {g.id: int((self.gates_[_key(g.id)].deterministic() > 0).sum()) for g in self.groups_}

    # -- to a plain, smaller model ------------------------------------------------------------
    def harden(self, *, verify_result: bool = True) -> Hardened:
        """Fold the gates into the weights and cut to the MACs target; ends gating (hooks removed).

        Channels are ranked globally by their deterministic gate value (ties: ``log_alpha``); the
        structural engine's search removes the lowest until the MACs target is met, applies the
        plan to a folded copy and verifies it. ``self.model_`` itself is left unchanged.
        """
        self.detach()
        folded = copy.deepcopy(self.model_)
        scores: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for g in self.groups_:
                gate = self.gates_[_key(g.id)]
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
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)
