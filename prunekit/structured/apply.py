"""Apply a Plan: the only place a model changes shape. Works on a copy; the input is never touched.

After slicing, a cheap verification (on by default, :mod:`prunekit.structured.verify`) runs the
pruned model and the dense model with the removed channels masked out on the example input, and
compares them by value; a wrong model is never returned silently. Slicing copies only the tensors it
cuts; the masked reference is the original model itself, masked for one pass and restored.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from prunekit._clone import clone_module
from prunekit._settings import dotted_holder
from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import owner, submodule, tensor_of
from prunekit.graph.handlers.parametrized import zero_computed
from prunekit.graph.handlers.spectral_norm import normalised_layers
from prunekit.graph.registry import SELECTIONS, refresh_for
from prunekit.structured.plan import Plan
from prunekit.structured.verify import VerificationError, cuts_of, verify, zero_consumers, zero_sources

__all__ = ["apply", "mask", "verify", "VerificationError"]


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
                removals[(member.tensor, member.axis)].update(removed if start == 0 else [start + c for c in removed])
            else:
                positions = torch.tensor(removed).mul_(inner).add_(start)[:, None] + torch.arange(inner)
                removals[(member.tensor, member.axis)].update(positions.flatten().tolist())
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
    # NOTE: a group's tensors (weight, bias, norm scale and statistics) share one kept index
    keeps: dict[tuple[int, frozenset[int]], torch.Tensor] = {}
    for name, cuts in by_tensor.items():
        old = tensor_of(model, name)
        kept_along: dict[int, torch.Tensor] = {}
        for axis, indices in cuts:
            key = (old.shape[axis], frozenset(indices))
            if key not in keeps:
                kept = torch.ones(old.shape[axis], dtype=torch.bool)
                kept[torch.tensor(sorted(indices), dtype=torch.long)] = False
                keeps[key] = kept.nonzero().squeeze(1)
            kept_along[axis] = keeps[key].to(old.device)
        new = _kept(old.detach(), kept_along)
        memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        sliced_ids.add(id(memo[id(old)]))
    pruned = clone_module(model, memo)
    _shrink_size_attributes(pruned, graph, plan)
    # NOTE: by identity, so a module holding a tied copy of a sliced tensor is refreshed too.
    touched = {name for name, module in pruned.named_modules()
               if any(id(t) in sliced_ids for t in (*module._parameters.values(), *module._buffers.values()))}
    pruned = _refresh(pruned, touched)
    if verify_result and example_inputs is not None:
        verify(model, pruned, graph, plan, example_inputs, rtol=rtol, atol=atol)
    return pruned


def _kept(tensor: torch.Tensor, kept_along: dict[int, torch.Tensor]) -> torch.Tensor:
    """``tensor`` with only the ``kept_along[axis]`` indices of each axis, made in one gather when the
    axes are adjacent (a weight's rows and columns): one index_select per axis made a copy of each
    weight cut in half first, memory the allocator kept after it was freed."""
    axes = sorted(kept_along)
    if len(axes) > 1 and axes == list(range(axes[0], axes[0] + len(axes))):
        index: list[Any] = [slice(None)] * axes[0]
        index += [kept_along[a].view(-1, *[1] * (len(axes) - 1 - j)) for j, a in enumerate(axes)]
        return _laid_out_as(tensor[tuple(index)], tensor)
    kept = tensor
    for axis in axes:
        kept = kept.index_select(axis, kept_along[axis])
    return _laid_out_as(kept, tensor)


def _laid_out_as(kept: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``kept`` in ``original``'s memory format: a gather gives a contiguous tensor, and a weight the
    user put in channels_last (for its faster kernels) would silently lose it."""
    for layout in (torch.channels_last, torch.channels_last_3d):
        if original.dim() == (4 if layout is torch.channels_last else 5) and not original.is_contiguous() \
                and original.is_contiguous(memory_format=layout):
            return kept.contiguous(memory_format=layout)
    return kept


def _shrink_size_attributes(model: nn.Module, graph: DependencyGraph, plan: Plan) -> None:
    """Rewrite the module attributes that record a cut width (``self.nf``, ``self.shape[1]``); a
    module that selects rows of a tensor its caller passes (``#`` attributes: ``SELECTIONS``) is put
    in its place as one that drops the removed rows."""
    removed: dict[tuple[str, str, int | None], int] = defaultdict(int)
    rows: dict[tuple[str, str], set[int]] = defaultdict(set)
    for group_id in plan.sizes:
        cut = plan.removed(group_id)
        if cut:
            for owner, attr, index, member in graph.group(group_id).size_attributes():
                if attr in SELECTIONS:
                    rows[(owner, attr)].update(member.start + u * member.inner + j
                                               for u in cut for j in range(member.inner))
                else:
                    removed[(owner, attr, index)] += len(cut) * member.inner
    for (owner, attr), dropped in rows.items():
        module = submodule(model, owner)
        _replace(model, module, SELECTIONS[attr](module, sorted(dropped)))
    for (module_name, path, index), n in removed.items():
        # NOTE: "config.hidden_sizes": an entry of the model's config; "args.d_inner": a settings object's field
        module, attr = dotted_holder(submodule(model, module_name), path)
        value = getattr(module, attr)
        if index is None:
            setattr(module, attr, value - n)
        else:
            entries = list(value)
            entries[index] -= n
            setattr(module, attr, torch.Size(entries) if isinstance(value, torch.Size) else type(value)(entries))


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
        _recompute_hooked_weight(module)
        refresh = refresh_for(module)
        replacement = refresh(module) if refresh is not None else None
        if replacement is not None and replacement is not module:
            model = replacement if not name else _replace(model, module, replacement)
    return model


def _recompute_hooked_weight(module: nn.Module) -> None:
    """The weight an old-style ``torch.nn.utils.weight_norm`` hook computes, from the sliced ``g`` and
    ``v``: until the next forward it is the dense one, whose shape the refreshes would read."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            with torch.no_grad():
                setattr(module, hook.name, hook.compute_weight(module))


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` wherever ``old`` is a child in ``model`` (every place, if it is shared)."""
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if child is old:
                setattr(parent, key, new)
    return model


def mask(model: nn.Module, graph: DependencyGraph, plan: Plan) -> nn.Module:
    """A dense copy of ``model`` where every consumer weight reading a removed channel is zero (and a
    spectral-normed weight's removed rows too: its scale reads every row; a weight an entrywise
    parametrization computes is zeroed after it)."""
    masked = copy.deepcopy(model)
    cuts = cuts_of(graph, plan)
    zero_computed(masked, zero_consumers(masked, cuts))
    normalised = normalised_layers(masked)
    if normalised:
        zero_sources(masked, cuts, {(m.tensor, m.axis) for g, _ in cuts for m in g.members
                                    if owner(m.tensor) not in normalised})
    return masked
