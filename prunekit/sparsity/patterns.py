"""Sparsity patterns: which entries of a weight a score tensor keeps.

A pattern turns per-entry scores (higher = more important) into a boolean keep-mask of the same
shape. Weights are viewed as a 2-D matrix ``[out, in]``: the reduction dimension of the GEMM the
layer lowers to, which is the dimension hardware N:M kernels (2:4 on Ampere and later) group along.
A convolution weight ``[out, in, *kernel]`` is viewed channels-last, ``[out, *kernel * in]``, so an
N:M group is M consecutive input channels at one kernel position, as sparse convolution kernels
(TensorRT, NVIDIA's ASP) need. A layer that stores its weight otherwise (a transposed conv's
``[in, out/groups, *kernel]``, Hugging Face's ``Conv1D`` ``[in, out]``) is read through
:func:`standard_view` first, so its groups too run along its input channels. Ties are broken by
position so the same scores always give the same mask.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from prunekit.errors import ConfigError

__all__ = ["check_fraction", "sparsity_of", "pattern_sparsity", "Pattern", "mask_from_scores", "topk_mask",
           "nm_mask", "block_mask", "block_scores", "expand_blocks", "check_layer", "standard_view",
           "from_standard_view"]

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Pattern:
    """Unstructured, N:M (``n`` kept of every ``m`` along the input dim) or ``bh x bw`` blocks."""

    kind: Literal["unstructured", "nm", "block"] = "unstructured"
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (1, 1)

    @classmethod
    def parse(cls, spec: str | Pattern | None) -> Pattern:
        """Read ``"unstructured"``, ``"2:4"``, ``"4:8"``, ``"1x4"`` or ``"4x4"``."""
        if spec is None:
            return cls()
        if isinstance(spec, Pattern):
            return spec
        text = str(spec).strip().lower()
        if text in ("", "unstructured", "none"):
            return cls()
        if match := _NM.match(text):
            n, m = int(match[1]), int(match[2])
            if not 0 < n < m:
                raise ConfigError(f"N:M pattern '{spec}' needs 0 < N < M (e.g. 2:4 keeps 2 of every 4)")
            return cls(kind="nm", n=n, m=m)
        if match := _BLOCK.match(text):
            bh, bw = int(match[1]), int(match[2])
            if bh < 1 or bw < 1 or bh * bw == 1:
                raise ConfigError(f"block pattern '{spec}' needs blocks of at least 2 entries, e.g. 1x4 or 4x4")
            return cls(kind="block", block=(bh, bw))
        raise ConfigError(
            f"sparsity pattern '{spec}' is not understood; use 'unstructured', an N:M pattern such "
            "as '2:4' or '4:8', or a block shape such as '1x4' or '4x4'"
        )

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (``1 - n/m``); None for the others."""
        return 1.0 - self.n / self.m if self.kind == "nm" else None

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"{self.block[0]}x{self.block[1]}"
        return "unstructured"


