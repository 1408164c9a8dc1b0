"""The factorised layers as plain ``nn.Sequential`` shells, and their MACs, per kind.

A *shell* has the factorised architecture with uninitialised weights; the factorisations fill it
and :func:`prunekit.load` rebuilds it from the saved manifest. Ranks are in
data-flow order: ``svd``/``asvd`` ``(r,)``, ``tucker2`` ``(r_in, r_out)``, ``cp`` ``(R,)``.

=========  ===================================================================================
kind       replacement
=========  ===================================================================================
svd        Linear: Linear(in, r) -> Linear(r, out, bias).  Conv2d (groups 1): k x k Conv(C, r)
           with the original stride/padding/dilation -> 1x1 Conv(r, N, bias).  transformers'
           Conv1D (x W + b, W stored in x out) as the Linear it computes
tucker2    1x1 Conv(C, r_in) -> k x k Conv(r_in, r_out) (original geometry) -> 1x1 Conv(r_out, N, bias)
           (Kim et al. 2016)
cp         1x1 Conv(C, R) -> depthwise kh x 1 Conv -> depthwise 1 x kw Conv -> 1x1 Conv(R, N, bias)
           (Lebedev et al. 2015)
=========  ===================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunekit._seed import seeded
from prunekit.errors import ConfigError

__all__ = ["LayerIO", "shell", "layer_macs", "original_macs", "copy_bias", "conv1d_class", "linear_view",
           "KINDS"]

KINDS = ("svd", "asvd", "tucker2", "cp")


@dataclass(frozen=True)
class LayerIO:
    """Shapes one layer saw on the example input: input and output, batch included."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` (GPT-2's Linear that stores its weight in x out), if transformers is loaded.

    NOTE: looked up, not imported: a model holding a Conv1D has imported transformers already.
    """
    cls = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return cls if isinstance(cls, type) else None


def linear_view(module: nn.Module) -> nn.Module:
    """``module`` as the nn.Linear it computes, for factorising and shells; other modules as they are.

    transformers' ``Conv1D`` computes ``x W + b`` with W stored in x out: its view is an nn.Linear
    whose weight is W^T (a view of the same tensor, not a copy) with the same bias.
    """
    cls = conv1d_class()
    if cls is None or not isinstance(module, cls):
        return module
    w, b = module.weight, module.bias
    if not isinstance(w, torch.Tensor) or not isinstance(b, (torch.Tensor, type(None))):
        return module
    view = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, device="meta")
    view.weight = nn.Parameter(w.detach().T, requires_grad=False)
    if b is not None:
        view.bias = nn.Parameter(b.detach(), requires_grad=False)
    return view.train(module.training)


def _conv(module: nn.Conv2d, cin: int, cout: int, *, kernel: tuple[int, int] = (1, 1),
          stride: tuple[int, int] = (1, 1), padding: str | tuple[int, int] = (0, 0),
          dilation: tuple[int, int] = (1, 1), groups: int = 1, bias: bool = False) -> nn.Conv2d:
    w = module.weight
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias, padding_mode=module.padding_mode,
                     device=w.device, dtype=w.dtype)


def _axis(value: str | tuple[int, ...], axis: int) -> str | tuple[int, int]:
    """The padding of one spatial axis only (the other axis unpadded), for the CP depthwise pair."""
    if isinstance(value, str):
        return value  # NOTE: 'same'/'valid' pad a 1-wide kernel axis by 0, so they carry over.
    return (value[0], 0) if axis == 0 else (0, value[1])


def _linear_svd(module: nn.Linear, rank: int) -> nn.Sequential:
    w = module.weight
    first = nn.Linear(module.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
    second = nn.Linear(rank, module.out_features, bias=module.bias is not None,
                       device=w.device, dtype=w.dtype)
    return nn.Sequential(first, second)


def _conv_svd(module: nn.Conv2d, rank: int) -> nn.Sequential:
    first = _conv(module, module.in_channels, rank, kernel=module.kernel_size, stride=module.stride,
                  padding=module.padding, dilation=module.dilation)
    return nn.Sequential(first, _conv(module, rank, module.out_channels, bias=module.bias is not None))


def _tucker2(module: nn.Conv2d, r_in: int, r_out: int) -> nn.Sequential:
    return nn.Sequential(
        _conv(module, module.in_channels, r_in),
        _conv(module, r_in, r_out, kernel=module.kernel_size, stride=module.stride,
              padding=module.padding, dilation=module.dilation),
        _conv(module, r_out, module.out_channels, bias=module.bias is not None))


def _cp(module: nn.Conv2d, rank: int) -> nn.Sequential:
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    return nn.Sequential(
        _conv(module, module.in_channels, rank),
        _conv(module, rank, rank, kernel=(kh, 1), stride=(sh, 1), padding=_axis(module.padding, 0),
              dilation=(dh, 1), groups=rank),
        _conv(module, rank, rank, kernel=(1, kw), stride=(1, sw), padding=_axis(module.padding, 1),
              dilation=(1, dw), groups=rank),
        _conv(module, rank, module.out_channels, bias=module.bias is not None))


def shell(kind: str, module: nn.Module, ranks: Sequence[int]) -> nn.Sequential:
    """The factorised replacement of ``module`` for ``kind`` at ``ranks``, weights not yet set
    (transformers' Conv1D is replaced as the nn.Linear it computes)."""
    ranks = tuple(int(r) for r in ranks)
    module = linear_view(module)
    expected = 2 if kind == "tucker2" else 1
    if kind not in KINDS or len(ranks) != expected or min(ranks, default=0) < 1:
        raise ConfigError(f"shell: kind must be one of {', '.join(KINDS)} with {expected} positive "
                          f"rank(s); got kind {kind!r}, ranks {ranks}. Pass e.g. ('svd', (8,)) or "
                          f"('tucker2', (8, 16)).")
    weight = getattr(module, "weight", None)
    # NOTE: nn.Linear/nn.Conv2d initialise their weights from torch's global RNG; a shell's are
    # overwritten, so they are drawn from a seeded fork and the caller's RNG state is kept.
    with seeded(0, weight.device if isinstance(weight, torch.Tensor) else None):
        if isinstance(module, nn.Linear) and kind in ("svd", "asvd"):
            return _linear_svd(module, ranks[0])
        if isinstance(module, nn.Conv2d):
            if kind == "svd":
                return _conv_svd(module, ranks[0])
            if kind == "tucker2":
                return _tucker2(module, *ranks)
            if kind == "cp":
                return _cp(module, ranks[0])
    raise ConfigError(f"shell: kind {kind!r} cannot replace a {type(module).__name__}. svd/asvd "
                      f"replace nn.Linear and transformers' Conv1D (svd also nn.Conv2d); tucker2 and cp replace "
                      f"nn.Conv2d.")


def _positions(shape: Sequence[int], channel_axis_size: int) -> int:
    """How many rows a layer's weight is applied to (tokens x batch, or pixels x batch)."""
    total = 1
    for s in shape:
        total *= int(s)
    return total // max(channel_axis_size, 1)


def original_macs(module: nn.Module, io: LayerIO) -> int:
    """MACs of the unfactorised layer on the recorded shapes (what FlopCounterMode counts)."""
    if isinstance(module, nn.Linear):
        return _positions(io.input_shape, module.in_features) * module.in_features * module.out_features
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        rows = _positions(io.output_shape, module.out_channels)
        return rows * module.out_channels * (module.in_channels // module.groups) * kh * kw
    raise ConfigError(f"original_macs: {type(module).__name__} is not nn.Linear or nn.Conv2d.")


def layer_macs(kind: str, module: nn.Module, ranks: Sequence[int], io: LayerIO) -> int:
    """MACs of the factorised form of ``module`` (``kind`` at ``ranks``) on the recorded shapes."""
    if isinstance(module, nn.Linear):
        return _positions(io.input_shape, module.in_features) * ranks[0] * (
            module.in_features + module.out_features)
    if not isinstance(module, nn.Conv2d):
        raise ConfigError(f"layer_macs: {type(module).__name__} is not nn.Linear or nn.Conv2d.")
    (kh, kw), c, n = module.kernel_size, module.in_channels, module.out_channels
    pixels_in = _positions(io.input_shape, c)
    pixels_out = _positions(io.output_shape, n)
    if kind == "svd":
        return pixels_out * ranks[0] * (c * kh * kw + n)
    if kind == "tucker2":
        r_in, r_out = ranks
        return pixels_in * c * r_in + pixels_out * (r_in * r_out * kh * kw + r_out * n)
    if kind == "cp":
        rank = ranks[0]
        # NOTE: the vertical depthwise conv already has the output height but the input width.
        batch, width_in = io.input_shape[0], io.input_shape[-1]
        height_out = io.output_shape[-2]
        return (pixels_in * c * rank + batch * height_out * width_in * rank * kh
                + pixels_out * rank * (kw + n))
    raise ConfigError(f"layer_macs: unknown kind {kind!r}; expected one of {', '.join(KINDS)}.")


def copy_bias(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s bias (if any) into ``target`` (the last layer of a shell)."""
    if getattr(source, "bias", None) is not None:
        with torch.no_grad():
            target.bias.copy_(source.bias)
