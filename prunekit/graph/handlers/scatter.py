"""``masked_scatter``: rows of a source tensor fill the masked rows of the input (multimodal models
place image features at their image tokens this way)."""

from __future__ import annotations

import torch

from prunekit.graph.registry import register_rule, resolve


@register_rule(*resolve("masked_scatter", "masked_scatter_"))
def masked_scatter(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Where the mask selects whole rows (the same value along the last dim), the output's last dim,
    the input's and the source's hold the same channels; anything else is opaque."""
    given = list(args) + [kwargs.get(k) for k in ("input", "mask", "source")[len(args):]]
    x, mask, source = given[:3]
    if not all(isinstance(t, torch.Tensor) for t in (x, mask, source, out)):
        return ctx.opaque(args, kwargs, out, "masked_scatter with arguments it cannot read")
    whole_rows = (mask.dim() >= 1 and source.dim() >= 1 and x.dim() >= 1 and out.shape == x.shape
                  and source.shape[-1] == x.shape[-1] and mask.shape[-1] in (1, x.shape[-1])
                  and bool((mask.all(-1) == mask.any(-1)).all()))
    if not whole_rows:
        return ctx.opaque(args, kwargs, out, "masked_scatter of parts of rows")
    dims = ctx.dims(x)
    last = ctx.store.unify(dims[-1], ctx.dims(source)[-1], ctx.where)
    ctx.set(out, dims[:-1] + [last])
