"""Latency from a look-up table: each layer's measured time at each width it is asked at.

A configuration's latency is predicted as the sum, over every ``nn.Conv2d``/``nn.Linear`` layer, of
that layer's time alone at its pruned widths (a fresh layer of that shape run on an input of the
shape the layer sees in the model), plus the rest of the model (BatchNorm, activations, pooling,
residual adds: the measured dense latency minus the dense layers' sum), scaled by the fraction of
the layers' output activations kept (each kept channel weighted by its output positions: a channel
at 28 x 28 moves 16 times what one at 7 x 7 does), since those passes move memory in proportion to it (HALP,
Shen et al. 2022, and NetAdapt, Yang et al. 2018, build such tables). A layer a configuration
factorises (a ``rank:<module>`` choice such as ``"svd:0.5"``) is priced as the chain of layers that
choice builds (:func:`~prunekit.search.ranks.shell_of`, at the layer's pruned widths when widths are
searched too), timed as one entry at the layer's input shape; a factorised layer's output width is
the layer's own, so the rest's scale is unchanged. Entries are measured on first use on this
machine, for one backend (``torch`` eager or ``onnxruntime``), batch size and thread count, and
cached on disk as JSON keyed by the timed module's architecture (its ``repr``: every layer's
shape) and input shape, so a second search pays nothing, and an entry is found again by any
configuration that builds the same layer or chain. On ``onnxruntime`` an entry's ONNX model is built
directly (:func:`~prunekit.measure.onnx_layers.layer_onnx`) and timed with the same session options and
protocol as :func:`~prunekit.measure.measure_latency`, which exports; a module it cannot build is exported.
:meth:`LatencyTable.error` reports how far predictions are from measured end-to-end latency.

Where the table misleads (a small model at batch 1 is bound by per-node overhead; ONNX Runtime
reorders data between layouts at the ends of a layer timed alone, which the whole model does not),
:meth:`LatencyTable.measured` times each configuration's whole model instead, once per configuration, in
rounds interleaved with the dense model (its time is its ratio to the dense model's, times the dense
model's reference time), so a slow spell of a shared machine moves neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunekit._modes import modes_of, restore_modes
from prunekit.graph import DependencyGraph
from prunekit.io import save_json
from prunekit.measure import layer_onnx, measure_latency
from prunekit.measure.latency import interleaved, interleaved_onnx_latencies, measure_onnx_latencies
from prunekit.search.cost import Cost
from prunekit.search.evaluator import key_of
from prunekit.search.ranks import shell_of
from prunekit.search.space import SearchSpace, build

__all__ = ["LATENCY_MODELS", "LatencyTable"]

LATENCY_MODELS = ("table", "measured")  # NOTE: how a search prices latency: predict() or measured()
ROUNDS = 3  # NOTE: a configuration's whole model is timed in this many rounds interleaved with the dense model


def _shapes(model: nn.Module, example_inputs: Any,
            names: Sequence[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, float]]:
    """Each layer's input shape, and its output positions per channel and sample (a conv's H x W,
    a Linear's tokens): what one output channel costs the BatchNorm, activation and pooling passes."""
    shapes: dict[str, tuple[int, ...]] = {}
    positions: dict[str, float] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
            if isinstance(out, torch.Tensor) and out.dim() >= 2:
                channels = out.shape[-1] if isinstance(module, nn.Linear) else out.shape[1]
                positions.setdefault(name, out.numel() / max(1, out.shape[0] * channels))
        return hook

    handles = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        restore_modes(modes)
        for h in handles:
            h.remove()
    return shapes, positions


