"""Keep the layers that int8 hurts most in fp32, until the task metric is within a budget.

Quantise everything and score it. If the metric dropped by more than ``max_metric_drop``, measure
each quantised node's damage on the calibration batches (how much of the int8 model's output error,
relative to the fp32 outputs, goes away when that node alone stays fp32; a continuous measure, so
nodes rank even where the metric barely moves), then keep the 1, 2, 4, ... most damaging nodes in
fp32 until the drop is within the budget (else the best configuration tried).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prunekit.errors import ConfigError
from prunekit.quantize.ptq import quantisable_nodes, quantize_onnx

__all__ = ["Fallback", "quantize_within", "metric_drop"]


@dataclass(frozen=True)
class Fallback:
    """What :func:`quantize_within` chose: the int8 file, its metric, the nodes kept fp32, and the
    measured damage of each node (relative output error removed when it alone stays fp32; empty
    when no node had to be measured)."""

    path: Path
    metric: float
    excluded: tuple[str, ...]
    damage: dict[str, float] = field(default_factory=dict)
    tries: int = 1


def metric_drop(fp32: float, int8: float, higher_is_better: bool) -> float:
    """How much worse ``int8`` is than ``fp32`` (positive: worse)."""
    return fp32 - int8 if higher_is_better else int8 - fp32


def _doubling(count: int) -> list[int]:
    sizes, k = [], 1
    while k < count:
        sizes.append(k)
        k *= 2
    return [*sizes, count] if count else []


def quantize_within(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                    score: Callable[[Path], float], fp32_metric: float, higher_is_better: bool = True,
                    max_metric_drop: float | None = None, calibration: Sequence[dict[str, np.ndarray]] = (),
                    method: str = "minmax", per_channel: bool = True, dynamic: bool = False,
                    progress: Callable[[str], None] | None = None) -> Fallback:
    """:func:`~prunekit.quantize.quantize_onnx` of the pre-processed fp32 file ``source`` into
    ``target``, keeping the most damaging nodes fp32 until ``score(int8 file)`` is within
    ``max_metric_drop`` of ``fp32_metric`` (None: quantise everything, no search).

    ``score`` runs the file on held-out data (e.g. :func:`~prunekit.quantize.evaluate_onnx` on the
    validation split) and returns the task metric.
    """
    if max_metric_drop is not None and not max_metric_drop >= 0:
        raise ConfigError(f"quantize: max_metric_drop must be >= 0 (in the metric's units, e.g. 0.01 for one "
                          f"accuracy point); got {max_metric_drop!r}.")
    step = progress or (lambda message: None)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fallback.", dir=target.parent) as tmp:
        # NOTE: every trial quantises the same file: its activation ranges are calibrated once.
        options = {"calibration": calibration, "method": method, "per_channel": per_channel, "dynamic": dynamic,
                   "preprocessed": True, "ranges": None if dynamic else Path(tmp) / "ranges.json"}
        step("quantising every layer")
        quantize_onnx(source, target, **options)  # type: ignore[arg-type]
        metric = score(target)
        if max_metric_drop is None or metric_drop(fp32_metric, metric, higher_is_better) <= max_metric_drop:
            return Fallback(path=target, metric=metric, excluded=())
        nodes = quantisable_nodes(source, dynamic=dynamic)
        error = _output_error(Path(source), calibration)
        base = error(target)
        damage: dict[str, float] = {}
        trial, kept = Path(tmp) / "trial.onnx", Path(tmp) / "best.onnx"
        for i, node in enumerate(nodes):
            step(f"measuring the damage of node {i + 1}/{len(nodes)}: {node}")
            quantize_onnx(source, trial, exclude=[node], **options)  # type: ignore[arg-type]
            damage[node] = base - error(trial)
        ranked = sorted(nodes, key=lambda n: -damage[n])
        best: tuple[float, tuple[str, ...]] = (metric, ())
        tries = 1 + len(nodes)
        for k in _doubling(len(ranked)):
            step(f"keeping the {k} most damaging node(s) in fp32")
            quantize_onnx(source, trial, exclude=ranked[:k], **options)  # type: ignore[arg-type]
            tries, got = tries + 1, score(trial)
            if metric_drop(best[0], got, higher_is_better) < 0:
                best = (got, tuple(ranked[:k]))
                shutil.copyfile(trial, kept)
            if metric_drop(fp32_metric, got, higher_is_better) <= max_metric_drop:
                break
        if best[1]:
            shutil.move(str(kept), target)  # NOTE: same folder, so the int8 file is replaced in one step.
    return Fallback(path=target, metric=best[0], excluded=best[1], damage=damage, tries=tries)


def _output_error(source: Path, calibration: Sequence[dict[str, np.ndarray]]) -> Callable[[Path], float]:
    """A file's error against the fp32 file's outputs over the batches: each output's relative squared
    error, summed over the outputs (so that every output counts, whatever its scale)."""
    from prunekit.quantize.runtime import session

    if not calibration:
        raise ConfigError("quantize: measuring each layer's damage needs calibration batches; got none. "
                          "Pass calibration batches (dynamic quantisation uses them only for this).")
    reference = session(source)
    expected = [[np.asarray(o, dtype=np.float64) for o in reference.run(None, feed)] for feed in calibration]
    scale = [max(sum(float((batch[k] ** 2).sum()) for batch in expected), 1e-12) for k in range(len(expected[0]))]

    def error(path: Path) -> float:
        run = session(path)
        got = [run.run(None, feed) for feed in calibration]
        return sum(sum(float(((np.asarray(g[k], dtype=np.float64) - e[k]) ** 2).sum()) for g, e in zip(got, expected))
                   / scale[k] for k in range(len(scale)))

    return error
