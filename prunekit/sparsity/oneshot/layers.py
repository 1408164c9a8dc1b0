"""The layers one-shot pruning understands, each seen as a GEMM ``Y = W X``.

A layer's weight is viewed as a matrix ``W[out, in]`` whose columns line up with the features of
the layer's input rows ``X[tokens, in]``: ``nn.Linear`` directly, Hugging Face's ``Conv1D`` (GPT-2;
its weight is stored transposed) and ``nn.Conv2d`` with ``groups=1`` through ``unfold`` (one row of
``X`` per output position, ``in = kh * kw * C`` channels-last, the order of
``weight.permute(0, 2, 3, 1)``: an N:M group is M consecutive input channels at one kernel position,
as sparse convolution kernels need). The weight read and written is the one the forward uses: a
parametrized weight (``weight_norm``) is written through the parametrization's ``right_inverse``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prunekit.sparsity.report import own_forward

__all__ = ["is_supported", "unsupported_reason", "get_matrix", "set_matrix", "input_rows", "matrix_shape"]


def _is_hf_conv1d(module: nn.Module) -> bool:
    # NOTE: duck-typed so transformers stays an optional dependency.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be pruned one-shot (None when it can)."""
    if _is_hf_conv1d(module):
        return None
    if (reason := own_forward(module)) is not None:
        return reason
    if isinstance(module, nn.Linear):
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
    """A float32 copy of the weight the forward uses, as ``W[out, in]``."""
    with torch.no_grad():
        weight = module.weight.detach()
    if _is_hf_conv1d(module):
        return weight.t().float().clone()
    if weight.dim() == 4:  # NOTE: channels-last, so N:M groups run along the input channels
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(weight.shape[0], -1).float().clone()


def set_matrix(module: nn.Module, matrix: torch.Tensor) -> None:
    """Write ``W[out, in]`` back into the module's weight, in its own layout and dtype; a
    parametrized weight through its parametrization's ``right_inverse`` (may raise)."""
    with torch.no_grad():
        weight = module.weight
        if _is_hf_conv1d(module):
            value = matrix.t()
        elif weight.dim() == 4:
            out, c, kh, kw = weight.shape
            value = matrix.reshape(out, kh, kw, c).permute(0, 3, 1, 2)
        else:
            value = matrix.reshape(weight.shape)
        if parametrize.is_parametrized(module, "weight"):
            module.weight = value.to(weight.dtype).contiguous()
        else:
            weight.copy_(value.to(weight.dtype))


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as GEMM rows ``X[tokens, in]`` (float32)."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x.float(), module.kernel_size, dilation=module.dilation,
                        padding=module.padding, stride=module.stride)  # [N, C*kh*kw, L]
        n, features, positions = cols.shape
        c = module.in_channels
        cols = cols.reshape(n, c, features // c, positions).transpose(1, 2)  # [N, kh*kw, C, L]
        return cols.reshape(n, features, positions).transpose(1, 2).reshape(-1, features)
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
