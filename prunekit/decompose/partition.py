"""Split a model into K sequential stages: balanced cost, few bytes crossing each cut.

Pipeline: :func:`~prunekit.decompose.partition_graph.trace` the model (torch.fx, else
torch.export), measure every node (MACs, latency, output bytes), pick the cuts with the dynamic
programme of :mod:`~prunekit.decompose.partition_cuts`, and build one ``torch.fx.GraphModule`` per
stage. Stage k takes exactly the tensors crossing the cut in front of it and returns exactly the
tensors crossing the cut behind it, in topological order, so stage k's outputs are stage k+1's
positional inputs. A tensor used two stages later (a long skip connection) is passed through the
stage in between: each stage talks only to its neighbours, as a pipeline over processes needs.
(``torch.fx.passes.split_module`` wires such a tensor straight to the later stage instead, which
is why the stage graphs are built here from the traced graph's nodes with ``Graph.node_copy``.)
The last stage returns the model's output as the traced graph does: in the model's structure for
torch.fx, flat (its tensors in a tuple; one tensor alone) for torch.export, whose structure
(a dict, a namedtuple, a Hugging Face ModelOutput) :meth:`Partition.run` rebuilds.

Example::

    part = partition(model, torch.randn(1, 3, 224, 224), stages=2, balance="macs")
    out = part.run(x)                     # the stages chained: equal to model(x)
    part.save("stages/")                  # stage_k.safetensors + stage_k.onnx + manifest.json
    again = load_partition(model, "stages/")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import TreeSpec, tree_unflatten

from prunekit._checks import positional_inputs
from prunekit.decompose.partition_cuts import best_cuts
from prunekit.decompose.partition_graph import GraphCosts, measure_nodes, output_spec, trace
from prunekit.errors import ConfigError, DataError, OutputError
from prunekit.io import load_json, load_weights, save_json, save_weights
from prunekit.io.files import TEMP_PREFIX, clean_stale, fresh_name, remove_path
from prunekit.measure.macs import ExampleInput, as_inputs

__all__ = ["Partition", "partition", "load_partition", "build_stages", "tensor_inputs", "BALANCES",
           "MANIFEST_FILE"]

BALANCES = ("macs", "latency")
MANIFEST_FILE = "manifest.json"
FORMAT = "prunekit.partition"
VERSION = 1


@dataclass(frozen=True)
class Partition:
    """K stages (``stages[k]`` an ordinary ``nn.Module``) and their ``manifest`` (JSON-ready).

    The manifest records, per stage, its node range, input and output tensors (name, shape at
    the example's batch size, dtype, bytes), MACs, latency and balancing cost; and for the whole,
    the tracing method, the cut positions and every node name in order. ``output_spec`` is the
    structure of the model's output where the last stage returns it flat (traced by torch.export).
    """

    stages: tuple[nn.Module, ...]
    manifest: dict[str, Any]
    output_spec: TreeSpec | None = None

    def run(self, *inputs: torch.Tensor) -> Any:
        """The stages chained on ``inputs``: equal to the original model's output, in its structure
        (a dict, a namedtuple or a Hugging Face ModelOutput comes back as one)."""
        values: Any = inputs
        with torch.no_grad():
            for stage in self.stages:
                values = stage(*_as_tuple(values))
        if self.output_spec is None:
            return values
        # NOTE: the stages stay flat (pipeline stages and ONNX files exchange tensors); only the chain
        # is given the model's structure back.
        return tree_unflatten(list(_as_tuple(values)), self.output_spec)

    def stage_inputs(self, *inputs: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """The positional inputs each stage receives when the chain runs on ``inputs``."""
        seen, values = [], tuple(inputs)
        with torch.no_grad():
            for stage in self.stages:
                seen.append(values)
                values = _as_tuple(stage(*values))
        return seen

    def save(self, folder: str | os.PathLike[str], *, onnx: bool = True,
             progress: bool = False) -> Path:
        """Write ``stage_k.safetensors`` (+ ``stage_k.onnx``) per stage and ``manifest.json``.

        The ONNX files are exported on inputs of the manifest's shapes with a dynamic batch
        (:func:`prunekit.measure.export_onnx`); :func:`load_partition` reads the rest back.
        ``progress`` shows a bar over the stages. All or nothing: the files are written into a
        hidden folder beside ``folder`` that then replaces it whole, so a failed export leaves
        ``folder`` as it was and nothing of an earlier save (a stage_2 of 3 stages) stays beside
        a new one. ``folder`` must be new, empty or an earlier save.
        """
        from tqdm.auto import tqdm

        from prunekit.measure.onnx import export_onnx

        out = Path(folder)
        _check_save_target(out)
        manifest = {**self.manifest, "stages": [dict(s) for s in self.manifest["stages"]]}
        feeds = self.stage_inputs(*example_inputs(self.manifest["inputs"])) if onnx else []
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent)
        work = fresh_name(out, "")
        work.mkdir()
        try:
            bar = tqdm(self.stages, desc="saving stages", disable=not progress)
            for k, stage in enumerate(bar):
                entry = manifest["stages"][k]
                entry["weights"] = save_weights(stage, work / f"stage_{k}.safetensors").name
                if onnx:
                    entry["onnx"] = export_onnx(stage, feeds[k], work / f"stage_{k}.onnx").name
            save_json(manifest, work / MANIFEST_FILE)
            _swap_in(work, out)
        finally:
            remove_path(work)
        return out


def _as_tuple(values: Any) -> tuple[Any, ...]:
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def _check_save_target(out: Path) -> None:
    """Refuse, before any work, a file and a folder holding other files than an earlier save
    (the save replaces the folder whole)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"Partition.save: '{out}' is a file, not a folder. Pass a folder path for the "
                          f"stages, e.g. '{out.with_suffix('')}-stages'; nothing was written.")
    if not out.is_dir():
        return
    held = sorted(p.name for p in out.iterdir() if not p.name.startswith(TEMP_PREFIX))
    try:
        manifest = load_json(out / MANIFEST_FILE) if MANIFEST_FILE in held else None
    except DataError:  # NOTE: a manifest.json that is no JSON: not an earlier save
        manifest = None
    if held and not (isinstance(manifest, dict) and manifest.get("format") == FORMAT):
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise OutputError(f"Partition.save: '{out}' holds files that are not stages saved by Partition.save "
                          f"({shown}), and the save replaces the folder whole. Pass a new or empty folder; "
                          f"nothing was written.")


