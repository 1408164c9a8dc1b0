"""Exact MACs and parameters of a configuration, without slicing the model.

Every counted MAC of a CNN or MLP is in a ``nn.Conv*``/``nn.Linear`` layer, and a layer's MACs are
its weight's element count times its output positions, so cutting channels scales a layer's
MACs by the kept fraction along each axis of its weight (input and output channels; a depthwise
weight has only the one). A parameter's count scales the same way. :class:`Cost` precomputes,
for every weight, which group cuts which axis, and then prices a configuration with a few
multiplications; a removed block's layers count zero. Where the model's MACs are not all in such
layers (attention's matmuls) or a configuration factorises a layer, the model is built and counted
with :func:`prunekit.measure.count_macs` instead: the answer is always the exact one (a factorised
layer counts what its factorised form costs). Built configurations are remembered, so pricing one
again (a strategy comparing its neighbours) costs nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.measure import count_macs, count_params, macs_by_module
from prunekit.search.space import SearchSpace, build

__all__ = ["Cost"]


@dataclass
class _Weight:
    numel: int
    module: str
    axes: dict[int, list[tuple[str, int]]]  # axis -> [(group id, indices per channel)], with the axis length
    lengths: dict[int, int]


class Cost:
    """MACs and params of any configuration of ``space`` on ``model`` (one example input's batch).

    ``analytic`` says whether configurations are priced without building a model.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, space: SearchSpace, example_inputs: Any,
                 scores: Mapping[str, torch.Tensor] | None = None) -> None:
        self.model, self.graph, self.space, self.example_inputs = model, graph, space, example_inputs
        self.scores = scores
        self._priced: dict[str, dict[str, float]] = {}
        self.dense_macs = count_macs(model, example_inputs)
        self.dense_params = count_params(model)
        by_module = macs_by_module(model, example_inputs)
        weighted = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}
        self.layer_macs = {n: by_module.get(n, 0) for n in weighted}
        self.analytic = sum(self.layer_macs.values()) == self.dense_macs
        widths = {d.name for d in space.dimensions if d.kind == "width"}
        self.weights: dict[str, _Weight] = {}
        for name, param in model.named_parameters():
            self.weights[name] = _Weight(param.numel(), name.rpartition(".")[0], defaultdict(list),
                                         dict(enumerate(param.shape)))
        for group in graph.prunable:
            if group.id not in widths:
                continue
            for member in group.members:
                if member.tensor in self.weights:
                    self.weights[member.tensor].axes[member.axis].append((group.id, member.inner))

    def _kept(self, weight: _Weight, config: Mapping[str, Any]) -> float:
        fraction = 1.0
        for axis, cuts in weight.axes.items():
            removed = sum((self.space.dimension(g).size - int(config[g])) * inner for g, inner in cuts)
            fraction *= 1.0 - removed / weight.lengths[axis]
        return fraction

    def shape(self, config: Mapping[str, Any], tensor: str) -> tuple[int, ...]:
        """The shape parameter ``tensor`` has under ``config``'s widths."""
        weight = self.weights[tensor]
        return tuple(length - sum((self.space.dimension(g).size - int(config[g])) * inner
                                  for g, inner in weight.axes.get(axis, ()))
                     for axis, length in weight.lengths.items())

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        """``{"macs", "params"}`` of ``config`` (absolute counts) and their fractions of the dense model
        (``"macs_kept"``, ``"params_kept"``)."""
        if not self.analytic or self.space.ranks(config):
            return self._built(config)
        blocks = tuple(b + "." for b in self.space.removed_blocks(config))
        macs = float(self.dense_macs)
        params = 0.0
        for name, weight in self.weights.items():
            gone = (name + ".").startswith(blocks) if blocks else False
            kept = 0.0 if gone else self._kept(weight, config)
            params += weight.numel * kept
            if name.endswith("weight") and weight.module in self.layer_macs:
                macs -= self.layer_macs[weight.module] * (1.0 - kept)
        return self._result(round(macs), round(params))

    def _built(self, config: Mapping[str, Any]) -> dict[str, float]:
        from prunekit.importance import score

        key = json.dumps(dict(config), sort_keys=True)
        if key in self._priced:
            return dict(self._priced[key])
        scores = self.scores if self.scores is not None else score(self.graph, self.model, "l2")
        # NOTE: factorised layers as uninitialised shells: their shapes are their cost, their weights are not
        model = build(self.model, self.graph, self.space, config, scores, example_inputs=self.example_inputs,
                      weights=False)
        self._priced[key] = self._result(count_macs(model, self.example_inputs), count_params(model))
        return dict(self._priced[key])

    def _result(self, macs: int, params: int) -> dict[str, float]:
        return {"macs": float(macs), "params": float(params), "macs_kept": macs / max(self.dense_macs, 1),
                "params_kept": params / max(self.dense_params, 1)}


