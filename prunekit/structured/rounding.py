"""Rounding that earns its place: a group's kept width is rounded up only where that is measurably faster.

``round_to="auto"`` used to round every group of 16-63 channels up to a multiple of 8 (16 from 64
channels): odd widths can fall off the vectorised paths of CPU kernels. On small networks that was
paid for in accuracy without the speed (ResNet-20 on Fashion-MNIST lost 1.3 points against exact
widths at 2x, issue 20), and its coarse steps overshot MACs targets (a 32/64-channel CNN asked for
half its MACs kept 0.377). So "auto" now asks a :class:`RoundingTable`, per group and width, whether
rounding up buys time; without one it keeps exact widths.

:class:`LayerTimings` is the measured table: for a group at ``exact`` and ``rounded`` kept widths it
builds the group's convolutions and linear layers (those writing its channels at that width, those
reading them at that input width; other widths as in the dense model) and times them on the target
backend in interleaved rounds: exact, rounded, and exact again as an A/A control. Rounding pays
when the rounded layers are faster than the exact ones by more than the control's spread (and at
least :data:`NOISE_FLOOR`). Readings are cached in memory and on disk (``$PRUNEKIT_CACHE_DIR`` or
``~/.cache/prunekit``), keyed by the layer shapes, backend, batch size, threads and torch version,
so a second fit times nothing. :class:`TimingTable` is the same decision from given times (group ->
width -> ms): tests and users inject one (``PrunerOptions(timings=path)``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from prunekit._modes import modes_of, restore_modes
from prunekit.errors import ConfigError, DataError
from prunekit.graph.dependency import DependencyGraph
from prunekit.graph.groups import ChannelGroup, submodule
from prunekit.measure.latency import BACKENDS, measure_latency
from prunekit.measure.macs import ExampleInput, as_args

__all__ = ["RoundingTable", "TimingTable", "LayerTimings", "NOISE_FLOOR", "cache_dir"]

NOISE_FLOOR = 0.03  # NOTE: below this relative gain a timing difference is not trusted, whatever the control says
ROUNDS = 3
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class RoundingTable(Protocol):
    """Says whether keeping ``rounded`` channels of a group instead of ``exact`` is measurably faster."""

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        """True when the group's layers run faster at ``rounded`` than at ``exact`` beyond noise."""
        ...