def _swap_in(work: Path, out: Path) -> None:
    """Put the folder ``work`` in the place of ``out`` (renames; an earlier ``out`` is removed after)."""
    if not out.exists():
        work.rename(out)
        return
    # NOTE: two renames (no portable atomic swap of folders): between them, for an instant, ``out``
    # is missing and the earlier save sits under a hidden name beside it.
    old = fresh_name(out, ".old")
    out.rename(old)
    try:
        work.rename(out)
    except BaseException:
        old.rename(out)  # NOTE: the earlier save comes back when the new one cannot take its place.
        raise
    remove_path(old)


def example_inputs(specs: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Inputs of the recorded shapes and dtypes (random floats from a fixed generator, int zeros)."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for spec in specs:
        dtype = getattr(torch, spec["dtype"])
        out.append(torch.randn(spec["shape"], generator=generator, dtype=dtype)
                   if dtype.is_floating_point else torch.zeros(spec["shape"], dtype=dtype))
    return tuple(out)


def _check_balance(balance: str) -> None:
    if balance not in BALANCES:
        raise ConfigError(f"partition: 'balance' must be one of {', '.join(BALANCES)}; got "
                          f"{balance!r}. Pass balance='macs' (counted) or 'latency' (measured).")


def partition(model: nn.Module, example_inputs: ExampleInput, stages: int, *,
              balance: str = "macs", tolerance: float = 0.05, method: str = "auto",
              repeats: int = 5, threads: int | None = None) -> Partition:
    """Split ``model`` into ``stages`` sequential stages (objective: ``partition_cuts``).

    balance: "macs" (counted per node) or "latency" (each node timed under an fx Interpreter,
    median of ``repeats`` runs at ``threads`` intra-op threads, on ``example_inputs``'s batch).
    tolerance: how far above the best bottleneck a cut may go to cross fewer bytes (0.05 = 5%).
    The stages work on a deep copy in eval mode; ``model`` is not changed.
    """
    _check_balance(balance)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"partition: 'repeats' must be an integer >= 1; got {repeats!r}. Pass "
                          f"the number of timed runs per node, e.g. 5.")
    inputs = tensor_inputs(model, example_inputs)
    module, traced_by = trace(model, inputs, method=method)
    costs = measure_nodes(module, inputs, traced_by, latency=True, repeats=repeats, threads=threads)
    cuts = best_cuts(costs.costs(balance), costs.cut_bytes, stages, tolerance=tolerance)
    built = build_stages(module, costs, cuts)
    manifest = _manifest(costs, cuts, balance=balance, tolerance=tolerance)
    return Partition(stages=built, manifest=manifest, output_spec=output_spec(module))


