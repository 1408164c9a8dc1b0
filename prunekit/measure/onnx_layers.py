"""ONNX models of single layers, built directly with ``onnx.helper`` instead of the exporter.

``torch.onnx.export(dynamo=True)`` rebuilds its whole operator registry on every call, which made
filling a latency table of hundreds of layers take minutes. An ``nn.Conv2d``, an ``nn.Linear`` or an
``nn.Sequential`` chain of them is one ONNX node each (a Linear on 2-D input as ``Gemm(transB=1)``,
otherwise ``MatMul`` + ``Add``), so this module writes those graphs itself, as :func:`export_onnx`
would give them: the same opset, IR version, input/output names and dynamic batch dimension, and the
layer's own weights as initializers. Anything else gives None: export it instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunekit.errors import require

__all__ = ["layer_onnx", "OPSET", "IR_VERSION"]

OPSET = 20  # NOTE: what torch.onnx.export(dynamo=True) targets by default (torch 2.14); a test compares
IR_VERSION = 10


def _layers(module: nn.Module) -> list[nn.Module] | None:
    """The Conv2d/Linear layers ``module`` runs in order, or None where it is (or holds) anything else."""
    if isinstance(module, nn.Sequential):
        chain: list[nn.Module] = []
        for child in module:
            inner = _layers(child)
            if inner is None:
                return None
            chain.extend(inner)
        return chain
    if type(module) in (nn.Conv2d, nn.Linear):  # NOTE: not a subclass, whose forward may differ
        ok = all(p.dtype == torch.float32 and p.device.type == "cpu" for p in module.parameters())
        return [module] if ok else None
    return None


def _conv_pads(conv: nn.Conv2d) -> list[int] | None:
    """ONNX ``pads`` (top, left, bottom, right) of ``conv``'s padding; 'same' puts the odd one at the end, as
    PyTorch does."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return [0, 0, 0, 0]
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        begin = [t // 2 for t in totals]
        return [*begin, *(t - b for t, b in zip(totals, begin, strict=True))]
    ph, pw = (int(p) for p in conv.padding)
    return [ph, pw, ph, pw]


class _Graph:
    """Nodes and initializers of one chain, each layer's named by its position."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, tensor: torch.Tensor) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(tensor.detach().cpu().contiguous().numpy(), name))
        return name

    def conv(self, i: int, conv: nn.Conv2d, x: str, y: str, shape: list[Any]) -> list[Any] | None:
        from onnx import helper

        pads = _conv_pads(conv)
        if pads is None or len(shape) != 4 or shape[1] != conv.in_channels:
            return None
        inputs = [x, self.constant(f"{i}.weight", conv.weight)]
        if conv.bias is not None:
            inputs.append(self.constant(f"{i}.bias", conv.bias))
        self.nodes.append(helper.make_node(
            "Conv", inputs, [y], name=f"conv_{i}", kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
            pads=pads, dilations=list(conv.dilation), group=conv.groups))
        out = [shape[0], conv.out_channels]
        for axis in range(2):
            reach = conv.dilation[axis] * (conv.kernel_size[axis] - 1) + 1
            size = shape[2 + axis] + pads[axis] + pads[2 + axis] - reach
            out.append(size // conv.stride[axis] + 1)
        return out if min(out[2:]) > 0 else None

    def linear(self, i: int, linear: nn.Linear, x: str, y: str, shape: list[Any]) -> list[Any] | None:
        from onnx import helper

        if len(shape) < 2 or shape[-1] != linear.in_features:
            return None
        if len(shape) == 2:
            inputs = [x, self.constant(f"{i}.weight", linear.weight)]
            if linear.bias is not None:
                inputs.append(self.constant(f"{i}.bias", linear.bias))
            self.nodes.append(helper.make_node("Gemm", inputs, [y], name=f"gemm_{i}", transB=1))
        else:
            weight = self.constant(f"{i}.weight_t", linear.weight.t())
            product = y if linear.bias is None else f"{i}.matmul"
            self.nodes.append(helper.make_node("MatMul", [x, weight], [product], name=f"matmul_{i}"))
            if linear.bias is not None:
                self.nodes.append(helper.make_node("Add", [product, self.constant(f"{i}.bias", linear.bias)], [y],
                                                   name=f"add_{i}"))
        return [*shape[:-1], linear.out_features]


def layer_onnx(module: nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = True) -> bytes | None:
    """The serialised ONNX model of ``module`` (an ``nn.Conv2d``, an ``nn.Linear`` or an ``nn.Sequential``
    chain of them, float32 on the CPU) on one input of ``input_shape``, with its current weights; None for
    any other module or input it cannot map (a padding mode other than zeros, unbatched input), which
    :func:`export_onnx` should export instead. ``dynamic_batch`` names dim 0 "batch", as the exporter does."""
    require("onnx", extra="onnx", feature="ONNX models of layers")
    from onnx import TensorProto, helper

    layers = _layers(module)
    if not layers:
        return None
    first: list[Any] = [int(s) for s in input_shape]
    shape, graph, name = list(first), _Graph(), "input"
    for i, layer in enumerate(layers):
        out = "output" if i == len(layers) - 1 else f"{i}.output"
        step = graph.conv(i, layer, name, out, shape) if isinstance(layer, nn.Conv2d) else (
            graph.linear(i, layer, name, out, shape) if isinstance(layer, nn.Linear) else None)
        if step is None:
            return None
        shape, name = step, out
    if dynamic_batch:
        first[0] = shape[0] = "batch"
    model = helper.make_model(
        helper.make_graph(graph.nodes, "layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, first)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="prunekit")
    return bytes(model.SerializeToString())
