"""TorchScript modules inside an eager model (``torch.jit.script(block)``, ``torch.jit.trace``):
their forward runs in TorchScript's interpreter, where the trace sees no op, so nothing tells which
channels they read or write. Every channel of their inputs is kept, with the reason (script the
pruned model again afterwards, or pass the eager module); their outputs carry no channels."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from prunekit.graph.constraints import Tracked
from prunekit.graph.registry import register_module_rule

__all__ = ["opaque_script_module"]


@register_module_rule(torch.jit.ScriptModule, torch.jit.RecursiveScriptModule)
def opaque_script_module(ctx: Any, module: Any, args: tuple[Any, ...]) -> dict[int, list[Any]]:
    """Module rule: freeze every channel of every tensor the TorchScript module is given."""
    where = f"'{ctx.scope[-1]}'" if ctx.scope[-1] else "the root module"
    for x in tree_flatten(args)[0]:
        if isinstance(x, torch.Tensor):
            for d in ctx.dims(x):
                if isinstance(d, Tracked):
                    ctx.store.freeze(d, f"{where} is a TorchScript module: its code runs where the trace cannot "
                                        f"see it (pass the eager module, and script the pruned one)")
    return {}
