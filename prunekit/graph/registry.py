"""Handlers: how channels flow through each torch function, and how module attributes follow.

A *rule* ``(ctx, args, kwargs, out) -> None`` is registered per torch function or Tensor method; it
reads input layouts with ``ctx.dims(t)`` and records output layouts with ``ctx.set(t, dims)``.
A *refresh* ``(module) -> None`` is registered per module type; after slicing it updates the
attributes that record widths (``out_channels``, ``num_features``, ...). A new layer type needs
one rule (if it calls a function the graph does not know) and one refresh, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["RULES", "REFRESH", "register_rule", "register_refresh", "refresh_for"]

Rule = Callable[..., None]
RULES: dict[Any, Rule] = {}
REFRESH: dict[type, Callable[[nn.Module], None]] = {}


def register_rule(*funcs: Any) -> Callable[[Rule], Rule]:
    """Decorator: ``fn`` is the rule for each of ``funcs`` (missing ones, ``None``, are skipped)."""

    def decorator(fn: Rule) -> Rule:
        for func in funcs:
            if func is not None:
                RULES[func] = fn
        return fn

    return decorator


def register_refresh(*types: type) -> Callable[[Callable[[nn.Module], None]], Callable[[nn.Module], None]]:
    """Decorator: ``fn(module)`` updates width attributes of ``types`` after their tensors are sliced."""

    def decorator(fn: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
        for t in types:
            REFRESH[t] = fn
        return fn

    return decorator


def refresh_for(module: nn.Module) -> Callable[[nn.Module], None] | None:
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
