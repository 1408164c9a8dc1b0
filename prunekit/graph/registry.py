"""Handlers: how channels flow through each torch function, and how module attributes follow.

A *rule* ``(ctx, args, kwargs, out) -> None`` is registered per torch function or Tensor method; it
reads input layouts with ``ctx.dims(t)`` and records output layouts with ``ctx.set(t, dims)``.
A *refresh* ``(module) -> None | nn.Module`` is registered per module type; after slicing it updates
the attributes that record widths (``out_channels``, ``num_features``, ...), or returns a module of
a real class to put in the old one's place when the old class cannot hold the new widths (pruned
attention). A new layer type needs
one rule (if it calls a function the graph does not know) and one refresh, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["RULES", "REFRESH", "MODULE_RULES", "GROUP_TIES", "WIDTH_ATTRIBUTES", "FIXED_SELECTS", "SELECTIONS",
           "register_rule", "register_refresh", "register_module_rule", "register_group_tie",
           "register_width_attributes", "refresh_for", "module_rule_for"]

Rule = Callable[..., None]
RULES: dict[Any, Rule] = {}
Refresh = Callable[[nn.Module], "nn.Module | None"]
REFRESH: dict[type, Refresh] = {}
# A module rule ``(ctx, module, args) -> {id(child): layouts of its first input}`` records the
# constraints of a whole module call whose channel structure the per-op rules cannot follow (timm's
# cascaded group attention: one conv per head, each reading the previous head's output). The ops of
# that forward run uninterpreted, except inside the children it returns, which are traced again from
# the given input layouts (the output projection).
ModuleRule = Callable[..., dict[int, list[Any]]]
MODULE_RULES: dict[type, ModuleRule] = {}
# A group tie ``(model, groups) -> groups`` joins, after the trace, groups that code the trace cannot
# see needs cut alike (an encoder-decoder whose forward compares its two widths).
GroupTie = Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]
GROUP_TIES: list[GroupTie] = []
# Callables ``(ctx, layout) -> bool`` asked before channels that meet a fixed-size tensor are frozen:
# True when they select rows of it instead (a per-head bias built for all heads: handlers.bias_heads).
FIXED_SELECTS: list[Callable[[Any, Any], bool]] = []
# Group attributes named ``#...`` record rows a module selects rather than a size: after slicing,
# ``SELECTIONS[name](module, removed)`` gives the module that drops the ``removed`` rows (or itself).
SELECTIONS: dict[str, Callable[[nn.Module, list[int]], nn.Module]] = {}
# Per layer type, its width attributes and the axis of its weight each equals (``in_features``: 1);
# the trace tags them with that axis, so a view sized by one follows the cut (refresh rewrites them).
WIDTH_ATTRIBUTES: dict[type, dict[str, int]] = {}


def register_rule(*funcs: Any) -> Callable[[Rule], Rule]:
    """Decorator: ``fn`` is the rule for each of ``funcs`` (missing ones, ``None``, are skipped)."""

    def decorator(fn: Rule) -> Rule:
        for func in funcs:
            if func is not None:
                RULES[func] = fn
        return fn

    return decorator


def register_refresh(*types: type) -> Callable[[Refresh], Refresh]:
    """Decorator: ``fn(module)`` updates width attributes of ``types`` after their tensors are sliced
    (or returns the module to use in their place)."""

    def decorator(fn: Refresh) -> Refresh:
        for t in types:
            REFRESH[t] = fn
        return fn

    return decorator


def register_module_rule(*types: type) -> Callable[[ModuleRule], ModuleRule]:
    """Decorator: ``fn(ctx, module, args)`` records the channel constraints of a call of ``types``."""

    def decorator(fn: ModuleRule) -> ModuleRule:
        for t in types:
            MODULE_RULES[t] = fn
        return fn

    return decorator


def register_group_tie(fn: GroupTie) -> GroupTie:
    """Decorator: ``fn(model, groups)`` runs on every traced model's groups and returns them, joined
    where its library's code needs it."""
    GROUP_TIES.append(fn)
    return fn


def register_width_attributes(*types: type, **axes: int) -> None:
    """``types`` (and their subclasses) hold widths in the attributes named in ``axes``, each equal to
    that axis of the module's ``weight`` (``register_width_attributes(nn.Linear, in_features=1)``)."""
    for t in types:
        WIDTH_ATTRIBUTES[t] = dict(axes)


def module_rule_for(module: nn.Module) -> ModuleRule | None:
    """The module rule of ``module``'s exact type, if any (a subclass may compute otherwise)."""
    return MODULE_RULES.get(type(module)) if MODULE_RULES else None


def refresh_for(module: nn.Module) -> Refresh | None:
    """The refresh of the closest registered base class of ``module``'s type, if any."""
    for klass in type(module).__mro__:
        if klass in REFRESH:
            return REFRESH[klass]
    return None


def resolve(*names: str) -> list[Any]:
    """The objects called ``name`` in torch, torch.Tensor and torch.nn.functional (those that exist)."""
    import torch
    import torch.nn.functional as F

    found: list[Any] = []
    for name in names:
        for namespace in (torch, torch.Tensor, F, torch.special):
            obj = getattr(namespace, name, None)
            if obj is not None and obj not in found:
                found.append(obj)
    return found