def _as_matrix(scores: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` view; a conv weight ``[out, in, *kernel]`` goes channels-last first."""
    if scores.dim() == 0:
        raise ConfigError("cannot sparsify a scalar parameter")
    if scores.dim() > 2:
        scores = scores.movedim(1, -1)
    return scores.reshape(scores.shape[0], -1) if scores.dim() > 1 else scores.reshape(1, -1)


def _from_matrix(matrix: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`_as_matrix`: a ``[out, in]`` view back to a weight of ``shape``."""
    if len(shape) > 2:
        return matrix.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
    return matrix.reshape(shape)


def _keep_largest(flat: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask keeping the ``keep`` largest entries of a 1-D tensor (stable on ties)."""
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:keep]] = True
    return mask


def check_fraction(value: Any, *, owner: str, name: str = "sparsity") -> float:
    """``value`` as a float in [0, 1] (a fraction of weights set to zero), or the four-part error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NOTE: also rejects NaN
        raise ConfigError(f"{owner}: '{name}' must be a fraction in [0, 1] of the weights to zero; "
                          f"got {value!r}. Pass e.g. {name}=0.9.")
    return number


def sparsity_of(value: Any, *, owner: str) -> Any:
    """The fraction of weights to zero that a budget names: a :class:`~prunekit.structured.Target`
    of kind ``ratio`` (the fraction removed) gives its value; numbers and None pass unchanged."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    from prunekit.structured.target import Target  # NOTE: lazy: pydantic only when a Target is passed.

    if isinstance(value, Target):
        if value.kind != "ratio":
            raise ConfigError(f"{owner}: a sparsity budget is the fraction of weights set to zero, "
                              f"Target(ratio=...); got Target({value.kind}={value.value}). Pass e.g. "
                              f"Target(ratio=0.9) to zero 90 % of the weights.")
        return value.value
    return value


def pattern_sparsity(asked: Any, pattern: Pattern, *, owner: str) -> Any:
    """The sparsity an N:M ``pattern`` fixes (``1 - N/M``), refusing a different ``asked`` one (None
    takes it); ``asked`` unchanged for the other patterns, which leave it free."""
    fixed = pattern.fixed_sparsity
    if fixed is None:
        return asked
    if asked is not None and not math.isclose(check_fraction(asked, owner=owner), fixed):
        raise ConfigError(f"{owner}: the {pattern} pattern zeroes exactly {fixed:g} of the weights, but "
                          f"sparsity={asked} was asked for. Pass sparsity={fixed:g} (or None) with this pattern.")
    return fixed


def _is_hf_conv1d(module: nn.Module) -> bool:
    # NOTE: duck-typed so transformers stays an optional dependency; by the class's bases, since a
    # masked layer's class is parametrize's subclass ("ParametrizedConv1D").
    return any(kind.__name__ == "Conv1D" for kind in type(module).__mro__) and hasattr(module, "nf")


def standard_view(tensor: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``tensor`` (shaped as ``module.weight``) in the ``[out, in/groups, *kernel]`` order the
    patterns read: a transposed conv's ``[in, out/groups, *kernel]`` becomes the conv weight it
    transposes, Hugging Face's ``Conv1D`` ``[in, out]`` is transposed; other layers pass unchanged."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        groups, (cin, cout_g, *kernel) = module.groups, tensor.shape
        return (tensor.reshape(groups, cin // groups, cout_g, *kernel).transpose(1, 2)
                .reshape(groups * cout_g, cin // groups, *kernel))
    if _is_hf_conv1d(module) and tensor.dim() == 2:
        return tensor.t()
    return tensor


def from_standard_view(view: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The inverse of :func:`standard_view`: back to the layout of ``module.weight``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        groups, (cout, cin_g, *kernel) = module.groups, view.shape
        return (view.reshape(groups, cout // groups, cin_g, *kernel).transpose(1, 2)
                .reshape(groups * cin_g, cout // groups, *kernel).contiguous())
    if _is_hf_conv1d(module) and view.dim() == 2:
        return view.t().contiguous()
    return view


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the ``round((1 - sparsity) * numel)`` highest-scoring entries of the whole tensor."""
    sparsity = check_fraction(sparsity, owner="topk_mask")
    flat = scores.detach().reshape(-1).float()
    keep = flat.numel() - int(round(sparsity * flat.numel()))
    return _keep_largest(flat, keep).reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive entries along the input dimension (for a
    conv weight ``[out, in, *kernel]``: ``m`` consecutive input channels at each kernel position)."""
    matrix = _as_matrix(scores.detach().float())
    rows, cols = matrix.shape
    if cols % m:
        raise ConfigError(
            f"an {n}:{m} pattern needs the input dimension to be a multiple of {m}; this weight "
            f"{tuple(scores.shape)} has {cols} inputs per output. Exclude the layer or use 'unstructured'"
        )
    groups = matrix.reshape(rows, cols // m, m)
    # Stable ranking inside each group: argsort twice gives every entry its rank.
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    rank = torch.argsort(order, dim=-1, stable=True)
    return _from_matrix(rank < n, scores.shape)


def block_mask(scores: torch.Tensor, sparsity: float, block: tuple[int, int]) -> torch.Tensor:
    """Zero whole ``bh x bw`` blocks of the ``[out, in]`` matrix, ranked by their summed score."""
    sparsity = check_fraction(sparsity, owner="block_mask")
    return expand_blocks(topk_mask(block_scores(scores, block), sparsity), scores.shape, block)


def block_scores(scores: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Summed score of every ``bh x bw`` tile of the ``[out, in]`` matrix: ``[out/bh, in/bw]``."""
    matrix = _as_matrix(scores.detach().float())
    rows, cols = matrix.shape
    bh, bw = block
    if rows % bh or cols % bw:
        raise ConfigError(
            f"a {bh}x{bw} block pattern needs the weight's [out, in] = [{rows}, {cols}] to be "
            f"divisible by the block; leave this layer out (ignore=) or choose another block shape"
        )
    return matrix.reshape(rows // bh, bh, cols // bw, bw).sum(dim=(1, 3))


def expand_blocks(kept: torch.Tensor, shape: torch.Size | tuple[int, ...], block: tuple[int, int]) -> torch.Tensor:
    """A per-tile keep-mask ``[out/bh, in/bw]`` blown up to a weight of ``shape``."""
    full = kept.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)
    return _from_matrix(full, shape)


def mask_from_scores(scores: torch.Tensor, sparsity: float | None,
                     pattern: str | Pattern | None = None) -> torch.Tensor:
    """The keep-mask for ``scores`` under ``pattern``; N:M patterns ignore ``sparsity``."""
    pattern = Pattern.parse(pattern)
    if pattern.kind == "nm":
        return nm_mask(scores, pattern.n, pattern.m)
    if sparsity is None:
        raise ConfigError(f"pattern '{pattern}' needs a sparsity (the fraction of weights to zero)")
    if pattern.kind == "block":
        return block_mask(scores, sparsity, pattern.block)
    return topk_mask(scores, sparsity)


def check_layer(name: str, shape: tuple[int, ...], pattern: Pattern) -> None:
    """Raise a ConfigError naming ``name`` when its ``[out, in]`` view cannot hold ``pattern``."""
    module = name.removesuffix(".weight")
    rows = shape[0] if len(shape) > 1 else 1
    cols = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    if pattern.kind == "nm" and cols % pattern.m:
        raise ConfigError(
            f"layer '{name}' {tuple(shape)} has {cols} inputs per output, not a multiple of "
            f"{pattern.m}, so the {pattern} pattern cannot be applied. Leave it out (ignore=['{module}']"
            f" / --ignore {module}) or use pattern 'unstructured'."
        )
    if pattern.kind == "nm" and len(shape) > 2 and shape[1] % pattern.m:
        raise ConfigError(
            f"layer '{name}' {tuple(shape)} has {shape[1]} input channels, not a multiple of {pattern.m}: the "
            f"{pattern} pattern groups {pattern.m} consecutive input channels at each kernel position. Leave it "
            f"out (ignore=['{module}'] / --ignore {module}) or use pattern 'unstructured'."
        )
    if pattern.kind == "block" and (rows % pattern.block[0] or cols % pattern.block[1]):
        raise ConfigError(
            f"layer '{name}' has [out, in] = [{rows}, {cols}], not divisible by the {pattern} block. "
            f"Leave it out (ignore=['{module}'] / --ignore {module}) or choose another block shape."
        )
