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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.gates.hard_concrete import HardConcrete
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import ChannelGroup, Member, tensor_of
from prunekit.measure.macs import macs_by_module
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan
from prunekit.structured.target import Target, search

__all__ = ["ChannelGates", "Hardened"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


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
        model: the model to train with gates (hooks are added to it until :meth:`detach` or
            :meth:`harden`; its weights are trained by the caller's loop as usual).
        example_inputs: an input batch, for tracing and MAC counting.
        target_macs: fraction of the dense MACs to keep, in (0, 1].
        graph: an already traced :class:`DependencyGraph` of ``model`` (default: traced here).
        ignore: module names whose channels are not gated (as for structural pruning).
        init_log_alpha: start value of every gate's ``log_alpha`` (3.0: fully open in eval).
        init_importance: a data-free criterion (``"l2"``, ``"l1"``, ``"bn_scale"``, ...) that sets
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

    Use: ``gates = ChannelGates(model, x, target_macs=0.5)``; ``fit(model, splits, cfg,
    callbacks=[gates])`` (or add ``gates.penalty()`` to your loss and call ``gates.step()`` after
    your optimizer's step); then ``gates.harden().model``. Single process only: under DDP the gate
    parameters would not be averaged across ranks.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *, target_macs: float,
                 graph: DependencyGraph | None = None, ignore: Iterable[str] = (),
                 init_log_alpha: float = 3.0, warmup_steps: int = 0, round_to: int | str = "auto",
                 lr: float | None = 0.1, init_importance: str | None = None) -> None:
        if not 0.0 < float(target_macs) <= 1.0:
            raise ConfigError(f"ChannelGates: target_macs is the fraction of the dense MACs to keep, in "
                              f"(0, 1]; got {target_macs}. Pass e.g. 0.5 for half the MACs.")
        if warmup_steps < 0:
            raise ConfigError(f"ChannelGates: warmup_steps must be >= 0; got {warmup_steps}.")
        if lr is not None and not float(lr) > 0:
            raise ConfigError(f"ChannelGates: lr must be > 0 (or None to train the gates with the model's "
                              f"optimizer); got {lr}. Pass e.g. 0.1.")
        self.model = model
        self.example_inputs = example_inputs
        self.target = float(target_macs)
        self.warmup_steps = int(warmup_steps)
        self.round_to = round_to
        self.graph = graph if graph is not None else DependencyGraph.trace(model, example_inputs, ignore=tuple(ignore))
        self.skipped: dict[str, str] = {}
        self.groups: list[ChannelGroup] = self._choose_groups()
        self.gates = nn.ModuleDict({_key(g.id): HardConcrete(g.size, init_log_alpha=init_log_alpha)
                                    for g in self.groups})
        self.init_importance = init_importance
        if init_importance is not None:
            self._init_from(init_importance, float(init_log_alpha))
        self.multipliers = nn.Parameter(torch.zeros(2))
        self.multipliers.register_hook(lambda grad: -grad)  # NOTE: gradient ascent on the multipliers
        self.steps = 0
        self.lr = lr
        self._optimizer = None if lr is None else torch.optim.Adam(list(self.gate_parameters()), lr=float(lr))
        self._sites = self._consumer_sites()
        self._shapes = self._weight_shapes()
        self._macs, self._fixed_macs, self._dense_macs = self._mac_table()
        self._current: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.attach()

    def _init_from(self, criterion: str, scale: float) -> None:
        """Start each gate at ``scale * score / group mean`` of a data-free criterion."""
        from prunekit.importance import CRITERIA, score

        if CRITERIA.get(criterion).meta.get("needs_data"):
            raise ConfigError(f"ChannelGates: init_importance='{criterion}' needs calibration data; use a "
                              f"data-free criterion such as 'l2', 'l1' or 'bn_scale'.")
        scores = score(self.graph, self.model, criterion)
        with torch.no_grad():
            for g in self.groups:
                values = scores[g.id].float()
                self.gates[_key(g.id)].log_alpha.copy_(scale * values / values.mean().clamp_min(1e-12))

    # -- which groups get gates --------------------------------------------------------------
    def _choose_groups(self) -> list[ChannelGroup]:
        chosen = []
        for group in self.graph.prunable:
            consumers = group.by_role("consumer")
            reason = None
            if not group.exact:
                reason = "its channels pass through an op that mixes them (LayerNorm, softmax)"
            elif not consumers:
                reason = "no layer weight reads these channels"
            else:
                reason = next((r for r in (_gateable(self.model, m) for m in consumers) if r), None)
            if reason is None:
                chosen.append(group)
            else:
                self.skipped[group.id] = reason
        chosen = self._called(chosen)
        if not chosen:
            raise ConfigError(f"ChannelGates: no group of this model can carry a gate ({len(self.skipped)} "
                              f"skipped; e.g. {next(iter(self.skipped.items()), ('-', '-'))}). Gates need "
                              f"channels read by nn.Linear or ungrouped nn.Conv modules.")
        return chosen

    def _called(self, groups: list[ChannelGroup]) -> list[ChannelGroup]:
        """Drop groups whose consumer module is never *called* (weights used functionally)."""
        names = {m.module for g in groups for m in g.by_role("consumer")}
        seen: set[str] = set()
        handles = [self.model.get_submodule(n).register_forward_pre_hook(
            lambda module, args, n=n: seen.add(n)) for n in names]
        try:
            with torch.no_grad():
                _call(self.model, self.example_inputs)
        finally:
            for h in handles:
                h.remove()
        kept = []
        for g in groups:
            missing = [m.module for m in g.by_role("consumer") if m.module not in seen]
            if missing:
                self.skipped[g.id] = f"'{missing[0]}' is not called as a module (its weight is used functionally)"
            else:
                kept.append(g)
        return kept

    def _consumer_sites(self) -> dict[str, list[tuple[str, Member]]]:
        sites: dict[str, list[tuple[str, Member]]] = defaultdict(list)
        for g in self.groups:
            for m in g.by_role("consumer"):
                sites[m.module].append((g.id, m))
        return dict(sites)

    def _weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(module.weight.shape) for name, module in self.model.named_modules()
                if isinstance(module, (nn.Linear, *_CONV)) and module.weight is not None}

    def _mac_table(self) -> tuple[dict[str, int], int, int]:
        """MACs of every Linear/Conv leaf; the rest of the model's MACs count as fixed."""
        counts = macs_by_module(self.model, self.example_inputs)
        dense = int(counts.get("", sum(v for k, v in counts.items() if k)))
        leaves = {name: int(counts.get(name, 0)) for name in self._shapes}
        return leaves, max(dense - sum(leaves.values()), 0), max(dense, 1)

    # -- hooks ------------------------------------------------------------------------------
    def attach(self) -> None:
        """Install the hooks (done by ``__init__``; again after :meth:`detach`)."""
        if self._handles:
            return
        self._handles.append(self.model.register_forward_pre_hook(self._sample))
        for name in self._sites:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._gate_input(name, module)))

    def detach(self) -> None:
        """Remove every hook: the model computes as if it had no gates."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._current.clear()

    def _sample(self, module: nn.Module, args: Any) -> None:
        """One draw of every gate per forward pass, shared by all consumers of a group."""
        train = self.model.training
        self._current = {g.id: (self.gates[_key(g.id)].train(train))() for g in self.groups}

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
        kept = {g.id: self.gates[_key(g.id)].open_probability() for g in self.groups}
        gated = {g.id for g in self.groups}
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
        for g in self.groups:
            for m in g.members:
                if m.module == module and m.axis == axis and m.tensor == f"{module}.weight":
                    removed = removed + (g.size - kept[g.id].sum()) * m.inner
        return (width - removed) / width

    def budget(self) -> float:
        """The target fraction at this step (falls from 1 to ``target_macs`` over the warm-up)."""
        if self.warmup_steps == 0:
            return self.target
        progress = min(1.0, self.steps / self.warmup_steps)
        return 1.0 - (1.0 - self.target) * progress

    def penalty(self) -> torch.Tensor:
        """The Lagrangian term ``l1 * g + l2 * g^2`` on the excess ``g = max(c - t, 0)`` of the
        expected MACs ``c`` over the budget ``t``, to add to the loss."""
        gap = torch.relu(self.expected_macs() - self.budget())
        return self.multipliers[0] * gap + self.multipliers[1] * gap * gap

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        """Gate ``log_alpha``s and the two multipliers (ascended: their gradient is negated)."""
        yield from self.gates.parameters()
        yield self.multipliers

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
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """Gate parameters, multipliers, the gates' optimizer and the step count (checkpointed by ``fit``)."""
        state = {"gates": self.gates.state_dict(), "multipliers": self.multipliers.detach().clone(),
                 "steps": self.steps}
        if self._optimizer is not None:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.gates.load_state_dict(state["gates"])
        with torch.no_grad():
            self.multipliers.copy_(state["multipliers"])
        self.steps = int(state["steps"])
        if self._optimizer is not None and "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])

    def open_gates(self) -> dict[str, int]:
        """Group id -> how many of its gates are open (deterministic value > 0)."""
        return {g.id: int((self.gates[_key(g.id)].deterministic() > 0).sum()) for g in self.groups}

    # -- to a plain, smaller model ------------------------------------------------------------
    def harden(self, *, verify_result: bool = True) -> Hardened:
        """Fold the gates into the weights and cut to ``target_macs``; ends gating (hooks removed).

        Channels are ranked globally by their deterministic gate value (ties: ``log_alpha``); the
        structural engine's search removes the lowest until the MACs target is met, applies the
        plan to a folded copy and verifies it. ``self.model`` itself is left unchanged.
        """
        self.detach()
        folded = copy.deepcopy(self.model)
        scores: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for g in self.groups:
                gate = self.gates[_key(g.id)]
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
        plan, achieved = search(folded, self.graph, scores, Target(macs=self.target),
                                allocate_kwargs={"scope": "global", "max_ratio": 1.0, "normalize": False,
                                                 "round_to": self.round_to},
                                example_inputs=self.example_inputs, verify_result=False)
        pruned = apply(folded, self.graph, plan, example_inputs=self.example_inputs, verify_result=verify_result)
        return Hardened(model=pruned, plan=plan, achieved=achieved, open_gates=open_gates)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)
