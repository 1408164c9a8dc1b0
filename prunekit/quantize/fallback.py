"""Keep the layers that int8 hurts most in fp32, until the task metric is within a budget.

Quantise everything and score it. If the metric dropped by more than ``max_metric_drop``, measure
the damage of each quantised node and of each quantised activation tensor on the calibration batches
(how much of the int8 model's output error, relative to the fp32 outputs, goes away when that node,
or the nodes on both sides of that tensor, stay fp32; a continuous measure, so they rank even where
the metric barely moves), then keep the 1, 2, 4, ... most damaging of them in fp32 until the drop is
within the budget (else the best configuration tried, marked ``budget_met=False``).

NOTE: ONNX Runtime's QDQ quantiser quantises a tensor when any node beside it is quantised, so
keeping one node fp32 leaves the activations it reads and writes int8: damage done by rounding one
activation (an outlier channel between two layers) shows only when its producer and all its
consumers stay fp32 together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prunekit.errors import ConfigError, require
from prunekit.quantize.ptq import quantisable_nodes, quantize_onnx

__all__ = ["Fallback", "quantize_within", "metric_drop"]


@dataclass(frozen=True)
class Fallback:
    """What :func:`quantize_within` chose: the int8 file, its metric, the nodes kept fp32, the
    measured damage (relative output error removed when it stays fp32) of each node and of each
    quantised activation tensor (by tensor name; ``tensor_nodes`` names the nodes kept fp32 to keep
    it fp32), both empty when nothing had to be measured, and whether the metric is within the
    budget (None: no budget was given)."""

    path: Path
    metric: float
    excluded: tuple[str, ...]
    damage: dict[str, float] = field(default_factory=dict)
    tries: int = 1
    budget_met: bool | None = None
    tensor_damage: dict[str, float] = field(default_factory=dict)
    tensor_nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)


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
            met = None if max_metric_drop is None else True
            return Fallback(path=target, metric=metric, excluded=(), budget_met=met)
        nodes = quantisable_nodes(source, dynamic=dynamic)
        # NOTE: dynamic int8 quantises each node's inputs itself, so one node at a time sees all its damage.
        groups = {} if dynamic else _tensor_groups(Path(source), target, nodes)
        units = {**{f"node {n}": (n,) for n in nodes}, **{f"tensor {t}": g for t, g in groups.items()}}
        error = _output_error(Path(source), calibration)
        base = error(target)
        measured: dict[str, float] = {}
        trial, kept = Path(tmp) / "trial.onnx", Path(tmp) / "best.onnx"
        for i, (name, unit) in enumerate(units.items()):
            step(f"measuring the damage of {name} ({i + 1}/{len(units)})")
            quantize_onnx(source, trial, exclude=list(unit), **options)  # type: ignore[arg-type]
            measured[name] = base - error(trial)
        ranked = [units[name] for name in sorted(units, key=lambda name: -measured[name])]
        best: tuple[float, tuple[str, ...]] = (metric, ())
        tries = 1 + len(units)
        order = {name: i for i, name in enumerate(_all_nodes(Path(source)))}
        for k in _doubling(len(ranked)):
            excluded = tuple(sorted({n for unit in ranked[:k] for n in unit}, key=order.__getitem__))
            step(f"keeping the {k} most damaging node(s) or tensor(s) in fp32 ({len(excluded)} nodes)")
            quantize_onnx(source, trial, exclude=list(excluded), **options)  # type: ignore[arg-type]
            tries, got = tries + 1, score(trial)
            if metric_drop(best[0], got, higher_is_better) < 0:
                best = (got, excluded)
                shutil.copyfile(trial, kept)
            if metric_drop(fp32_metric, got, higher_is_better) <= max_metric_drop:
                break
        if best[1]:
            shutil.move(str(kept), target)  # NOTE: same folder, so the int8 file is replaced in one step.
    met = metric_drop(fp32_metric, best[0], higher_is_better) <= max_metric_drop
    return Fallback(path=target, metric=best[0], excluded=best[1], tries=tries, budget_met=met,
                    damage={n: measured[f"node {n}"] for n in nodes},
                    tensor_damage={t: measured[f"tensor {t}"] for t in groups}, tensor_nodes=groups)


def _all_nodes(path: Path) -> list[str]:
    onnx = require("onnx", extra="onnx", feature="int8 quantisation")
    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


# NOTE: activations ORT's QDQ quantiser folds into the node before them: their input and output share one range.
_FOLDED = ("Relu", "Clip")


def _tensor_groups(source: Path, quantised: Path, nodes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """For each activation tensor of the fp32 file ``source`` that the int8 file ``quantised`` rounds
    (a QuantizeLinear reads it), by name, the nodes that must all stay fp32 for it to stay fp32: its producer
    and all its consumers (through a folded Relu/Clip, whose input shares its range; the Relu/Clip
    itself is not quantised once those are fp32, so not named), in graph order;
    groups that are one of ``nodes`` alone, or repeat another, are left out."""
    onnx = require("onnx", extra="onnx", feature="int8 quantisation")
    graph = onnx.load(str(source), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    order = {n.name: i for i, n in enumerate(graph.node)}
    rounded = [q.input[0] for q in onnx.load(str(quantised), load_external_data=False).graph.node
               if q.op_type == "QuantizeLinear" and q.input[0] not in constants]
    groups: dict[str, tuple[str, ...]] = {}
    seen = {(n,) for n in nodes}
    for name in rounded:
        name = name.removesuffix("_QuantizeLinear_Input") if name not in producer and name not in consumers else name
        if name not in producer and name not in consumers:
            continue
        tensors, todo = set(), [name]
        while todo:  # NOTE: the tensors that share this range: back through folded activations, forward too
            tensor = todo.pop()
            if tensor in tensors:
                continue
            tensors.add(tensor)
            made = producer.get(tensor)
            if made is not None and made.op_type in _FOLDED:
                todo.append(made.input[0])
            todo += [n.output[0] for n in consumers.get(tensor, ()) if n.op_type in _FOLDED]
        around = [producer[t] for t in tensors if t in producer] + [n for t in tensors for n in consumers.get(t, ())]
        # NOTE: a folded activation whose input stays fp32 is not quantised: it need not be named.
        members = {n.name for n in around if n.op_type not in _FOLDED}
        group = tuple(sorted(members, key=order.__getitem__))
        if group and group not in seen:
            seen.add(group)
            groups[name] = group
    return groups


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
