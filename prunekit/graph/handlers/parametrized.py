"""Weights computed by a parametrization prunekit has no rule for (``torch.nn.utils.parametrize``).

Weight norm and spectral norm have rules (``weight_norm``, ``spectral_norm``). Any other
parametrization is code the trace runs op by op; where each entry of the weight depends on the same
entry of its original only (softplus for positive weights, a fixed mask), that is exact and cut like
any weight. Where entries mix (``orthogonal``'s Householder product and change of basis, a symmetric
``X.triu() + X.triu(1).T``), slicing the original is not slicing the weight: the layer's channels
are kept, with the reason, before any cut is tried (verification would refuse it anyway, later).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from prunekit.graph.groups import ChannelGroup, owner
from prunekit.graph.handlers.common import parametrizations
from prunekit.graph.registry import register_group_tie

__all__ = ["mixing_parametrizations", "zero_computed"]


def _entrywise(chain: nn.ModuleList, original: torch.Tensor) -> bool:
    """Whether ``chain`` maps each entry of ``original`` alone: one probe entry changed (several,
    spread over the tensor: a triangle or the diagonal alone may ignore some) changes no other entry
    of the result, whose shape is the original's."""
    with torch.no_grad():
        base = original.detach().clone()
        computed = _run(chain, base)
        if computed is None or computed.shape != base.shape:
            return False
        n = base.numel()
        for k in sorted({(i * n) // 7 + i for i in range(7) if (i * n) // 7 + i < n} | {n - 1}):
            probe = base.clone()
            probe.view(-1)[k] += 1.0 + probe.view(-1)[k].abs()
            moved = _run(chain, probe)
            if moved is None:
                return False
            changed = (moved != computed).view(-1)
            changed[k] = False
            if bool(changed.any()):
                return False
    return True


def _run(chain: nn.ModuleList, x: torch.Tensor) -> torch.Tensor | None:
    """The chain applied to ``x`` (as ``ParametrizationList`` applies it to its original); None
    where it cannot be (several originals, an error)."""
    try:
        for parametrization in chain:
            x = parametrization(x)
    except Exception:  # noqa: BLE001 (a chain that cannot run alone is treated as mixing)
        return None
    return x if isinstance(x, torch.Tensor) else None


def _norms(chain: nn.ModuleList) -> bool:
    """Whether ``chain`` is weight or spectral normalisation only (their own rules handle them)."""
    from torch.nn.utils.parametrizations import _SpectralNorm, _WeightNorm

    return all(isinstance(p, (_WeightNorm, _SpectralNorm)) for p in chain)


def mixing_parametrizations(model: nn.Module) -> dict[str, str]:
    """Layer name -> why its parametrized weight mixes entries (see the module docstring)."""
    found: dict[str, str] = {}
    for at, chain in parametrizations(model):
        if _norms(chain):
            continue
        original = getattr(chain, "original", None)
        if isinstance(original, torch.Tensor) and _entrywise(chain, original):
            continue
        names = " + ".join(type(p).__name__.lstrip("_") for p in chain)
        found[owner(f"{at}.original")] = (f"'{at.replace('.parametrizations.', '.')}' is computed by the "
                                          f"parametrization {names}, which mixes its entries: slicing the "
                                          f"stored tensor would not slice the weight")
    return found


@register_group_tie
def keep_mixing_parametrizations(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """``groups`` with every group touching a layer whose weight a mixing parametrization computes
    marked not prunable (its inputs and outputs are kept)."""
    mixing = mixing_parametrizations(model)
    if not mixing:
        return groups
    out = []
    for g in groups:
        why = next((mixing[m.module] for m in g.members if m.module in mixing), None)
        out.append(g if why is None or not g.prunable else replace(g, prunable=False, reasons=g.reasons + (why,)))
    return tuple(out)


class _Zeroed(nn.Module):
    """The computed weight times a fixed 0/1 mask (the masked dense model of an entrywise chain)."""

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep


def zero_computed(model: nn.Module, zeroed: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]) -> None:
    """Where ``zeroed`` (``verify.zero_consumers``' answer) wrote zeros into the original of a
    parametrization (not a norm: their rules zero what they need), zero the computed weight at the
    same entries too (softplus(0) is not 0): one more parametrization on ``model``, which must be a
    copy made for that (``apply.mask``)."""
    import torch.nn.utils.parametrize as parametrize

    layers = {id(chain.original): (model.get_submodule(at.rpartition(".parametrizations.")[0]),
                                   at.rpartition(".")[2])
              for at, chain in parametrizations(model)
              if isinstance(getattr(chain, "original", None), torch.Tensor) and not _norms(chain)}
    keep: dict[tuple[int, str], tuple[nn.Module, str, torch.Tensor]] = {}
    for tensor, axis, rows, _ in zeroed:
        found = layers.get(id(tensor))
        if found is None:
            continue
        layer, attr = found
        _, _, ones = keep.setdefault((id(layer), attr), (layer, attr, torch.ones_like(tensor, requires_grad=False)))
        ones.index_fill_(axis, rows, 0.0)
    for layer, attr, ones in keep.values():
        parametrize.register_parametrization(layer, attr, _Zeroed(ones))
