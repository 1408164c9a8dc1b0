"""A model's graph as a chain of nodes with a cost each, and what crosses every possible cut.

The model is traced once (:func:`trace`): ``torch.fx.symbolic_trace`` first, because its nodes are
the model's own modules (``layer1.0.conv1``), its stages keep the original parameter names and it
records no batch size; ``torch.export`` (its ``.module()`` graph, batch dimension dynamic) when
symbolic tracing fails, e.g. on Python control flow that reads a shape. The graph is then run once
per repeat under :class:`torch.fx.Interpreter` (:func:`measure_nodes`), which records for every node
its MACs (counted as :func:`prunekit.measure.count_macs` counts them, recurrent layers by formula, so
the nodes' MACs add up to the model's), its median latency and the shape, dtype and bytes of the
value it produces. A graph traced by torch.export returns its output flat; :func:`output_spec` is
the structure (dict, namedtuple, ModelOutput) that rebuilds it.

A *cut after position j* (1 <= j < N, positions of the N compute nodes in topological order) is
crossed by every value produced at or before j and used after j: for a ResNet block, the block's
input crosses every cut inside the block (the skip connection). A cut crossed by a value that is
not a tensor (a Python int from ``x.size(0)``, a tuple) cannot be used: the stages exchange tensors.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import TreeSpec

from prunekit.errors import ConfigError, PrunekitError
from prunekit.measure.macs import MacCounter, with_grad_if_tracked, batch_of, counting_mode, recurrent_macs

__all__ = ["NodeInfo", "GraphCosts", "trace", "measure_nodes", "output_spec", "COMPUTE_OPS"]

COMPUTE_OPS = ("call_module", "call_function", "call_method")
# NOTE: torch.export's .module() adds a call to this guard module; it returns nothing and checks
# the input shapes again, which the stages do not need.
_GUARDS = "_guards_fn"
_HERE = os.path.dirname(os.path.abspath(__file__))
# NOTE: what torch.export records a recurrent layer's call as (one op per call; the fused kernels it
# runs are invisible to FlopCounterMode); node.meta[_LAYER] is the layer, counted by formula as
# count_macs counts it. _OUT_SPEC in the graph module's meta: the exported program's output structure.
_RECURRENT_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")
_LAYER = "prunekit_recurrent_layer"
_OUT_SPEC = "prunekit_out_spec"


@dataclass(frozen=True)
class NodeInfo:
    """One node of the traced graph: what it is, its cost and the value it produces."""

    name: str
    op: str
    target: str
    macs: int
    latency_ms: float
    shape: tuple[int, ...] | None
    dtype: str | None
    nbytes: int

    @property
    def is_tensor(self) -> bool:
        """True when the node produces one tensor (only tensors may cross a cut)."""
        return self.shape is not None

    def to_dict(self) -> dict[str, Any]:
        """The node as JSON-ready data (manifest entries)."""
        return {"name": self.name, "shape": list(self.shape) if self.shape is not None else None,
                "dtype": self.dtype, "bytes": self.nbytes}


@dataclass(frozen=True)
class GraphCosts:
    """The traced graph as a chain: ``inputs`` (placeholders), then ``nodes`` in topological order.

    ``crossing[j - 1]`` names the values crossing the cut after position j (1 <= j < N), in
    topological order; ``cut_bytes[j - 1]`` is their total size in bytes, or None when one of
    them is not a tensor (the cut cannot be used).
    """

    method: str
    inputs: tuple[NodeInfo, ...]
    nodes: tuple[NodeInfo, ...]
    crossing: tuple[tuple[str, ...], ...]
    cut_bytes: tuple[int | None, ...]

    def info(self, name: str) -> NodeInfo:
        """The input or node called ``name``."""
        for item in (*self.inputs, *self.nodes):
            if item.name == name:
                return item
        raise KeyError(name)

    def costs(self, balance: str) -> list[float]:
        """Per-node cost for ``balance`` "macs" or "latency" (milliseconds)."""
        if balance == "macs":
            return [float(n.macs) for n in self.nodes]
        return [n.latency_ms for n in self.nodes]


def _first_line(exc: BaseException) -> str:
    """The error's type and first line, and the last line of the model's own code it passed."""
    import traceback

    text = str(exc).strip().splitlines()
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(torch_dir) and not f.filename.startswith(_HERE)]
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in " \
            f"{frames[-1].name}(): {frames[-1].line}" if frames else ""
    return f"{type(exc).__name__}: {text[0][:240] if text else ''}{where}"


def trace(model: nn.Module, inputs: tuple[torch.Tensor, ...], *,
          method: str = "auto") -> tuple[fx.GraphModule, str]:
    """A graph module of ``model`` (in eval mode) and the method that traced it.

    method: "auto" (fx, then export), "torch.fx" or "torch.export". The model is not changed:
    tracing works on a deep copy, whose modules the graph then owns.
    """
    if method not in ("auto", "torch.fx", "torch.export"):
        raise ConfigError(f"partition: 'method' must be auto, torch.fx or torch.export; got "
                          f"{method!r}.")
    net = copy.deepcopy(model).eval()
    errors: list[str] = []
    if method in ("auto", "torch.fx"):
        try:
            return fx.symbolic_trace(net), "torch.fx"
        except Exception as exc:  # NOTE: user code raises anything while traced symbolically.
            errors.append(f"torch.fx.symbolic_trace failed ({_first_line(exc)})")
    if method in ("auto", "torch.export"):
        try:
            return _export(net, inputs), "torch.export"
        except Exception as exc:
            errors.append(f"torch.export.export failed ({_first_line(exc)})")
    raise PrunekitError(
        f"partition: cannot trace {type(model).__name__} into a graph: {'; '.join(errors)}. The "
        f"line named above is what the tracers could not follow; rewrite it without Python "
        f"control flow on tensor values (e.g. torch.where instead of if/else on x.sum()).")


def _export(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """torch.export's graph with a dynamic batch dimension (a fixed batch when that fails)."""
    batch = torch.export.Dim("batch")
    tiled = batch_of(inputs, max(2, max((x.shape[0] for x in inputs if x.dim()), default=2)))
    try:
        program = torch.export.export(
            net, tiled, dynamic_shapes=tuple({0: batch} if x.dim() else None for x in tiled))
    except Exception:  # NOTE: e.g. a reshape that fixes the batch size; keep the example's.
        program = torch.export.export(net, inputs)
    module = program.module()
    for node in list(module.graph.nodes):
        if node.op == "call_module" and node.target == _GUARDS and not node.users:
            module.graph.erase_node(node)
        elif (layer := _recurrent_layer(net, node)) is not None:
            node.meta[_LAYER] = layer  # NOTE: the layer shares its weights with the graph; no copy.
    module.graph.lint()
    # NOTE: .module() forbids train()/eval() on what it returns; a plain GraphModule over the same
    # graph and parameters does not.
    traced = fx.GraphModule(module, module.graph, class_name=type(net).__name__)
    traced.meta[_OUT_SPEC] = program.call_spec.out_spec
    return traced


