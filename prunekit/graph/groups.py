"""ChannelGroup and Member: frozen data saying which tensor slices must be cut together.

Worked example — ``conv1 -> bn1 -> relu -> conv2`` with ``conv1`` producing 4 channels::

    ChannelGroup(id="conv1.weight:0", size=4, members=(
        Member("conv1.weight", axis=0, start=0, inner=1, role="producer"),
        Member("conv1.bias",   axis=0, start=0, inner=1, role="producer"),
        Member("bn1.weight",   axis=0, ...role="passive"),  # also bias, running_mean, running_var
        Member("conv2.weight", axis=1, start=0, inner=1, role="consumer"),
    ))

Channel ``j`` of the group is index ``start + j*inner ... start + (j+1)*inner - 1`` along ``axis`` of
each member's tensor (``inner > 1`` when a flatten turned one channel into H·W features). Removing
channel ``j`` removes those indices from every member at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

__all__ = ["Member", "ChannelGroup", "Role", "channels_removed", "owner", "submodule", "tensor_of"]

Role = Literal["producer", "consumer", "passive"]


def owner(tensor: str) -> str:
    """The module a parameter or buffer belongs to ("" for the root): its parent, or for a
    parametrized weight (``conv.parametrizations.weight.original1``) the layer it parametrizes."""
    parts = tensor.split(".")[:-1]
    return ".".join(parts[:parts.index("parametrizations")] if "parametrizations" in parts else parts)


@dataclass(frozen=True, order=True)
class Member:
    """One slice of one parameter or buffer, named by its fully-qualified name.

    Args:
        tensor: fqn of the parameter or buffer (``"layer1.0.conv1.weight"``).
        axis: the axis that is sliced.
        start: index along ``axis`` of the group's channel 0.
        inner: indices per channel (``H*W`` after a flatten, else 1).
        role: ``producer`` writes the channel (conv/linear output rows), ``consumer`` reads and mixes
            it (the next conv's input columns), ``passive`` acts on it channel-wise (BN, bias, scale).
    """

    tensor: str
    axis: int
    start: int
    inner: int
    role: Role

    def indices(self, channels: torch.Tensor) -> torch.Tensor:
        """Indices along ``axis`` that hold ``channels`` (a 1-D long tensor of group channels)."""
        if self.inner == 1:  # NOTE: most members; no offsets tensor to build
            return channels.long() + self.start  # NOTE: a new tensor, as below
        offsets = torch.arange(self.inner, dtype=torch.long)
        return (self.start + channels[:, None] * self.inner + offsets[None, :]).reshape(-1)

    @property
    def module(self) -> str:
        """Fully-qualified name of the module owning the tensor ("" for the root)."""
        return owner(self.tensor)


@dataclass(frozen=True)
class ChannelGroup:
    """A coupled dimension of ``size`` channels; pruning keeps or cuts each channel in all members.

    ``prunable`` is False when something forbids cutting (a model input or output, an op the graph
    does not know, a constant shape); ``reasons`` then says what. ``exact`` is False when a member
    mixes channels (LayerNorm over the group, softmax), so pruning changes the function and the
    masked-equivalence check does not apply; ``zero_exact`` says it does again once the removed
    channels' activations are zero (the only mixing is a sum over them). ``attrs`` are module
    attributes that record a size these channels are part of (see :meth:`size_attributes`);
    ``apply`` rewrites them.
    """

    id: str
    size: int
    members: tuple[Member, ...]
    prunable: bool = True
    exact: bool = True
    reasons: tuple[str, ...] = field(default=())
    attrs: tuple[Member, ...] = field(default=())
    zero_exact: bool = True

    def size_attributes(self) -> tuple[tuple[str, str, int | None, Member], ...]:
        """Module attributes recording a size that holds this group's channels (a view to
        ``self.nf`` or ``self.shape``): (module name, attribute, index in it or None, member)."""
        found = []
        for m in self.attrs:
            module, attr, index = m.tensor[1:].split("|")
            found.append((module, attr, int(index) if index else None, m))
        return tuple(found)

    def by_role(self, role: Role) -> tuple[Member, ...]:
        """Members with this role."""
        return tuple(m for m in self.members if m.role == role)

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of the modules touched by this group, in first-seen order."""
        return tuple(dict.fromkeys(m.module for m in self.members))

    @property
    def channels_per_unit(self) -> int:
        """Channels one unit of the group holds in its first producer weight (by member indices): 1,
        or more where a unit is a block (a grouped conv's channel repeated in every group, a head's
        rows); 1 for a group without a producer. Counts of units times this are counts of channels."""
        producers = self.by_role("producer")
        first = next((m for m in producers if m.tensor.endswith("weight")), producers[0] if producers else None)
        if first is None:
            return 1
        one = torch.zeros(1, dtype=torch.long)
        return sum(len(m.indices(one)) for m in producers if (m.tensor, m.axis) == (first.tensor, first.axis))


def channels_removed(groups: Iterable[ChannelGroup], keep: Mapping[str, tuple[int, ...]],
                     sizes: Mapping[str, int]) -> float:
    """A plan's ``keep`` and ``sizes`` (in units) as the fraction of the listed channels cut, counted
    in channels (``Plan.ratio`` counts units): a head or a block of a grouped conv weighs its channels."""
    per_unit = {g.id: g.channels_per_unit for g in groups}
    total = sum(n * per_unit.get(g, 1) for g, n in sizes.items())
    kept = sum(len(k) * per_unit.get(g, 1) for g, k in keep.items())
    return 0.0 if total == 0 else 1 - kept / total


def joined(a: ChannelGroup, b: ChannelGroup, why: str) -> ChannelGroup:
    """One group of ``a``'s and ``b``'s members (same size): what code outside the trace requires
    to be cut alike (``why``). Cut only where both could be; every reason is kept."""
    if a.size != b.size:
        raise ValueError(f"cannot join groups of {a.size} and {b.size} channels ({a.id}, {b.id})")
    prunable = a.prunable and b.prunable
    reasons = a.reasons + b.reasons + (() if prunable else (why,))
    return ChannelGroup(id=a.id, size=a.size, members=a.members + b.members, prunable=prunable,
                        exact=a.exact and b.exact, reasons=tuple(dict.fromkeys(reasons)), attrs=a.attrs + b.attrs,
                        zero_exact=a.zero_exact and b.zero_exact)


def submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` by direct lookups (get_submodule's checks cost more than the
    slicing on hot paths); a missing name falls back to it for its error message."""
    module = model
    try:
        for atom in name.split(".") if name else ():
            module = module._modules[atom]  # type: ignore[assignment]
    except KeyError:
        return model.get_submodule(name)
    if module is None:
        return model.get_submodule(name)
    return module


def tensor_of(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer called ``name``."""
    module_name, _, attr = name.rpartition(".")
    module = submodule(model, module_name)
    tensor = module._parameters.get(attr)
    return tensor if tensor is not None else module._buffers[attr]  # type: ignore[return-value]
