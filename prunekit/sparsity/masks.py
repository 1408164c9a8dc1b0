"""Keep-masks held on parameters with ``torch.nn.utils.parametrize``; ``finalize`` leaves zeros.

A masked parameter ``features.0.weight`` becomes ``features.0.parametrizations.weight.original``
(what the optimizer updates) and a :class:`Mask` whose boolean buffer ``mask`` multiplies it on
every access. Optimizers, ``state_dict`` (the mask is a persistent buffer, so a checkpoint restores
it), DDP and training loops keep working unchanged. :func:`finalize` removes the parametrizations
and leaves an ordinary module whose weights hold the zeros.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.errors import ConfigError

__all__ = ["Mask", "attach", "masks", "finalize", "split_name"]


class Mask(nn.Module):
    """``weight -> weight * mask``; ``mask`` (bool, same shape) is a persistent buffer."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight with the pruned entries set to zero."""
        # NOTE: where() rather than a product: a negative weight times 0 would leave -0.0.
        return torch.where(self.mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"kept={kept}/{self.mask.numel()}"


def split_name(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """``"features.0.weight"`` -> (the module ``features.0``, ``"weight"``); clear error if absent."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        module = None
    if module is None or not (attr in module._parameters or parametrize.is_parametrized(module, attr)):
        raise ConfigError(f"'{name}' is not a parameter of {type(model).__name__}. Pass a name "
                          f"from model.named_parameters(), e.g. 'features.0.weight'.")
    return module, attr


def _mask_of(module: nn.Module, attr: str) -> Mask | None:
    if not parametrize.is_parametrized(module, attr):
        return None
    found = [p for p in module.parametrizations[attr] if isinstance(p, Mask)]
    return found[0] if found else None


def masks(model: nn.Module) -> dict[str, Mask]:
    """Every :class:`Mask` in ``model``, keyed by the masked parameter's name."""
    found: dict[str, Mask] = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attr in module.parametrizations:
            mask = _mask_of(module, attr)
            if mask is not None:
                found[f"{module_name}.{attr}" if module_name else attr] = mask
    return found


def attach(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> dict[str, Mask]:
    """Mask each named parameter with its boolean keep-mask (updating masks already there).

    Every name and shape is checked before the model is touched, so a bad entry leaves the model
    as it was. The pruned entries of the stored (``original``) weight are zeroed too, so a later
    mask that keeps them again starts them from zero rather than from a stale value.
    """
    plan = []
    for name, mask in keep.items():
        module, attr = split_name(model, name)
        current = getattr(module, attr)
        if tuple(mask.shape) != tuple(current.shape):
            raise ConfigError(f"mask for '{name}' has shape {tuple(mask.shape)} but the parameter "
                              f"has {tuple(current.shape)}. Build the mask from this parameter.")
        existing = _mask_of(module, attr)
        if existing is None and parametrize.is_parametrized(module, attr):
            kinds = ", ".join(type(p).__name__ for p in module.parametrizations[attr])
            raise ConfigError(f"'{name}' is computed by a parametrization ({kinds}), so zeros masked into "
                              f"its stored tensors need not reach the forward; prunekit masks only plain "
                              f"parameters. Remove it first with torch.nn.utils.parametrize."
                              f"remove_parametrizations(module, '{attr}').")
        plan.append((module, attr, existing, mask.detach().to(current.device, torch.bool)))
    attached = {}
    with torch.no_grad():
        for (module, attr, existing, mask), name in zip(plan, keep):
            if existing is None:
                existing = Mask(mask)
                parametrize.register_parametrization(module, attr, existing)
            else:
                existing.mask.copy_(mask)
            module.parametrizations[attr].original.masked_fill_(~mask, 0.0)
            attached[name] = existing
    return attached


def finalize(model: nn.Module) -> nn.Module:
    """Remove every :class:`Mask`, leaving plain parameters that hold the zeros; returns ``model``."""
    targets = [(name, *split_name(model, name)) for name in masks(model)]
    for name, module, attr in targets:  # NOTE: check all first, so a refusal changes nothing.
        if len(module.parametrizations[attr]) != 1:
            raise ConfigError(f"'{name}' carries other parametrizations besides prunekit's mask; "
                              f"remove those first, then finalize.")
    for _, module, attr in targets:
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model
