"""DependencyGraph: every group of channels in a model that must be cut together, built in one step."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit._checks import check_entry, positional_inputs, tensors_in
from prunekit.errors import ConfigError, PrunekitError
from prunekit.graph.constraints import ConstraintStore, Tracked
from prunekit.graph.groups import ChannelGroup
from prunekit.graph.handlers.attention_modules import register_libraries
from prunekit.graph.registry import GROUP_TIES
from prunekit.graph.trace import interpret

__all__ = ["DependencyGraph", "keeps_outputs"]


@dataclass(frozen=True)
class DependencyGraph:
    """The traced model's channel groups; immutable, and names things by string, never by object.

    Build it with :meth:`trace`. ``groups`` lists every coupled dimension (prunable or not, with the
    reason); ``blocked`` lists the ops that stopped pruning through a tensor, as
    ``"<op> in '<module>': <why>"``. ``branches`` lists the Python decisions the forward took on
    values computed from the input (``if x.sum() > 0``): the trace saw one branch only, so pruning
    may break the other (a warning says so when the graph is built). ``mixing`` names the modules
    whose own code mixes channels (a LayerNorm, a channel mean): verification expects their outputs,
    and only theirs, to differ from the masked dense model's. ``untraced`` names the modules holding
    weights that never ran in the trace (a route chosen by an argument, a head run only in training):
    the channels they read are not known, so they may be cut under them (a warning says so; modules
    named in ``ignore`` or ``freeze`` are left out of it).
    """

    groups: tuple[ChannelGroup, ...]
    blocked: tuple[str, ...]
    tensors: tuple[str, ...]
    branches: tuple[str, ...] = ()
    mixing: tuple[str, ...] = ()
    untraced: tuple[str, ...] = ()

    @classmethod
    def trace(cls, model: nn.Module, example_inputs: Any, *, example_kwargs: dict[str, Any] | None = None,
              ignore: Iterable[str] = (), freeze: Iterable[str] = ()) -> DependencyGraph:
        """Run ``model`` once on ``example_inputs`` and derive its channel groups.

        Args:
            model: any ``nn.Module``; it is run in eval mode and left exactly as it was.
            example_inputs: a tensor or a tuple of positional inputs.
            example_kwargs: keyword inputs (e.g. ``attention_mask`` for Hugging Face models).
            ignore: module names whose *outputs* keep every channel (their input channels may
                still be cut, as for a classifier): groups they produce or act on channel-wise are
                marked not prunable; groups they only read are not.
            freeze: module names whose channels are all kept, inputs and outputs: every group
                touching them is marked not prunable.
        """
        check_entry(model, example_inputs, "DependencyGraph.trace")
        example_inputs = positional_inputs(model, example_inputs, "DependencyGraph.trace")
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        modes = modes_of(model)
        model.eval()
        try:
            # NOTE: refreshes for library classes (torchvision's ViT, timm, transformers) register on
            # first use; registered here, the first trace in a process sees them as every later one does.
            register_libraries()
            ctx, out, store = interpret(model, inputs, example_kwargs or {}, ConstraintStore)
        except PrunekitError:
            raise
        except Exception as exc:
            raise PrunekitError(
                f"Tracing {type(model).__name__} failed while running it on the example inputs: "
                f"{type(exc).__name__}: {exc}. Check that the model runs on these inputs "
                f"(shapes, dtypes; keyword inputs as a dict of forward's argument names)."
            ) from exc
        finally:
            restore_modes(modes)
        for t in tensors_in(out, f"DependencyGraph.trace: {type(model).__name__}'s output"):
            for d in ctx.dims(t):
                if isinstance(d, Tracked):
                    store.freeze(d, "model output (its width is part of the model's interface)")
        groups = store.solve()
        for tie in GROUP_TIES:  # NOTE: library code the trace cannot see (hf_modules.tied_widths)
            groups = tie(model, groups)
        ignore, freeze = tuple(ignore), tuple(freeze)
        groups = _apply_ignore(groups, ignore, freeze, model)
        names = tuple(n for n, _ in model.named_parameters()) + tuple(n for n, _ in model.named_buffers())
        branches = tuple(dict.fromkeys(ctx.branches))
        if branches:
            warnings.warn(f"{type(model).__name__}'s forward takes a Python decision on a value computed "
                          f"from the input ({branches[0]}{'; ...' if len(branches) > 1 else ''}): the trace "
                          f"saw one branch only, so pruning may break the other. Make the decision "
                          f"without tensor values, or check the pruned model on inputs taking each "
                          f"branch (graph.branches lists them).", stacklevel=2)
        untraced = tuple(name for name in ctx.untraced
                         if not any(name == n or name.startswith(n + ".") for n in (*ignore, *freeze)))
        if untraced:
            shown = ", ".join(f"'{name}'" for name in untraced[:5])
            more = f" and {len(untraced) - 5} more" if len(untraced) > 5 else ""
            warnings.warn(f"{type(model).__name__}'s forward never ran {shown}{more} on the example inputs (a "
                          f"route chosen by an argument, or code run only in training): the channels they read "
                          f"may be cut under them, and the pruned model then fails there. Pass example inputs "
                          f"that run them, or freeze=[...] the layers that feed them (ignore=[...] naming them "
                          f"silences this; graph.untraced lists them).", stacklevel=2)
        return cls(groups=groups, blocked=tuple(dict.fromkeys(ctx.unknown)), tensors=names, branches=branches,
                   mixing=tuple(sorted(ctx.mixing)), untraced=untraced)

    @property
    def prunable(self) -> tuple[ChannelGroup, ...]:
        """Groups that can be cut."""
        return tuple(g for g in self.groups if g.prunable)

    def freezing(self, ids: Iterable[str], why: str) -> DependencyGraph:
        """This graph with the groups ``ids`` not prunable, ``why`` added to their reasons."""
        frozen = set(ids)
        return replace(self, groups=tuple(replace(g, prunable=False, reasons=g.reasons + (why,))
                                          if g.id in frozen else g for g in self.groups))

    def group(self, group_id: str) -> ChannelGroup:
        """The group called ``group_id`` (raises with the known ids if absent)."""
        for g in self.groups:
            if g.id == group_id:
                return g
        raise ConfigError(f"No channel group '{group_id}' in this graph. Known groups: "
                          f"{', '.join(g.id for g in self.groups[:12])}{' ...' if len(self.groups) > 12 else ''}.")

    def groups_of(self, module: str) -> tuple[ChannelGroup, ...]:
        """Groups with a member in ``module`` (a module name, e.g. ``"conv1"``)."""
        return tuple(g for g in self.groups if module in g.modules)

    def summary(self) -> str:
        """One line per group: id, size, prunable or why not, and its members. A prunable group of one
        unit cannot shrink (any ratio keeps it whole): its line says so, and what made the unit whole."""
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else "fixed: " + "; ".join(g.reasons)
            if g.prunable and g.size == 1 and g.members:
                first = next((m for m in g.members if m.role == "producer"), g.members[0])
                slices = [m for m in g.members if (m.tensor, m.axis) == (first.tensor, first.axis)]
                made = (f"it is cut in {len(slices)} slices of {first.inner} in {first.tensor}[{first.axis}] at once "
                        f"(a channel repeated in each group of a grouped conv or split, joined with whole blocks of "
                        f"{first.inner} such as heads)" if len(slices) > 1 and first.inner > 1 else
                        f"its unit is a block of {first.inner} (heads, or a multiplier)" if first.inner > 1 else
                        "it holds one channel")
                state = (f"prunable but cannot shrink: one unit of all {g.channels_per_unit} channels, as {made}; "
                         f"any ratio keeps it whole")
            exact = "" if g.exact else " (inexact)"
            members = ", ".join(f"{m.tensor}[{m.axis}]" for m in g.members)
            lines.append(f"{g.id:<40} {g.size:>6}  {state}{exact}  <- {members}")
        return "\n".join(lines)


def keeps_outputs(group: ChannelGroup, modules: Iterable[str]) -> str | None:
    """The first of ``modules`` (or a module under it) whose outputs are in ``group``: it produces
    these channels or acts on them channel-wise. A module that only reads them is not counted."""
    for name in modules:
        for m in group.members:
            if m.role != "consumer" and (m.module == name or m.module.startswith(name + ".")):
                return name
    return None


def _touching(group: ChannelGroup, modules: Iterable[str]) -> str | None:
    for name in modules:
        if any(m == name or m.startswith(name + ".") for m in group.modules):
            return name
    return None


def _apply_ignore(groups: tuple[ChannelGroup, ...], ignore: tuple[str, ...], freeze: tuple[str, ...],
                  model: nn.Module) -> tuple[ChannelGroup, ...]:
    if not ignore and not freeze:
        return groups
    modules = {name for name, _ in model.named_modules()}
    for option, names in (("ignore", ignore), ("freeze", freeze)):
        unknown = [name for name in names if name not in modules]
        if unknown:
            from prunekit.errors import did_you_mean

            raise ConfigError(f"{option} names modules the model does not have: {unknown}."
                              f"{did_you_mean(unknown[0], modules)} Use names from model.named_modules().")
    result = []
    for g in groups:
        if g.prunable:
            frozen, ignored = _touching(g, freeze), keeps_outputs(g, ignore)
            if frozen is not None:
                g = replace(g, prunable=False, reasons=g.reasons + (f"frozen: {frozen}",))
            elif ignored is not None:
                g = replace(g, prunable=False, reasons=g.reasons + (f"ignored: {ignored} (its outputs are kept)",))
        result.append(g)
    return tuple(result)