@dataclass(frozen=True)
class TimingTable:
    """Given timings: group id -> {kept width: ms of the group's layers}, and the relative noise.

    A width missing from the table is no evidence, so the exact width is kept.
    """

    times: Mapping[str, Mapping[int, float]]
    noise: float = NOISE_FLOOR

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        """True when ``times[group_id][rounded]`` is below ``times[group_id][exact]`` by more than ``noise``."""
        known = self.times.get(group_id, {})
        if exact not in known or rounded not in known:
            return False
        return known[rounded] < known[exact] * (1.0 - max(self.noise, 0.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_dict` reads it back."""
        return {"noise": self.noise, "times": {g: {str(w): ms for w, ms in t.items()} for g, t in self.times.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "timings") -> TimingTable:
        """The table from :meth:`to_dict`'s data; a wrong shape is a one-line error naming ``where``."""
        try:
            times = {str(g): {int(w): float(ms) for w, ms in t.items()} for g, t in data["times"].items()}
            return cls(times=times, noise=float(data.get("noise", NOISE_FLOOR)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: not a rounding table ({type(exc).__name__}: {exc}); expected "
                            f'{{"noise": 0.03, "times": {{"<group id>": {{"<width>": <ms>, ...}}}}}}.') from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TimingTable:
        """Read a table written as JSON (``to_dict``)."""
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"timings: no rounding table at '{file}'. Pass the path of a JSON file "
                              f"written from TimingTable.to_dict(), or leave timings unset to time the layers.")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"timings: '{file}' is not valid JSON ({exc}). Re-create it.") from None
        return cls.from_dict(data, where=f"timings '{file}'")


def cache_dir() -> Path:
    """Where measured readings are kept: ``$PRUNEKIT_CACHE_DIR`` or ``~/.cache/prunekit``."""
    return Path(os.environ.get("PRUNEKIT_CACHE_DIR") or Path.home() / ".cache" / "prunekit")


@dataclass(frozen=True)
class _Layer:
    """One conv/linear of a group, with the group's channels as a free width."""

    kind: str
    attrs: tuple[tuple[str, Any], ...]  # NOTE: constructor arguments other than the channel counts
    in_channels: int
    out_channels: int
    depthwise: bool
    writes: bool  # NOTE: the group is its output channels (else its input channels)
    inner: int  # NOTE: input features per channel of a linear layer after a flatten
    shape: tuple[int, ...]  # NOTE: one sample's input, without the batch dim

    def key(self) -> str:
        return json.dumps([self.kind, self.attrs, self.in_channels, self.out_channels, self.depthwise,
                           self.writes, self.inner, self.shape])

    def build(self, width: int) -> tuple[nn.Module, torch.Tensor]:
        """The layer with the group at ``width`` channels, and an input for it (batch 1)."""
        attrs = dict(self.attrs)
        shape = list(self.shape)
        if self.kind == "Linear":
            fan_in, fan_out = (self.in_channels, width) if self.writes else (width * self.inner, self.out_channels)
            shape[-1] = fan_in
            return nn.Linear(fan_in, fan_out, **attrs).eval(), torch.randn(1, *shape)
        fan_in, fan_out = self.in_channels, self.out_channels
        if self.depthwise:
            fan_in = fan_out = attrs["groups"] = width
        elif self.writes:
            fan_out = width
        else:
            fan_in = width
        shape[0] = fan_in
        layer = getattr(nn, self.kind)(fan_in, fan_out, **attrs).eval()
        return layer, torch.randn(1, *shape)


@dataclass
class LayerTimings:
    """Measured rounding decisions for the layers of ``graph`` on ``backend`` (see the module docstring).

    Args:
        model, graph, example_inputs: the dense model, its traced graph, and its input (for the
            shapes each layer sees; the model runs once in eval mode and is left as it was).
        backend: "torch", "torch-fused" or "onnxruntime": the runtime the widths are chosen for.
        batch_size, threads: how the layers are timed.
        cache: the JSON file readings are kept in (default: ``cache_dir()/rounding.json``); None
            (``cache=False``) keeps them in memory only.
        shapes: module name -> its input's shape without the batch dim, where the caller has them
            (``MacsTerms.inputs``); then the model is not run. A callable returning them (or None)
            defers finding the layers to the first rounding that needs a reading: a plan whose
            widths are already multiples costs nothing.
    """

    model: nn.Module
    graph: DependencyGraph
    example_inputs: ExampleInput
    backend: str = "torch"
    batch_size: int = 1
    threads: int = 2
    cache: Path | bool | None = True
    shapes: Mapping[str, tuple[int, ...]] | Callable[[], Mapping[str, tuple[int, ...]] | None] | None = None
    _found: dict[str, tuple[_Layer, ...]] | None = field(default=None, init=False, repr=False)
    _readings: dict[str, list[float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"LayerTimings: backend must be one of {', '.join(BACKENDS)}; got '{self.backend}'.")
        if self.cache is True:
            self.cache = cache_dir() / "rounding.json"
        elif self.cache is False:
            self.cache = None
        if not callable(self.shapes):
            self._found = _group_layers(self.model, self.graph, self.example_inputs, self.shapes)
        if isinstance(self.cache, Path) and self.cache.is_file():
            try:
                self._readings = {k: list(v) for k, v in json.loads(self.cache.read_text()).items()}
            except (json.JSONDecodeError, AttributeError, TypeError):
                self._readings = {}  # NOTE: a damaged cache is re-measured, never trusted

    @property
    def _layers(self) -> dict[str, tuple[_Layer, ...]]:
        """Group id -> its conv/linear layers (found on first use where ``shapes`` is a callable)."""
        if self._found is None:
            shapes = self.shapes() if callable(self.shapes) else self.shapes
            self._found = _group_layers(self.model, self.graph, self.example_inputs, shapes)
        return self._found

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        """Time the group's layers at ``exact``, ``rounded`` and ``exact`` again (A/A), in rounds;
        True when rounded is faster by more than the control's spread and :data:`NOISE_FLOOR`."""
        if exact == rounded:
            return False
        layers = self._layers.get(group_id, ())
        if not layers:
            return False
        key = json.dumps([self.backend, self.batch_size, self.threads, torch.__version__, platform.machine(),
                          [layer.key() for layer in layers], exact, rounded])
        if key not in self._readings:
            self._readings[key] = self._measure(layers, exact, rounded)
            self._save()
        gain, noise = self._readings[key][:2]
        return gain > max(noise, NOISE_FLOOR)

    def _measure(self, layers: tuple[_Layer, ...], exact: int, rounded: int) -> list[float]:
        """[median relative gain of rounded over exact, median A/A spread] over interleaved rounds."""
        built = {w: [layer.build(w) for layer in layers] for w in (exact, rounded)}
        if self.backend == "onnxruntime":
            def ms(width: int) -> float:
                return sum(measure_latency(layer, x, backend="onnxruntime", batch_size=self.batch_size,
                                           threads=self.threads, warmup=2, repeats=10).median_ms
                           for layer, x in built[width])
            return _compare(ms, exact, rounded)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            calls = {w: [_prepared(layer, x, self.batch_size, self.backend) for layer, x in built[w]] for w in built}
            return _compare(lambda w: sum(_block_ms(call) for call in calls[w]), exact, rounded)
        finally:
            torch.set_num_threads(threads)

    def _save(self) -> None:
        if not isinstance(self.cache, Path):
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._readings))
            tmp.replace(self.cache)
        except OSError:
            pass  # NOTE: a read-only home only costs re-measuring next time


def gains_against(ms: Callable[[Any], float], reference: Any, others: Sequence[Any],
                  rounds: int = ROUNDS) -> tuple[dict[Any, float], float]:
    """Relative time each of ``others`` saves against ``reference`` (median over ``rounds`` rounds of
    the reference, every other, the reference again: drift within a round hits both sides), and the
    median A/A spread of the reference's two readings."""
    gains: dict[Any, list[float]] = {k: [] for k in others}
    spreads = []
    for _ in range(rounds):
        first = ms(reference)
        times = {k: ms(k) for k in others}
        again = ms(reference)
        base = max((first + again) / 2, 1e-9)
        spreads.append(abs(first - again) / base)
        for k, t in times.items():
            gains[k].append((base - t) / base)
    return {k: statistics.median(g) for k, g in gains.items()}, statistics.median(spreads)


def _compare(ms: Callable[[int], float], exact: int, rounded: int) -> list[float]:
    """[median relative gain of ``rounded`` over ``exact``, median A/A spread of ``exact``]."""
    gains, spread = gains_against(ms, exact, [rounded])
    return [gains[rounded], spread]


def _prepared(layer: nn.Module, x: torch.Tensor, batch_size: int, backend: str) -> Callable[[], object]:
    """A call of ``layer`` on a batch, in inference mode (BatchNorm-free, so "torch-fused" is "torch")."""
    batch = x.expand(batch_size, *x.shape[1:]).contiguous()

    def call() -> object:
        with torch.inference_mode():
            return layer(batch)
    return call


def _block_ms(call: Callable[[], object], block_s: float = 0.003, blocks: int = 3) -> float:
    """Milliseconds per call: the median of ``blocks`` back-to-back runs of about ``block_s`` each
    (a layer at batch 1 takes microseconds, too short to time one call at a time)."""
    call()
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(1, min(1000, int(block_s / once)))
    readings = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(n):
            call()
        readings.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(readings)


def _group_layers(model: nn.Module, graph: DependencyGraph, example_inputs: ExampleInput,
                  known: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[_Layer, ...]]:
    """Group id -> the conv/linear layers writing or reading its channels, with their input shapes
    (``known``, else recorded in one forward)."""
    if known is not None:
        return {g.id: _layers_of(model, g, known) for g in graph.prunable}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, _LAYERS)]
    modes = modes_of(model)
    try:
        model.eval()
        with torch.no_grad():
            model(*as_args(example_inputs))
    finally:
        for hook in hooks:
            hook.remove()
        restore_modes(modes)
    return {g.id: _layers_of(model, g, shapes) for g in graph.prunable}


def _layers_of(model: nn.Module, group: ChannelGroup, shapes: Mapping[str, tuple[int, ...]]) -> tuple[_Layer, ...]:
    layers: dict[str, _Layer] = {}
    for member in group.members:
        name = member.module
        if name in layers or name not in shapes or not member.tensor.endswith("weight"):
            continue
        module = submodule(model, name)
        if not isinstance(module, _LAYERS) or member.axis not in (0, 1):
            continue
        writes = member.axis == 0
        if isinstance(module, nn.Linear):
            layers[name] = _Layer("Linear", (("bias", module.bias is not None),), module.in_features,
                                  module.out_features, False, writes, member.inner, shapes[name])
            continue
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if module.groups > 1 and not depthwise:
            continue  # NOTE: grouped convolutions are not modelled; their time is left out
        attrs = (("kernel_size", module.kernel_size), ("stride", module.stride), ("padding", module.padding),
                 ("dilation", module.dilation), ("groups", module.groups), ("bias", module.bias is not None))
        layers[name] = _Layer(type(module).__name__, attrs, module.in_channels, module.out_channels,
                              depthwise, writes, 1, shapes[name])
    return tuple(layers[n] for n in sorted(layers))


def rounded_width(size: int, exact: int, multiple: int) -> int:
    """``exact`` rounded up to ``multiple``, at most ``size``."""
    return min(size, math.ceil(exact / multiple) * multiple)
