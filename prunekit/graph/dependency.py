"""DependencyGraph: every group of channels in a model that must be cut together, built in one step."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunekit._checks import check_entry
from prunekit.errors import ConfigError, PrunekitError
from prunekit.graph.constraints import ConstraintStore, Tracked
from prunekit.graph.groups import ChannelGroup
from prunekit.graph.trace import interpret

__all__ = ["DependencyGraph"]


@dataclass(frozen=True)
class DependencyGraph:
    """The traced model's channel groups; immutable, and names things by string, never by object.

    Build it with :meth:`trace`. ``groups`` lists every coupled dimension (prunable or not, with the
    reason); ``blocked`` lists the ops that stopped pruning through a tensor, as
    ``"<op> in '<module>': <why>"``.
    """

    groups: tuple[ChannelGroup, ...]
    blocked: tuple[str, ...]
    tensors: tuple[str, ...]

    @classmethod
    def trace(cls, model: nn.Module, example_inputs: Any, *, example_kwargs: dict[str, Any] | None = None,
              ignore: Iterable[str] = ()) -> DependencyGraph:
        """Run ``model`` once on ``example_inputs`` and derive its channel groups.

        Args:
            model: any ``nn.Module``; it is run in eval mode and left exactly as it was.
            example_inputs: a tensor or a tuple of positional inputs.
            example_kwargs: keyword inputs (e.g. ``attention_mask`` for Hugging Face models).
            ignore: module names (or prefixes) whose parameters must keep every channel; groups
                touching them are marked not prunable.
        """
        check_entry(model, example_inputs, "DependencyGraph.trace")
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        was_training = model.training
        model.eval()
        try:
            ctx, out, store = interpret(model, inputs, example_kwargs or {}, ConstraintStore)
        except PrunekitError:
            raise
        except Exception as exc:
            raise PrunekitError(
                f"Tracing {type(model).__name__} failed while running it on the example inputs: "
                f"{type(exc).__name__}: {exc}. Check that the model runs on these inputs "
                f"(shapes, dtypes, keyword inputs via example_kwargs)."
            ) from exc
        finally:
            model.train(was_training)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                for d in ctx.dims(t):
                    if isinstance(d, Tracked):
                        store.freeze(d, "model output (its width is part of the model's interface)")
        groups = _apply_ignore(store.solve(), tuple(ignore), model)
        names = tuple(n for n, _ in model.named_parameters()) + tuple(n for n, _ in model.named_buffers())
        return cls(groups=groups, blocked=tuple(dict.fromkeys(ctx.unknown)), tensors=names)

    @property
    def prunable(self) -> tuple[ChannelGroup, ...]:
        """Groups that can be cut."""
        return tuple(g for g in self.groups if g.prunable)

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
        """One line per group: id, size, prunable or why not, and its members."""
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else "fixed: " + "; ".join(g.reasons)
            exact = "" if g.exact else " (inexact)"
            members = ", ".join(f"{m.tensor}[{m.axis}]" for m in g.members)
            lines.append(f"{g.id:<40} {g.size:>6}  {state}{exact}  <- {members}")
        return "\n".join(lines)


def _apply_ignore(groups: tuple[ChannelGroup, ...], ignore: tuple[str, ...],
                  model: nn.Module) -> tuple[ChannelGroup, ...]:
    if not ignore:
        return groups
    modules = {name for name, _ in model.named_modules()}
    unknown = [name for name in ignore if name not in modules]
    if unknown:
        from prunekit.errors import did_you_mean

        raise ConfigError(f"ignore names modules the model does not have: {unknown}."
                          f"{did_you_mean(unknown[0], modules)} Use names from model.named_modules().")
    from dataclasses import replace

    result = []
    for g in groups:
        hit = [n for n in ignore if any(m == n or m.startswith(n + ".") for m in g.modules)]
        if hit and g.prunable:
            g = replace(g, prunable=False, reasons=g.reasons + (f"ignored: {hit[0]}",))
        result.append(g)
    return tuple(result)
