"""Spectral normalisation (``torch.nn.utils.parametrizations.spectral_norm``): ``weight = W / sigma``
with ``sigma = u . (W_mat v)``, ``W_mat`` the weight with its ``dim`` axis first, flattened to rows.

The power-iteration vectors are buffers of the parametrization: ``_u`` holds one entry per row of
``W_mat`` (the ``dim`` axis), ``_v`` one per column (the other axes, flattened). The trace reads the
computed weight as it reads a parameter, so the weight's axes are cut; ``u`` and ``v`` must be cut
with them (:func:`spectral_vectors` adds them to the groups). Then ``sigma`` of the pruned weight
equals ``sigma`` of the weight with the cut rows and columns zeroed, so the cut is exact against a
masked model that zeroes the weight itself (:func:`normalised_layers` tells verification which).
"""

from __future__ import annotations

import math
from dataclasses import replace

from torch import nn

from prunekit.graph.groups import ChannelGroup, Member
from prunekit.graph.registry import register_group_tie

__all__ = ["spectral_vectors", "normalised_layers"]


def _spectral(model: nn.Module) -> list[tuple[str, str, int, int, int]]:
    """Per spectral-normed weight of two or more axes: (weight fqn, vectors' prefix, row axis,
    first column axis, positions per column index of that axis)."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    found = []
    for name, module in model.named_modules():
        at = f"{name}." if name else ""
        for attr, chain in getattr(module, "parametrizations", {}).items():
            for i, p in enumerate(chain):
                original = getattr(chain, "original", None)  # NOTE: weight norm's are original0, original1
                if isinstance(p, _SpectralNorm) and len(chain) == 1 and original is not None and original.dim() > 1:
                    rows = p.dim % original.dim()
                    others = [a for a in range(original.dim()) if a != rows]
                    inner = math.prod(original.shape[a] for a in others[1:])
                    found.append((f"{at}parametrizations.{attr}.original", f"{at}parametrizations.{attr}.{i}",
                                  rows, others[0], inner))
    return found


@register_group_tie
def spectral_vectors(model: nn.Module, groups: tuple[ChannelGroup, ...]) -> tuple[ChannelGroup, ...]:
    """Each group cutting a spectral-normed weight's rows also cuts ``_u`` there, and one cutting the
    columns' first axis cuts the matching runs of ``_v``."""
    normed = {weight: (prefix, rows, cols, inner) for weight, prefix, rows, cols, inner in _spectral(model)}
    if not normed:
        return groups
    out = []
    for group in groups:
        extra = []
        for m in group.members:
            found = normed.get(m.tensor)
            if found is None:
                continue
            prefix, rows, cols, inner = found
            if m.axis == rows:
                extra.append(Member(f"{prefix}._u", 0, m.start, m.inner, "passive"))
            elif m.axis == cols:
                extra.append(Member(f"{prefix}._v", 0, m.start * inner, m.inner * inner, "passive"))
        out.append(replace(group, members=group.members + tuple(extra)) if extra else group)
    return tuple(out)


def normalised_layers(model: nn.Module) -> set[str]:
    """Layers whose weight is spectral-normed: ``sigma`` reads the whole weight, so a masked model
    zeroes the cut rows and columns in the weight itself, not in the layer's input or output."""
    return {weight.split(".parametrizations.")[0] if ".parametrizations." in weight else ""
            for weight, *_ in _spectral(model)}
