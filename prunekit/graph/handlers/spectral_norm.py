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

from prunekit.graph.groups import ChannelGroup, Member, owner
from prunekit.graph.handlers.common import parametrizations
from prunekit.graph.registry import register_group_tie

__all__ = ["spectral_vectors", "normalised_layers"]


def _spectral(model: nn.Module) -> list[tuple[str, str, int, int, int]]:
    """Per spectral-normed weight of two or more axes (the only parametrization on it): (weight fqn,
    vectors' prefix, row axis, first column axis, positions per column index of that axis)."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    found = []
    for at, chain in parametrizations(model):
        original = getattr(chain, "original", None)  # NOTE: weight norm's are original0, original1
        if len(chain) != 1 or not isinstance(chain[0], _SpectralNorm) or original is None or original.dim() < 2:
            continue
        rows = chain[0].dim % original.dim()
        others = [a for a in range(original.dim()) if a != rows]
        found.append((f"{at}.original", f"{at}.0", rows, others[0], math.prod(original.shape[a] for a in others[1:])))
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
    return {owner(weight) for weight, *_ in _spectral(model)}
