"""How sparse each layer is: counted from the weights a forward pass uses (masked or finalized)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerSparsity", "sparsity_report", "format_report", "total_sparsity", "LAYER_TYPES", "own_forward",
           "tied_names"]

# NOTE: the layers whose weights are sparsified by default (the GEMM-lowered ones).
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def own_forward(module: nn.Module) -> str | None:
    """Why ``module``'s forward may not use its stored ``weight`` as it is: a subclass of a
    :data:`LAYER_TYPES` layer with its own ``forward`` (timm's ``StdConv2d`` standardises the weight
    first, so zeros stored there are not zeros the layer uses). None for the plain layers."""
    for base in LAYER_TYPES:
        if not isinstance(module, base):
            continue
        kind = type(module)
        if kind.forward is not base.forward or getattr(kind, "_conv_forward", None) is not getattr(
                base, "_conv_forward", None):
            return (f"{kind.__name__} has its own forward (not {base.__name__}'s), which may not use the stored "
                    "weight as it is (e.g. weight standardisation), so zeros there would not be real")
    return None


@dataclass(frozen=True)
class LayerSparsity:
    """One parameter: its name, shape, element count and how many of them are zero."""

    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        """Fraction of entries that are zero."""
        return self.zeros / self.numel if self.numel else 0.0


def _default_names(model: nn.Module) -> list[str]:
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, LAYER_TYPES)]


def tied_names(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """For each parameter in ``names``, its other names in ``model`` outside ``names``: the same
    tensor under another name (tied weights, e.g. GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``)."""
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    ids = {name: key for key, group in aliases.items() for name in group}
    found = {}
    for name in names:
        others = tuple(n for n in aliases.get(ids.get(name, -1), ()) if n != name and n not in names)
        if others:
            found[name] = others
    return found


@torch.no_grad()
def sparsity_report(model: nn.Module, names: Sequence[str] | None = None) -> list[LayerSparsity]:
    """Zeros per parameter for ``names`` (default: every Linear/Conv weight), in model order."""
    rows = []
    for name in names if names is not None else _default_names(model):
        module_name, _, attr = name.rpartition(".")
        weight = getattr(model.get_submodule(module_name) if module_name else model, attr)
        rows.append(LayerSparsity(name=name, shape=tuple(weight.shape), numel=weight.numel(),
                                  zeros=int(weight.numel() - torch.count_nonzero(weight))))
    return rows


def total_sparsity(rows: Sequence[LayerSparsity]) -> float:
    """Zeros over all entries of ``rows`` (each parameter weighted by its size)."""
    numel = sum(r.numel for r in rows)
    return sum(r.zeros for r in rows) / numel if numel else 0.0


def format_report(rows: Sequence[LayerSparsity]) -> str:
    """A plain-text table: one line per parameter and a total line."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'shape':<18} {'params':>10} {'zeros':>10} {'sparsity':>9}"]
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.name:<{width}}  {shape:<18} {r.numel:>10,} {r.zeros:>10,} "
                     f"{100 * r.sparsity:>8.2f}%")
    numel, zeros = sum(r.numel for r in rows), sum(r.zeros for r in rows)
    lines.append(f"{'total':<{width}}  {'':<18} {numel:>10,} {zeros:>10,} "
                 f"{100 * total_sparsity(rows):>8.2f}%")
    return "\n".join(lines)