def tensor_inputs(model: nn.Module, example_inputs: ExampleInput) -> tuple[torch.Tensor, ...]:
    """The example input as the tuple of tensors the first stage takes: a tensor, a tuple of
    tensors, or a dict keyed by ``forward``'s parameter names (a tokenizer's output), as
    :func:`prunekit.measure.count_macs` takes them."""
    import inspect

    args = positional_inputs(model, example_inputs, "partition")
    name = type(model).__name__
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):  # NOTE: a forward without a readable signature
        params = []
    if isinstance(args, Mapping):
        unknown = [key for key in args if key not in params]
        if not args:
            what = "that is empty"
        elif unknown and params:
            what = f"whose key {unknown[0]!r} names no parameter of {name}.forward ({', '.join(params)})"
        else:
            what = "that is not keyed by forward's parameter names"
        raise ConfigError(f"partition: example_inputs is a dict {what}, and the stages take tensors, not one "
                          f"dict. Key it by forward's parameter names, or pass the tensors as a tuple in "
                          f"forward's order.")
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    bad = next((i for i, x in enumerate(args) if not isinstance(x, torch.Tensor)), None)
    if bad is not None:
        which = f"'{params[bad]}'" if bad < len(params) else str(bad)
        held = "None (its default, left before a later input)" if args[bad] is None \
            else f"a {type(args[bad]).__name__}"
        raise ConfigError(f"partition: input {which} of {name}.forward is {held}, but the stages exchange "
                          f"tensors only. Pass a tensor for every input up to the last one given, or wrap "
                          f"the model in a module whose forward takes the tensors and builds the rest.")
    return as_inputs(args)


def build_stages(module: fx.GraphModule, costs: GraphCosts, cuts: Sequence[int]) -> tuple[nn.Module, ...]:
    """One GraphModule per stage of ``module``, cut after the node positions ``cuts``."""
    graph_nodes = {n.name: n for n in module.graph.nodes}
    compute = [graph_nodes[n.name] for n in costs.nodes]
    bounds = [0, *cuts, len(compute)]
    stage_inputs = [[i.name for i in costs.inputs], *(costs.crossing[j - 1] for j in cuts)]
    stages = []
    for k, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        last = k == len(bounds) - 2
        outputs = None if last else costs.crossing[stop - 1]
        graph = _stage_graph(module, stage_inputs[k], compute[start:stop], outputs, graph_nodes,
                             unwrap=costs.method == "torch.export")
        stage = fx.GraphModule(module, graph, class_name=f"Stage{k}")
        stages.append(stage.eval())
    return tuple(stages)