class LatencyTable:
    """Predicted latency (ms) of configurations of ``space``; entries measured lazily and cached.

    Args:
        backend: ``"torch"`` or ``"onnxruntime"``.
        batch_size, threads: the protocol every entry and end-to-end measurement uses.
        cache_dir: where the table is kept between runs (None: in memory only).
        min_time_s: seconds of timed calls per entry.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, space: SearchSpace, example_inputs: Any, *,
                 backend: str = "torch", batch_size: int = 1, threads: int = 2,
                 cache_dir: str | os.PathLike[str] | None = None, min_time_s: float = 0.1,
                 cost: Cost | None = None) -> None:
        self.model, self.graph, self.space, self.example_inputs = model, graph, space, example_inputs
        self.backend, self.batch_size, self.threads, self.min_time_s = backend, batch_size, threads, min_time_s
        self.cost = cost or Cost(model, graph, space, example_inputs)
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
        shapes, self.positions = _shapes(model, example_inputs, list(self.layers))
        self.layers = {n: m for n, m in self.layers.items() if n in shapes}
        self.inputs = {n: (batch_size, *shapes[n][1:]) for n in self.layers}
        machine = f"{platform.machine()}-{platform.processor() or 'cpu'}-{os.cpu_count()}"
        self.file = (Path(cache_dir) / f"latency-{backend}-b{batch_size}-t{threads}-{machine}.json"
                     if cache_dir is not None else None)
        self.entries: dict[str, float] = json.loads(self.file.read_text()) if self.file and self.file.is_file() else {}
        self._rest: float | None = None
        self._reference: float | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._measured: dict[str, float] = {}

    def _signature(self, name: str, config: Mapping[str, Any]) -> tuple[str, nn.Module, torch.Tensor]:
        layer = self.layers[name]
        shape = self.cost.shape(config, f"{name}.weight")
        spatial = self.inputs[name][2:]
        if isinstance(layer, nn.Linear):
            fresh: nn.Module = nn.Linear(shape[1], shape[0], bias=layer.bias is not None)
            x = torch.randn(*self.inputs[name][:-1], shape[1])
        else:
            depthwise = layer.groups > 1 and layer.groups == layer.in_channels
            groups = shape[0] if depthwise else layer.groups
            fresh = nn.Conv2d(shape[1] * groups, shape[0], layer.kernel_size, layer.stride,  # type: ignore[arg-type]
                              layer.padding, layer.dilation, groups, bias=layer.bias is not None,  # type: ignore[arg-type]
                              padding_mode=layer.padding_mode)  # NOTE: reflect/circular pads cost time zeros do not
            x = torch.randn(self.batch_size, shape[1] * groups, *spatial)
        choice = config.get(f"rank:{name}", "none")
        if choice != "none":  # NOTE: factorised after pruning, at a fraction of the pruned layer's rank, as build does
            fresh = shell_of(fresh, choice)
        key = f"{' '.join(repr(fresh).split())}|{tuple(x.shape)}"
        return key, fresh, x

    def _time(self, fresh: nn.Module, x: torch.Tensor) -> float:
        """Median ms of one entry; on ONNX Runtime a layer or chain is built as ONNX directly (the exporter
        rebuilds its operator registry on every call), anything else is exported."""
        built = layer_onnx(fresh, tuple(x.shape)) if self.backend == "onnxruntime" else None
        if built is not None:
            return float(measure_onnx_latencies(built, x, batch_sizes=(x.shape[0],), threads=self.threads,
                                                min_time_s=self.min_time_s)[0].median_ms)
        return float(measure_latency(fresh, x, backend=self.backend, batch_size=x.shape[0], threads=self.threads,
                                     min_time_s=self.min_time_s).median_ms)

    def layer_ms(self, name: str, config: Mapping[str, Any]) -> float:
        """One layer's time (ms) at ``config``'s widths (as the chain it becomes where ``config``
        factorises it), from the table or measured now."""
        key, fresh, x = self._signature(name, config)
        if key not in self.entries:
            self._keep(key, self._time(fresh.eval(), x))
        return self.entries[key]

    def _keep(self, key: str, ms: float) -> None:
        self.entries[key] = ms
        if self.file is not None:  # NOTE: merged with the file, so workers sharing it keep each other's entries
            on_disk = json.loads(self.file.read_text()) if self.file.is_file() else {}
            self.entries = {**on_disk, **self.entries}
            save_json(self.entries, self.file)

    def _volume(self, config: Mapping[str, Any]) -> float:
        blocks = tuple(b + "." for b in self.space.removed_blocks(config))
        total = 0.0
        for name in self.layers:
            if blocks and (name + ".").startswith(blocks):
                continue
            total += self.cost.shape(config, f"{name}.weight")[0] * self.positions.get(name, 1.0)
        return total

    def measure(self, config: Mapping[str, Any]) -> float:
        """The measured end-to-end latency (ms) of ``config``'s model: its time relative to the dense
        model's, timed in :data:`ROUNDS` interleaved rounds (a slow spell of a shared machine slows
        both alike), times the dense model's reference time (:meth:`reference_ms`)."""
        from prunekit.importance import score

        if key_of(config) == key_of(self.space.dense()):
            return self.reference_ms()
        scores = self.cost.scores if self.cost.scores is not None else score(self.graph, self.model, "l2")
        # NOTE: factorised layers as shells: the time of a chain does not depend on its weights' values
        example = self.example_inputs if self.space.ranks(config) else None
        built = build(self.model, self.graph, self.space, config, scores, example_inputs=example, weights=False)
        return self._ratio(built.eval()) * self.reference_ms()

    def reference_ms(self) -> float:
        """The dense model's time (ms): the median of three timings, taken once (one slow spell
        would otherwise price every configuration; a 2-core machine gave 36 and 83 ms for one model)
        and kept with the entries, so a resumed search (or a worker) prices as the first run did."""
        if self._reference is None:
            key = self._dense_key()
            if key not in self.entries:
                self._keep(key, float(statistics.median(self._time_dense() for _ in range(3))))
            self._reference = self.entries[key]
        return self._reference

    def _dense_key(self) -> str:
        """The entry of the dense model: its architecture and input shapes at the table's batch size."""
        shapes = [tuple(t.shape[1:]) for t in tree_flatten(self.example_inputs)[0] if isinstance(t, torch.Tensor)]
        digest = hashlib.sha256(f"{' '.join(repr(self.model).split())}|{shapes}".encode()).hexdigest()[:16]
        return f"dense model {type(self.model).__name__} {digest}"

    @property
    def _whole_s(self) -> float:
        """Seconds of timed calls for a whole model (five times an entry's: its time varies more)."""
        return self.min_time_s * 5

    def _time_dense(self) -> float:
        if self.backend == "onnxruntime":  # NOTE: exported once, not once per timing
            return float(measure_onnx_latencies(self._dense_onnx(), self.example_inputs, batch_sizes=(self.batch_size,),
                                                threads=self.threads, min_time_s=self._whole_s)[0].median_ms)
        return self._time_whole(self.model, self._whole_s)

    def _dense_onnx(self) -> Path:
        """The dense model exported once per table, in a folder removed with it."""
        if self._folder is None:
            from prunekit.measure import export_onnx

            self._folder = tempfile.TemporaryDirectory(prefix="prunekit-latency-")
            export_onnx(self.model, self.example_inputs, Path(self._folder.name) / "dense.onnx")
        return Path(self._folder.name) / "dense.onnx"

    def _time_whole(self, model: nn.Module, min_time_s: float) -> float:
        return float(measure_latency(model, self.example_inputs, backend=self.backend, batch_size=self.batch_size,
                                     threads=self.threads, min_time_s=min_time_s).median_ms)

    def _ratio(self, built: nn.Module) -> float:
        """``built``'s time over the dense model's, both timed in the same interleaved rounds (each
        model :attr:`_whole_s` seconds in all)."""
        if self.backend != "onnxruntime":
            paired = interleaved({"dense": self.model, "config": built},
                                 lambda m: self._time_whole(m, self._whole_s / ROUNDS), reference="dense",
                                 rounds=ROUNDS)
            return paired["config"].ratio
        from prunekit.measure import export_onnx

        dense = self._dense_onnx()
        config = export_onnx(built, self.example_inputs, dense.with_name("config.onnx"))
        timed = interleaved_onnx_latencies({"dense": dense, "config": config},
                                           self.example_inputs, batch_sizes=(self.batch_size,),
                                           threads=self.threads, rounds=ROUNDS, min_time_s=self._whole_s)
        return timed["config"][0].median_ms / timed["dense"][0].median_ms

    def measured(self, config: Mapping[str, Any]) -> float:
        """:meth:`measure`, once per configuration (a search asks for the same one many times)."""
        key = key_of(config)
        if key not in self._measured:
            self._measured[key] = self.measure(config)
        return self._measured[key]

    def predict(self, config: Mapping[str, Any]) -> float:
        """Predicted latency (ms) of ``config``: the layers' table entries plus the scaled rest."""
        dense = self.space.dense()
        if self._rest is None:
            self._rest = max(self.reference_ms() - sum(self.layer_ms(n, dense) for n in self.layers), 0.0)
        blocks = tuple(b + "." for b in self.space.removed_blocks(config))
        layers = sum(self.layer_ms(n, config) for n in self.layers if not (blocks and (n + ".").startswith(blocks)))
        return layers + self._rest * self._volume(config) / max(self._volume(dense), 1e-9)

    def error(self, configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Predicted against measured end-to-end latency over ``configs``: mean and max relative error."""
        rows = [{"predicted_ms": self.predict(c), "measured_ms": self.measure(c)} for c in configs]
        errors = [abs(r["predicted_ms"] - r["measured_ms"]) / max(r["measured_ms"], 1e-9) for r in rows]
        return {"mean_relative_error": statistics.fmean(errors) if errors else 0.0,
                "max_relative_error": max(errors, default=0.0), "rows": rows, "backend": self.backend,
                "batch_size": self.batch_size, "threads": self.threads}