def _recurrent_layer(net: nn.Module, node: fx.Node) -> nn.Module | None:
    """The recurrent layer (nn.LSTM, nn.GRUCell, ...) whose call ``node`` of an exported graph is."""
    packet = getattr(node.target, "overloadpacket", None)
    if node.op != "call_function" or getattr(packet, "__name__", None) not in _RECURRENT_OPS:
        return None
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]  # NOTE: (qualified name, class) of the innermost module
    try:
        layer = net.get_submodule(path)
    except AttributeError:
        return None
    return layer if isinstance(layer, (nn.RNNBase, nn.RNNCellBase)) else None


def output_spec(module: fx.GraphModule) -> TreeSpec | None:
    """The structure of the model's output that :func:`trace` recorded for a torch.export graph
    (whose output is flat); None for a torch.fx graph, whose output node holds the structure."""
    spec = module.meta.get(_OUT_SPEC)
    return spec if isinstance(spec, TreeSpec) else None


def _describe(value: Any) -> tuple[tuple[int, ...] | None, str | None, int]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), str(value.dtype).removeprefix("torch."), \
            value.numel() * value.element_size()
    return None, None, 0


class _Recorder(fx.Interpreter):
    """Runs the graph, recording per node: FLOPs (one pass, with ``counter``; else seconds, each
    pass), and values."""

    def __init__(self, module: fx.GraphModule, counter: MacCounter | None = None) -> None:
        super().__init__(module)
        self.counter = counter
        self.seconds: dict[str, list[float]] = {}
        self.flops: dict[str, int] = {}
        self.values: dict[str, tuple[tuple[int, ...] | None, str | None, int]] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in COMPUTE_OPS:
            result = super().run_node(n)
        elif self.counter is not None:
            # NOTE: one counter over the whole run (as count_macs runs one); a node's FLOPs are what
            # the total grew by while it ran.
            before = self.counter.get_total_flops()
            result = self._counted(n)
            self.flops[n.name] = self.counter.get_total_flops() - before
        else:
            start = time.perf_counter()
            result = super().run_node(n)
            self.seconds.setdefault(n.name, []).append(time.perf_counter() - start)
        if n.op != "output":
            self.values[n.name] = _describe(result)
        return result

    def _counted(self, n: fx.Node) -> Any:
        """Run ``n``; a recurrent layer's call in an exported graph counts by formula, not its ops
        (what the counter's hooks on the layer do when a torch.fx graph calls the layer itself)."""
        layer = n.meta.get(_LAYER)
        assert self.counter is not None
        if layer is None:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        for weight, macs in recurrent_macs(layer, args[0] if args else kwargs.get("input")):
            self.counter.add(torch.ops.aten.mm, 2 * macs, (weight,))
        self.counter.recurrent += 1
        try:
            return super().run_node(n)
        finally:
            self.counter.recurrent -= 1


