"""Latency-aware allocation: weight each channel group by how much time its MACs cost.

A uniform channel ratio cuts every layer's MACs alike, but not its time: layers whose time follows
the bytes they move (the stem and first stage of a ResNet at 112x112 and 56x56, BatchNorm, 1x1
convolutions on large maps) get faster with the width, not with the width squared, so a model cut
to a quarter of the MACs ran only 3x faster (ResNet-50, PyTorch batch 16, benchmarks/RESULTS.md).
Cutting those layers more and compute-bound ones less, at the same MACs, narrows that gap
(the idea of HALP, Shen et al. 2022, which ranks neurons by importance per latency saved).

The weight of a group is its milliseconds per MAC (summed over the modules its channels live in,
plus the calls that read them without weights of their own: the stem's max-pool, a shared ReLU's
call after a block's BatchNorm, the residual ``add`` a block's forward does outside any module,
found by :func:`prunekit.measure.layers.input_producers`; times from
:func:`prunekit.measure.layers.latency_by_call` at the given batch size, functional calls included)
over the whole model's, clipped to [1/4, 4]; groups whose modules do no counted MACs weigh 1. The allocator then
keeps ``(1 - ratio) ** weight`` of a group in local scope, or divides its scores by the weight
in global scope.

:func:`channel_costs` is the other cost this module knows: the MACs or parameters one channel of
each group is worth, by which a MACs or params target's fill ranks the channels it adds back
(importance per unit of budget, the greedy answer to the knapsack).

The weights describe the runtime they were timed on (PyTorch eager at ``batch_size``), and they
are measured, so two fits on a noisy machine can give slightly different plans. On ResNet-50
(2 threads, ``benchmarks/speed.py``, steady allocator, one run) a quarter of the MACs ran 3.40x
faster than dense in PyTorch at batch 16 against 3.02x for the default cut, 4.27x in global scope
and 3.96x in global scope with ``max_ratio=0.8`` (half the MACs: 1.92x, 2.32x and 2.27x against
1.77x). Local scope cuts every group, so at a quarter it is held back by narrow convolutions that
use the CPU less well (0.85-0.88 of the MACs reduction over several runs); global scope takes more
from the residual streams, whose BatchNorm, ReLU and ``add`` passes run in every block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import tensor_of
from prunekit.measure.layers import input_producers, latency_by_call, per_module
from prunekit.measure.macs import macs_by_module

__all__ = ["channel_costs", "latency_weights", "WEIGHT_RANGE"]

WEIGHT_RANGE = (0.25, 4.0)


def latency_weights(model: nn.Module, graph: DependencyGraph, example_inputs: Any, *,
                    batch_size: int = 1, threads: int = 2, repeats: int = 5) -> dict[str, float]:
    """Group id -> cost weight (ms per MAC of the group's modules over the model's) for every
    prunable group of ``graph``, timed on ``model`` at ``batch_size`` with ``threads`` threads."""
    by_call = latency_by_call(model, example_inputs, batch_size=batch_size, threads=threads, repeats=repeats,
                              functional=True)
    times = per_module(by_call)
    carried: dict[str, float] = {}  # NOTE: module -> ms of the parameter-free calls reading its output
    for call, source in input_producers(model, example_inputs, functional=True).items():
        carried[source] = carried.get(source, 0.0) + by_call.get(call, 0.0)
    macs = macs_by_module(model, example_inputs)
    leaf_macs = {name: macs.get(name, 0) for name in times}
    model_rate = sum(times.values()) / max(sum(leaf_macs.values()), 1)
    low, high = WEIGHT_RANGE
    weights: dict[str, float] = {}
    for group in graph.prunable:
        modules = {member.module for member in group.members}
        writers = {member.module for member in group.members if member.role != "consumer"}
        group_macs = sum(leaf_macs.get(m, 0) for m in modules)
        if group_macs == 0 or model_rate == 0:
            weights[group.id] = 1.0
            continue
        own = sum(times.get(m, 0.0) for m in modules) + sum(carried.get(m, 0.0) for m in writers)
        weights[group.id] = min(max(own / group_macs / model_rate, low), high)
    return weights


def channel_costs(model: nn.Module, graph: DependencyGraph, example_inputs: Any, kind: str,
                  macs: Mapping[str, int] | None = None) -> dict[str, float]:
    """Group id -> the ``"macs"`` or ``"params"`` one channel of each prunable group accounts for
    in the dense model: every weight that writes or reads the channel contributes its module's MACs
    (or, if it is a parameter, its own size) times the channel's share of that axis. A linear
    estimate: each count scales with each of a layer's widths, so relative costs hold as the model shrinks.
    ``macs``: :func:`~prunekit.measure.macs.macs_by_module` of ``model`` where the caller has it (saves a pass)."""
    if kind == "macs" and macs is None:
        macs = macs_by_module(model, example_inputs)
    macs = macs or {}
    parameters = {name for name, _ in model.named_parameters()}  # NOTE: not BatchNorm's running stats
    costs: dict[str, float] = {}
    for group in graph.prunable:
        total = 0.0
        for member in group.members:
            tensor = tensor_of(model, member.tensor)
            share = member.inner / max(tensor.shape[member.axis], 1)
            if kind == "params":
                total += tensor.numel() * share if member.tensor in parameters else 0.0
            elif member.role != "passive" and member.tensor.endswith("weight"):
                total += macs.get(member.module, 0) * share
        costs[group.id] = total
    return costs
