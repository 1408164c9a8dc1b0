"""The deployed form of a model for PyTorch latency: every Conv/Linear -> BatchNorm pair folded.

ONNX Runtime folds BatchNorm into the preceding convolution when it loads a model; eager PyTorch
does not. Measuring both the dense and the pruned model in this folded form shows the speed a
deployment gets, and separates BatchNorm's memory-bound pass from the convolutions (on ResNet-50 at
batch 16 on this project's 2-core CPU it was only about 4 % of the time: benchmarks/RESULTS.md). The folding itself is
``torch.fx.experimental.optimization.fuse`` (PyTorch's eval-mode Conv/Linear + BN fusion).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn
from torch.fx.experimental.optimization import fuse

from prunekit.errors import ConfigError

__all__ = ["Folded", "fold_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Folded:
    """An eval-mode copy of a model with ``folded`` BatchNorm layers merged into their producers;
    ``remaining`` BatchNorms could not be folded (their input is not a Conv/Linear used only by them)."""

    model: nn.Module
    folded: int
    remaining: int


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BN) for m in model.modules())


def fold_batchnorm(model: nn.Module) -> Folded:
    """Fold every Conv/Linear -> BatchNorm pair of ``model`` into one layer, in a copy (eval mode).

    The copy computes the same function as ``model.eval()`` up to float rounding. ``model`` itself
    is not changed. A model that torch.fx cannot trace symbolically raises ConfigError naming the
    reason (measure it with backend="torch" instead).
    """
    before = _count_bn(model)
    clone = copy.deepcopy(model).eval()
    if before == 0:
        return Folded(model=clone, folded=0, remaining=0)
    try:
        fused = fuse(clone, inplace=True)
    except Exception as exc:  # NOTE: symbolic tracing raises many types (TraceError, TypeError, ...)
        raise ConfigError(
            f"Cannot fold BatchNorm in {type(model).__name__}: torch.fx could not trace it "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Measure it with "
            f"backend='torch' (unfolded eager) or 'onnxruntime' (which folds at load).") from exc
    after = _count_bn(fused)
    return Folded(model=fused.eval(), folded=before - after, remaining=after)
