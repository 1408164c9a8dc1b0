"""Attention that adds a per-head bias the model builds for all its heads (ALiBi: BLOOM, MPT, Falcon).

The model computes the bias once, from its own head count, and passes it to every layer; its slopes
depend on each head's index, so a layer that keeps other heads cannot rebuild it from a smaller
count. In the trace, the bias meeting a layer's heads (``alibi.baddbmm(q, k)``, ``scores +
position_bias``) joins the heads group as a selection instead of freezing them (``select``); once
pruned, the layer becomes a :class:`SelectedBiasHeads` of its own class that keeps the rows of its
heads from the full bias (``kept_heads``). The model's head count, which builds the bias, stays:
the config keeps it (``pinned_fields``), so transformers' own loader refuses the folder instead of
building other slopes; prunekit.load rebuilds the layers and their kept heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.graph.registry import FIXED_SELECTS, SELECTIONS

__all__ = ["BiasSpec", "SelectedBiasHeads", "spec_for", "select", "bias_attribute", "pinned_fields", "ATTRIBUTE"]


@dataclass(frozen=True)
class BiasSpec:
    """Where a layer's forward takes the bias: argument ``name`` (or positional argument ``index``,
    from 0, ``self`` not counted), its head axis first, folded with the batch (``[B * H, ...]``) where
    ``merged``; ``heads``: the layer's attribute that holds its head count; ``field``: the config field
    that holds the model's."""

    name: str
    index: int
    merged: bool
    heads: str
    field: str


# module -> class name -> where its forward takes the bias (looked up by name: prunekit never imports them)
SPECS: dict[str, dict[str, BiasSpec]] = {
    "transformers.models.bloom.modeling_bloom": {"BloomAttention": BiasSpec("alibi", 2, True, "num_heads", "n_head")},
    "transformers.models.mpt.modeling_mpt": {"MptAttention": BiasSpec("position_bias", 1, False, "n_heads", "n_heads")},
}
ATTRIBUTE = "#bias_heads"  # the group attribute that records the heads a layer keeps of the bias


def spec_for(module: nn.Module) -> BiasSpec | None:
    """The bias spec of ``module``'s class (or of the library class it extends), if any."""
    for klass in type(module).__mro__:
        spec = SPECS.get(klass.__module__, {}).get(klass.__name__)
        if spec is not None:
            return spec
    return None


def bias_attribute(scope: str) -> str:
    """The name under which a layer's kept bias heads join its heads group (``ChannelGroup.attrs``)."""
    return f"@{scope}|{ATTRIBUTE}|"


def select(ctx: Any, layout: Any) -> bool:
    """In the trace: heads of the running layer meet a fixed-size tensor. True (and the heads are
    recorded as selecting that many rows of the layer's bias) when the layer takes a per-head bias
    (``SPECS``) and ``layout`` is one of its head layouts; False leaves the caller to freeze them."""
    module = ctx.module
    if module is None or spec_for(module) is None:
        return False
    heads = ctx.heads.get(id(module), [])
    if not any(layout.segments == h.segments for h in heads):
        return False
    at = len(ctx.modules) - 1 - ctx.modules[::-1].index(module)  # NOTE: scope[0] is the root's
    ctx.store.use(layout, bias_attribute(ctx.scope[at + 1]), 0, "passive")
    return True


class SelectedBiasHeads(nn.Module):
    """A layer of a library class that keeps ``kept_heads`` of the per-head bias its model passes.

    Made by :meth:`from_module` as a subclass of the layer's own class (same parameters, children,
    attributes and state-dict keys; its forward is the library's, given the bias rows of the kept
    heads). ``kept_heads`` is a non-persistent buffer, saved beside the weights by prunekit.save.
    """

    kept_heads: torch.Tensor

    @classmethod
    def from_module(cls, module: nn.Module, kept: torch.Tensor | None = None) -> nn.Module:
        """``module`` as a layer that keeps the bias rows ``kept`` (default: all its heads, the
        placeholder a loader fills from the saved buffer)."""
        new = _rebuild(_library_class(type(module)), module.__dict__)
        new._buffers = dict(module._buffers)  # NOTE: its own, so the old module gets no kept_heads
        new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
        if kept is None:
            kept = torch.arange(_head_count(module))
        new.register_buffer("kept_heads", kept.to(torch.long), persistent=False)
        return new

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        spec = spec_for(self)
        assert spec is not None
        batch = (args[0] if args else next(iter(kwargs.values()))).shape[0]
        if spec.name in kwargs:
            kwargs[spec.name] = self._rows(kwargs[spec.name], spec, batch)
        elif len(args) > spec.index:
            args = (*args[:spec.index], self._rows(args[spec.index], spec, batch), *args[spec.index + 1:])
        return super().forward(*args, **kwargs)

    def _rows(self, bias: torch.Tensor | None, spec: BiasSpec, batch: int) -> torch.Tensor | None:
        """The kept heads' rows of ``bias`` (built for the model's heads)."""
        if bias is None:
            return None
        kept = self.kept_heads.to(bias.device)
        if not spec.merged:
            return bias.index_select(0, kept)
        rest = bias.shape[1:]
        return bias.reshape(batch, -1, *rest).index_select(1, kept).reshape(-1, *rest)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle and deepcopy rebuild the subclass from the library class (it is made at run time)."""
        return _rebuild, (_library_class(type(self)), self.__dict__)


def _library_class(klass: type) -> type:
    """The layer's own class: ``klass`` itself, or the one a :class:`SelectedBiasHeads` extends."""
    return next(k for k in klass.__mro__ if k is not SelectedBiasHeads and not issubclass(k, SelectedBiasHeads))


_SUBCLASSES: dict[type, type] = {}


def _subclass(base: type) -> type:
    """The :class:`SelectedBiasHeads` subclass of ``base`` (one per class, made on first use). Its
    path is this module's ``SelectedBiasHeads``, so a saved layout names the prunekit class."""
    if base not in _SUBCLASSES:
        _SUBCLASSES[base] = type(base.__name__, (SelectedBiasHeads, base),
                                 {"__module__": __name__, "__qualname__": SelectedBiasHeads.__qualname__})
    return _SUBCLASSES[base]


def _rebuild(base: type, state: dict[str, Any]) -> nn.Module:
    module = _subclass(base).__new__(_subclass(base))
    module.__dict__.update(state)
    return module


def _head_count(module: nn.Module) -> int:
    """The layer's head count, from the attribute its spec names."""
    spec = spec_for(module)
    assert spec is not None
    return int(getattr(module, spec.heads))


def pinned_fields(model: nn.Module) -> set[str]:
    """Config fields that must keep their value: the head count a model builds its bias from."""
    return {spec.field for m in model.modules() if isinstance(m, SelectedBiasHeads)
            for spec in [spec_for(m)] if spec is not None}


def drop_heads(module: nn.Module, removed: list[int]) -> nn.Module:
    """After slicing: ``module`` as a layer that keeps the bias rows of the heads not ``removed``
    (its heads as the trace saw them, before its refresh)."""
    kept = [h for h in range(_head_count(module)) if h not in set(removed)]
    return SelectedBiasHeads.from_module(module, torch.tensor(kept, dtype=torch.long))


FIXED_SELECTS.append(select)
SELECTIONS[ATTRIBUTE] = drop_heads
