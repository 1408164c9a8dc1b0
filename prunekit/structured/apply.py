"""Apply a Plan: the only place a model changes shape. Works on a copy; the input is never touched.

After slicing, a cheap verification (on by default) runs the pruned model and the dense model with
the removed channels masked out (every consumer's weights that read a removed channel set to zero)
on the example input. They must agree wherever DESIGN.md's invariant says they do; a wrong model is
never returned silently.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunekit._clone import clone_module
from prunekit.errors import ConfigError, PrunekitError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import submodule, tensor_of
from prunekit.graph.registry import refresh_for
from prunekit.structured.plan import Plan

__all__ = ["apply", "mask", "verify", "VerificationError"]


class VerificationError(PrunekitError, RuntimeError):
    """The pruned model does not compute what the masked dense model computes."""


def _removals(graph: DependencyGraph, plan: Plan) -> dict[tuple[str, int], set[int]]:
    """(tensor name, axis) -> indices to remove, from every member of every cut group."""
    removals: dict[tuple[str, int], set[int]] = defaultdict(set)
    for group_id, size in plan.sizes.items():
        group = graph.group(group_id)
        if group.size != size:
            raise ConfigError(f"Plan and graph disagree on group '{group_id}': plan size {size}, "
                              f"graph size {group.size}. Make the plan from this model's graph.")
        removed = plan.removed(group_id)
        if not removed:
            continue
        if not group.prunable:
            raise ConfigError(f"Plan cuts group '{group_id}', which cannot be pruned: "
                              f"{'; '.join(group.reasons)}.")
        for member in group.members:
            start, inner = member.start, member.inner
            if inner == 1:
                removals[(member.tensor, member.axis)].update(start + c for c in removed)
            else:
                removals[(member.tensor, member.axis)].update(
                    start + c * inner + o for c in removed for o in range(inner))
    return removals
def apply(model: nn.Module, graph: DependencyGraph, plan: Plan, *, example_inputs: Any = None,
          verify_result: bool = True, rtol: float = 1e-4, atol: float = 1e-5) -> nn.Module:
    """A new, smaller, ordinary ``nn.Module`` with the plan's channels removed.

    ``model`` is left exactly as it was. With ``example_inputs`` and ``verify_result`` (default),
    the result is checked against the masked dense model before it is returned.
    """
    removals = _removals(graph, plan)
    by_tensor: dict[str, list[tuple[int, set[int]]]] = defaultdict(list)
    for (name, axis), indices in removals.items():
        by_tensor[name].append((axis, indices))
    # NOTE: the copy gets the sliced tensors through clone_module's memo, so the full-size weights
    # that are cut are never copied first (tied tensors share one id, hence one slice).
    memo: dict[int, Any] = {}
    sliced_ids: set[int] = set()
    for name, cuts in by_tensor.items():
        old = tensor_of(model, name)
        new = old.detach()
        for axis, indices in cuts:
            kept = torch.ones(new.shape[axis], dtype=torch.bool)
            kept[torch.tensor(sorted(indices), dtype=torch.long)] = False
            keep = kept.nonzero().squeeze(1)
            new = new.index_select(axis, keep)
        memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        sliced_ids.add(id(memo[id(old)]))
    pruned = clone_module(model, memo)
    # NOTE: by identity, so a module holding a tied copy of a sliced tensor is refreshed too.
    touched = {name for name, module in pruned.named_modules()
               if any(id(t) in sliced_ids for t in (*module._parameters.values(), *module._buffers.values()))}
    pruned = _refresh(pruned, touched)
    if verify_result and example_inputs is not None:
        verify(model, pruned, graph, plan, example_inputs, rtol=rtol, atol=atol)
    return pruned


def _refresh(model: nn.Module, names: set[str]) -> nn.Module:
    """Update width attributes of every sliced module (by name) and of all its ancestors, deepest
    first; a refresh that returns a module (a pruned attention class) puts it in the old one's
    place. Returns the model (a new root if the root itself was replaced).

    Parents need it too: an attention block records its head count, a Hugging Face model its
    config, though neither owns the sliced tensors.
    """
    scope = {".".join(name.split(".")[:i]) for name in names for i in range(name.count(".") + 2)}
    scope |= {""}
    for name in sorted(scope, key=lambda n: (-(n.count(".") + bool(n)), n)):
        module = submodule(model, name)
        refresh = refresh_for(module)
        replacement = refresh(module) if refresh is not None else None
        if replacement is not None and replacement is not module:
            model = replacement if not name else _replace(model, module, replacement)
    return model


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` wherever ``old`` is a child in ``model`` (every place, if it is shared)."""
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if child is old:
                setattr(parent, key, new)
    return model


def mask(model: nn.Module, graph: DependencyGraph, plan: Plan) -> nn.Module:
    """A dense copy of ``model`` where every consumer weight reading a removed channel is zero."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for group_id in plan.sizes:
            removed = plan.removed(group_id)
            if not removed:
                continue
            channels = torch.tensor(removed, dtype=torch.long)
            for member in graph.group(group_id).by_role("consumer"):
                tensor_of(masked, member.tensor).index_fill_(member.axis, member.indices(channels), 0.0)
    return masked


def _outputs(model: nn.Module, example_inputs: Any) -> list[torch.Tensor]:
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        model.train(was_training)
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def verify(model: nn.Module, pruned: nn.Module, graph: DependencyGraph, plan: Plan, example_inputs: Any,
           *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Raise :class:`VerificationError` unless ``pruned`` matches the masked dense model.

    Groups that pass through an op mixing channels (LayerNorm over them, a channel mean) are
    inexact: cutting them legitimately changes the values. For such plans the output shapes are
    compared, and the plan's exact groups are re-applied on their own and checked by value.
    """
    try:
        got = _outputs(pruned, example_inputs)
    except Exception as exc:
        raise VerificationError(f"The pruned {type(model).__name__} fails on the example input: "
                                f"{type(exc).__name__}: {exc}. This is a prunekit bug; please report "
                                f"it with the model. The original model is unchanged.") from exc
    cut = [g for g in plan.sizes if plan.removed(g)]
    exact = [g for g in cut if graph.group(g).exact]
    if len(exact) < len(cut):
        want = _outputs(model, example_inputs)
        _compare(got, want, rtol, atol, values=False)
        if exact:
            sub = Plan(keep={g: plan.keep[g] for g in exact}, sizes={g: plan.sizes[g] for g in exact},
                       meta=dict(plan.meta))
            sub_pruned = apply(model, graph, sub, verify_result=False)
            _compare(_outputs(sub_pruned, example_inputs), _outputs(mask(model, graph, sub), example_inputs),
                     rtol, atol, values=True)
        return
    _compare(got, _outputs(mask(model, graph, plan), example_inputs), rtol, atol, values=True)


def _compare(got: list[torch.Tensor], want: list[torch.Tensor], rtol: float, atol: float, *,
             values: bool) -> None:
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            raise VerificationError(f"Output {i} of the pruned model has shape {tuple(a.shape)}, the "
                                    f"original {tuple(b.shape)}. The original model is unchanged.")
        if b.numel() == 0:  # NOTE: an empty output (no detection kept) has no values to compare
            continue
        scale = b.abs().max().clamp_min(1.0)
        if values and not torch.allclose(a, b, rtol=rtol, atol=atol * float(scale)):
            diff = (a - b).abs().max().item()
            raise VerificationError(
                f"The pruned model's output {i} differs from the masked dense model by up to {diff:.3g} "
                f"(tolerance rtol={rtol}). A channel dependency was missed; the original model is "
                f"unchanged. Please report this model, or pass ignore=[...] for the module involved.")
