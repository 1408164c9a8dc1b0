"""The class names a model records for its outputs (a Hugging Face config's ``id2label``), so data
whose classes are named can be scored in the model's order rather than in sorted-folder order."""

from __future__ import annotations

import re

from torch import nn

__all__ = ["label_names"]

_GENERIC = re.compile(r"LABEL_\d+")  # NOTE: what transformers fills id2label with when none is given


def label_names(model: nn.Module) -> tuple[str, ...] | None:
    """Output ``i``'s class name for every output, from ``model.config.id2label``; None where the
    model records none, or only transformers' placeholders (``LABEL_0``...)."""
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        ordered = sorted((int(i), str(name)) for i, name in id2label.items())
    except (TypeError, ValueError):
        return None
    if [i for i, _ in ordered] != list(range(len(ordered))):
        return None
    names = tuple(name for _, name in ordered)
    return None if all(_GENERIC.fullmatch(n) for n in names) else names