def measure_nodes(module: fx.GraphModule, inputs: tuple[torch.Tensor, ...], method: str, *,
                  latency: bool = True, repeats: int = 5, threads: int | None = None) -> GraphCosts:
    """Run ``module`` on ``inputs``: MACs per node, median latency over ``repeats`` runs (after
    one warm-up run; skipped, all 0, when ``latency`` is False) and what crosses every cut."""
    def count(grad: bool) -> _Recorder:
        recorder = _Recorder(module, MacCounter())
        assert recorder.counter is not None
        with counting_mode(module, grad), recorder.counter, recorder.counter.recurrent_layers(module):
            recorder.run(*inputs)
        return recorder

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        counter = with_grad_if_tracked(count)
        with counting_mode(module):
            timer = _Recorder(module)
            for _ in range(1 + repeats if latency else 0):
                timer.run(*inputs)
    finally:
        torch.set_num_threads(old_threads)
    graph = module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    compute = [n for n in graph.nodes if n.op in COMPUTE_OPS]

    def info(n: fx.Node) -> NodeInfo:
        shape, dtype, nbytes = counter.values[n.name]
        times = timer.seconds.get(n.name, [])[1:]  # NOTE: the first run is the warm-up.
        return NodeInfo(name=n.name, op=n.op, target=_target_name(n), macs=counter.flops.get(n.name, 0) // 2,
                        latency_ms=statistics.median(times) * 1000.0 if times else 0.0,
                        shape=shape, dtype=dtype, nbytes=nbytes)

    nodes = tuple(info(n) for n in compute)
    crossing = _crossing(placeholders, compute)
    by_name = {i.name: i for i in (*(info(n) for n in placeholders), *nodes)}
    cut_bytes = tuple(sum(by_name[v].nbytes for v in names)
                      if all(by_name[v].is_tensor for v in names) else None for names in crossing)
    return GraphCosts(method=method, inputs=tuple(by_name[n.name] for n in placeholders),
                      nodes=nodes, crossing=crossing, cut_bytes=cut_bytes)


def _target_name(n: fx.Node) -> str:
    if isinstance(n.target, str):
        return n.target
    return getattr(n.target, "__name__", None) or str(n.target)


def _crossing(placeholders: Sequence[fx.Node], compute: Sequence[fx.Node]) -> tuple[tuple[str, ...], ...]:
    """Names of the values crossing the cut after each position 1..N-1 (see the module docstring)."""
    position = {n: 0 for n in placeholders}
    position.update({n: i + 1 for i, n in enumerate(compute)})
    end = len(compute) + 1  # NOTE: the graph's output reads its values after the last node.
    last_use = {}
    for value in position:
        uses = [position.get(user, end) for user in value.users]
        last_use[value] = max(uses, default=position[value])
    ordered = sorted(position, key=position.__getitem__)
    return tuple(tuple(v.name for v in ordered if position[v] <= j < last_use[v])
                 for j in range(1, len(compute)))
