"""The user's batches as ONNX Runtime feeds: what static quantisation observes to choose each
activation's int8 range."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError

__all__ = ["feeds"]


def feeds(batches: Iterable[Any], input_names: Sequence[str],
          input_types: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One ``{input name: array}`` per batch; a batch is the model's input tensor or a tuple of them."""
    out = []
    for batch in batches:
        tensors = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
        if len(tensors) < len(input_names) or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ConfigError(f"quantize: a calibration batch must hold the model's {len(input_names)} input "
                              f"tensor(s) ({', '.join(input_names)}); got {type(batch).__name__} of "
                              f"{len(tensors)}. Pass the inputs only, without labels.")
        out.append({name: t.detach().cpu().numpy().astype(np.int64 if kind == "tensor(int64)" else np.float32)
                    for name, t, kind in zip(input_names, tensors, input_types)})
    if not out:
        raise ConfigError("quantize: the calibration data is empty; static int8 needs batches to observe "
                          "activation ranges. Pass at least one batch (e.g. --calibration-batches 8), or "
                          "use --dynamic.")
    return out
