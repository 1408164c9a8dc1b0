"""The layers one-shot pruning understands, each seen as a GEMM ``Y = W X``.

A layer's weight is viewed as a matrix ``W[out, in]`` whose columns line up with the features of
the layer's input rows ``X[tokens, in]``: ``nn.Linear`` directly, Hugging Face's ``Conv1D`` (GPT-2;
its weight is stored transposed) and ``nn.Conv2d`` with ``groups=1`` through ``unfold`` (one row of
``X`` per output position, ``in = C * kh * kw`` in the order of ``weight.reshape(out, -1)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["is_supported", "unsupported_reason", "get_matrix", "set_matrix", "input_rows", "matrix_shape"]


def _is_hf_conv1d(module: nn.Module) -> bool:
    # NOTE: duck-typed so transformers stays an optional dependency.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be pruned one-shot (None when it can)."""
    if isinstance(module, nn.Linear) or _is_hf_conv1d(module):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"Conv2d with groups={module.groups} (grouped/depthwise) is not supported"
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return "Conv2d with non-zero or string padding is not supported"
        return None
    return f"{type(module).__name__} is not a Linear, Conv1D or Conv2d"


def is_supported(module: nn.Module) -> bool:
    """True for the layer types one-shot pruning can calibrate and prune."""
    return isinstance(module, (nn.Linear, nn.Conv2d)) or _is_hf_conv1d(module)


def get_matrix(module: nn.Module) -> torch.Tensor:
    """A float32 copy of the weight as ``W[out, in]``."""
    weight = module.weight.detach()
    if _is_hf_conv1d(module):
        return weight.t().float().clone()
    return weight.reshape(weight.shape[0], -1).float().clone()


def set_matrix(module: nn.Module, matrix: torch.Tensor) -> None:
    """Write ``W[out, in]`` back into the module's weight, in its own layout and dtype."""
    weight = module.weight
    value = matrix.t() if _is_hf_conv1d(module) else matrix.reshape(weight.shape)
    with torch.no_grad():
        weight.copy_(value.to(weight.dtype))


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as GEMM rows ``X[tokens, in]`` (float32)."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x.float(), module.kernel_size, dilation=module.dilation,
                        padding=module.padding, stride=module.stride)  # [N, C*kh*kw, L]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1]).float()


def matrix_shape(module: nn.Module) -> tuple[int, int]:
    """``(out, in)`` of the layer's ``W[out, in]`` view, without copying the weight."""
    shape = tuple(module.weight.shape)
    if _is_hf_conv1d(module):
        return shape[1], shape[0]
    rest = 1
    for size in shape[1:]:
        rest *= size
    return shape[0], rest