def _stage_graph(module: fx.GraphModule, inputs: Sequence[str], nodes: Sequence[fx.Node],
                 outputs: Sequence[str] | None, graph_nodes: dict[str, fx.Node],
                 unwrap: bool) -> fx.Graph:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {graph_nodes[name]: graph.placeholder(name) for name in inputs}

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":  # NOTE: parameters used directly are copied per stage.
                raise AssertionError(f"stage reads '{node.name}', which does not cross its cut")
            env[node] = graph.node_copy(node, lookup)
        return env[node]

    for node in nodes:
        env[node] = graph.node_copy(node, lookup)
    if outputs is not None:
        result = [lookup(graph_nodes[name]) for name in outputs]
        graph.output(result[0] if len(result) == 1 else tuple(result))
    else:
        (out,) = [n for n in module.graph.nodes if n.op == "output"]
        value = fx.map_arg(out.args[0], lookup)
        if unwrap and isinstance(value, (tuple, list)) and len(value) == 1:
            value = value[0]  # NOTE: torch.export's graph returns a flat tuple; a lone tensor.
        graph.output(value)
    graph.lint()
    return graph


def _manifest(costs: GraphCosts, cuts: Sequence[int], *, balance: str, tolerance: float) -> dict[str, Any]:
    bounds = [0, *cuts, len(costs.nodes)]
    weights = costs.costs(balance)
    inputs = [i.to_dict() for i in costs.inputs]
    stages = []
    for k, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        nodes = costs.nodes[start:stop]
        ins = inputs if k == 0 else [costs.info(v).to_dict() for v in costs.crossing[start - 1]]
        last = stop == len(costs.nodes)
        outs = [] if last else [costs.info(v).to_dict() for v in costs.crossing[stop - 1]]
        stages.append({
            "index": k, "node_range": [start, stop], "first_node": nodes[0].name,
            "last_node": nodes[-1].name, "num_nodes": len(nodes), "inputs": ins,
            "outputs": outs, "bytes_in": sum(i["bytes"] for i in ins),
            "bytes_out": sum(o["bytes"] for o in outs), "macs": sum(n.macs for n in nodes),
            "latency_ms": sum(n.latency_ms for n in nodes),
            "cost": sum(weights[start:stop])})
    total = sum(weights)
    return {"format": FORMAT, "version": VERSION, "method": costs.method, "balance": balance,
            "tolerance": tolerance, "cuts": list(cuts), "inputs": inputs,
            "total": {"macs": sum(n.macs for n in costs.nodes),
                      "latency_ms": sum(n.latency_ms for n in costs.nodes), "cost": total},
            "bottleneck": max(s["cost"] for s in stages),
            "node_names": [n.name for n in costs.nodes], "stages": stages}


def load_partition(model: nn.Module, folder: str | os.PathLike[str]) -> Partition:
    """Rebuild the stages saved by :meth:`Partition.save` from the original ``model``: retrace
    it, check that it has the same nodes, cut at the recorded positions and load each stage's
    weights (safetensors; no pickle)."""
    path = Path(folder)
    manifest = load_json(path / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"'{path / MANIFEST_FILE}' is not a partition manifest (format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                        f"expected {FORMAT!r}). Write it with Partition.save.")
    inputs = example_inputs(manifest["inputs"])
    module, traced_by = trace(model, inputs, method=manifest["method"])
    costs = measure_nodes(module, inputs, traced_by, latency=False)
    names = [n.name for n in costs.nodes]
    if names != manifest["node_names"]:
        differ = next((i for i, (a, b) in enumerate(zip(names, manifest["node_names"])) if a != b),
                      min(len(names), len(manifest["node_names"])))
        raise DataError(
            f"'{path}': the model's graph does not match the manifest (node {differ}: "
            f"{names[differ] if differ < len(names) else 'end'} here, "
            f"{manifest['node_names'][differ] if differ < len(manifest['node_names']) else 'end'} "
            f"in the manifest). Pass the architecture the stages were cut from.")
    stages = build_stages(module, costs, manifest["cuts"])
    for k, stage in enumerate(stages):
        load_weights(stage, path / manifest["stages"][k].get("weights", f"stage_{k}.safetensors"))
    return Partition(stages=stages, manifest=manifest, output_spec=output_spec(module))

