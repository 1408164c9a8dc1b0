"""Wall-clock latency of one forward pass, in PyTorch eager or ONNX Runtime, with its spread.

Protocol: fixed thread count, warm-up calls first, then each call timed on its own with
``time.perf_counter`` (one garbage collection before, the collector left on). Unless ``repeats``
is given, calls continue until they add up to ``min_time_s``, within [MIN_REPEATS, MAX_REPEATS]
calls: a tiny model gets many repeats, ResNet-50 at batch 64 a few. Median and p10-p90 are reported, not the minimum.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._checks import positional_inputs
from prunekit.errors import ConfigError, require
from prunekit.measure.fuse import fold_batchnorm
from prunekit._modes import eval_mode
from prunekit.measure.macs import ExampleInput, _forward_inputs, as_inputs, batch_of, find_batch

__all__ = ["LatencyStats", "measure_latency", "measure_latencies", "measure_onnx_latencies",
           "interleaved_onnx_latencies", "ort_session", "ort_options", "ort_feed",
           "PairedLatency", "paired_latency", "interleaved", "LatencyControl", "aa_control", "aa_controls", "format_ms",
           "BACKENDS", "DEFAULT_BACKENDS", "MIN_REPEATS", "MAX_REPEATS", "NOISY", "exports_reused",
           "exports_kept"]

BACKENDS = ("torch", "torch-fused", "onnxruntime")
DEFAULT_BACKENDS = ("torch", "onnxruntime")  # NOTE: what a profile measures unless asked for more
MIN_REPEATS = 5
MAX_REPEATS = 200


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one forward pass at ``batch_size``, in milliseconds, over ``repeats`` calls
    (``samples_ms``: each call's time, in the order timed)."""

    backend: str
    batch_size: int
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    # NOTE: every timed call in milliseconds (rounded to 0.1 us), kept for box plots in the report.
    samples_ms: tuple[float, ...] = ()


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on sorted data."""
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _summarise(times_s: list[float], backend: str, batch_size: int, threads: int) -> LatencyStats:
    raw = tuple(round(t * 1000.0, 4) for t in times_s)
    ms = sorted(t * 1000.0 for t in times_s)
    return LatencyStats(
        backend=backend, batch_size=batch_size, threads=threads,
        median_ms=statistics.median(ms), p10_ms=_percentile(ms, 0.1), p90_ms=_percentile(ms, 0.9),
        mean_ms=statistics.fmean(ms), std_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0,
        repeats=len(ms), samples_ms=raw)


@dataclass(frozen=True)
class _Timing:
    warmup: int
    repeats: int | None
    min_time_s: float

    def done(self, times: list[float]) -> bool:
        if self.repeats is not None:
            return len(times) >= self.repeats
        return len(times) >= MAX_REPEATS or (
            len(times) >= MIN_REPEATS and sum(times) >= self.min_time_s)


def _time_calls(call: Callable[[], object], timing: _Timing) -> list[float]:
    """Seconds per call of ``call`` after the warm-up calls (protocol in the module docstring)."""
    for _ in range(timing.warmup):
        call()
    # NOTE: the collector stays on (other threads and the model's own code run meanwhile); one
    # collection of the young generations first clears the warm-up's garbage, and the median ignores a
    # rare collection. A full collection walks every object of the process: 0.16 s with transformers
    # and matplotlib loaded, 2.6 s of a 22 s `prunekit prune` run that timed 14 times (by hand).
    gc.collect(1)
    times: list[float] = []
    while not timing.done(times):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _check(backend: str, batch_sizes: Sequence[int], threads: int, warmup: int,
           repeats: int | None, min_time_s: float) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"Latency backend must be one of {', '.join(BACKENDS)}; got "
                          f"'{backend}'. Pass backend='torch', 'torch-fused' or 'onnxruntime'.")
    for name, value, low in [("threads", threads, 1), ("warmup", warmup, 0),
                             *[("batch_size", b, 1) for b in batch_sizes],
                             *([("repeats", repeats, 1)] if repeats is not None else [])]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"Latency: '{name}' must be an integer >= {low}; got {value!r}. "
                              f"Pass e.g. {name}={max(low, 1)}.")
    if not batch_sizes:
        raise ConfigError("Latency: batch_sizes is empty. Pass at least one, e.g. (1, 64).")
    if not min_time_s >= 0:
        raise ConfigError(f"Latency: 'min_time_s' must be >= 0 seconds; got {min_time_s!r}.")


def _inputs_for(model: nn.Module, backend: str, example_inputs: ExampleInput, where: str) -> tuple[Any, ...]:
    """The positional inputs (a dict keyed by ``forward``'s parameters passed by name): tensors for
    ONNX Runtime (:func:`_onnx_args`); for PyTorch also dicts, lists and tuples of tensors
    (``macs.as_args``); for either None for a parameter left at its default."""
    example_inputs = positional_inputs(model, example_inputs, where)
    return _onnx_args(example_inputs) if backend == "onnxruntime" else _forward_inputs(example_inputs)


def _onnx_args(example_inputs: Any) -> tuple[torch.Tensor | None, ...]:
    """The positional inputs as ONNX takes them: tensors, and None for a parameter of ``forward`` left at
    its default before a later input (GPT-2's ``past_key_values`` between ``input_ids`` and
    ``attention_mask``), which the exported graph fills in (:func:`_without_gaps`). Anything else is
    refused in one line (:func:`~prunekit.measure.macs.as_inputs`)."""
    if isinstance(example_inputs, Mapping) or not isinstance(example_inputs, (tuple, list)):
        return as_inputs(example_inputs)
    given = tuple(x for x in example_inputs if x is not None)
    as_inputs(given or tuple(example_inputs))
    return tuple(example_inputs)


def _without_gaps(model: nn.Module, args: tuple[torch.Tensor | None, ...]) -> nn.Module:
    """``model`` as a module taking only the tensors of ``args``, which calls it with None in the gaps:
    ONNX inputs are tensors, so a parameter left at its default cannot be one of the graph's inputs."""
    if all(x is not None for x in args):
        return model
    slots = tuple(x is not None for x in args)

    def forward(self: nn.Module, *tensors: torch.Tensor) -> Any:
        given = iter(tensors)
        return model(*(next(given) if slot else None for slot in slots))

    # NOTE: one named parameter per tensor: torch.export matches dynamic_shapes to forward's signature,
    # and a bare *tensors would take them nested (((dims, dims),)), not as export_onnx gives them
    parameter = inspect.Parameter
    forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [parameter("self", parameter.POSITIONAL_ONLY)]
        + [parameter(f"input_{i}", parameter.POSITIONAL_ONLY) for i in range(sum(slots))])
    wrapper = type(type(model).__name__, (nn.Module,), {"forward": forward})()  # NOTE: errors name the model
    wrapper.model = model  # NOTE: a submodule, so that export sees its weights and sets its mode
    return wrapper


def _batch_for(model: nn.Module, inputs: tuple[Any, ...], batch_sizes: Sequence[int], where: str) -> int | None:
    """The example's batch size along dim 0 to re-batch ``inputs`` from (:func:`~prunekit.measure.macs.batch_of`):
    verified on ``model`` (:func:`~prunekit.measure.macs.find_batch`) unless every size asked for is the
    one all the input tensors already have (the example is timed as given). A ConfigError where the
    example cannot be re-batched along dim 0 (a sequence-first RNN's dim 0 is time)."""
    from torch.utils._pytree import tree_flatten

    own = {x.shape[0] for x in tree_flatten(inputs)[0] if isinstance(x, torch.Tensor) and x.dim()}
    if len(own) <= 1 and set(batch_sizes) <= (own or {1}):
        return next(iter(own), None)
    found = find_batch(model, inputs)
    if found.size is None:
        asked = next(size for size in batch_sizes if size not in own)
        given = f" batch_size={min(own)} to time the example as given," if len(own) == 1 else ""
        raise ConfigError(f"{where}: cannot time batch {asked}: example_inputs cannot be re-batched along dim 0 "
                          f"({found.reason}). Pass inputs with the batch on dim 0 (e.g. nn.GRU(batch_first=True)),"
                          f"{given} or an example of the batch size you want.")
    return found.size


def _sync_for(inputs: tuple[Any, ...]) -> Callable[[], None]:
    from torch.utils._pytree import tree_flatten

    if any(isinstance(x, torch.Tensor) and x.is_cuda for x in tree_flatten(inputs)[0]):
        return torch.cuda.synchronize
    return lambda: None


def _torch_latencies(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                     batch_sizes: Sequence[int], threads: int,
                     timing: _Timing, backend: str = "torch", batch: int | None = None) -> tuple[LatencyStats, ...]:
    if backend == "torch-fused":
        model = fold_batchnorm(model).model  # NOTE: a copy; the folding is not timed.
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    sync, results = _sync_for(inputs), []
    try:
        with eval_mode(model), torch.inference_mode():
            for size in batch_sizes:
                rows = batch_of(inputs, size, batch)

                def call(rows: tuple[torch.Tensor, ...] = rows) -> None:
                    model(*rows)
                    sync()

                results.append(_summarise(_time_calls(call, timing), backend, size, threads))
    finally:
        torch.set_num_threads(old_threads)
    return tuple(results)


def ort_session(file: str | os.PathLike[str] | bytes, threads: int) -> Any:
    """An ONNX Runtime session of an ONNX file, or of a serialised ONNX model's bytes (CPU, sequential, all
    graph optimisations): the one set of session options every timing and every int8 evaluation runs with."""
    ort = require("onnxruntime", extra="onnx", feature="ONNX Runtime latency")
    model = file if isinstance(file, bytes) else str(file)
    return ort.InferenceSession(model, ort_options(threads), providers=["CPUExecutionProvider"])


def ort_options(threads: int) -> Any:
    """The ONNX Runtime session options of :func:`ort_session` (CPU, sequential, all graph optimisations)."""
    ort = require("onnxruntime", extra="onnx", feature="ONNX Runtime latency")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # NOTE: errors only; ORT warns about unused initialisers.
    return options


# NOTE: the ONNX exports kept while exports_reused() is open (None outside): the key says which model
# in which state on which inputs; the value holds the model too, so that its id cannot be reused.
_EXPORTS: ContextVar[dict[Any, tuple[nn.Module, bytes]] | None] = ContextVar("prunekit_onnx_exports", default=None)
# NOTE: only exports made inside exports_kept() are kept (a profile's), so the many candidates a
# search or a rounding choice times are not all held until the workflow ends.
_KEEPING: ContextVar[bool] = ContextVar("prunekit_onnx_keeping", default=False)


@contextlib.contextmanager
def exports_reused() -> Iterator[None]:
    """Within the block, a model timed under ONNX Runtime more than once (its profile, then the A/A
    control of a before/after table) is exported once: a later timing of the same, unchanged model
    on inputs of the same shapes reuses the file a profile made (:func:`exports_kept`). An export
    takes seconds: a prune run's four took 14 s of 20 on a small CNN. A parameter or buffer changed
    in place, replaced or added since means a new export."""
    token = _EXPORTS.set({})
    try:
        yield
    finally:
        _EXPORTS.reset(token)


@contextlib.contextmanager
def exports_kept() -> Iterator[None]:
    """Inside :func:`exports_reused`, keep the exports made in this block (a profile's) for reuse."""
    token = _KEEPING.set(True)
    try:
        yield
    finally:
        _KEEPING.reset(token)


def _export_key(model: nn.Module, inputs: tuple[torch.Tensor | None, ...]) -> tuple[Any, ...]:
    state = tuple((name, id(t), t._version, tuple(t.shape), t.dtype)
                  for name, t in model.state_dict(keep_vars=True).items())
    return id(model), state, tuple(None if x is None else (tuple(x.shape), x.dtype) for x in inputs)


def _tensors(inputs: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor, ...]:
    """The inputs an ONNX session takes: ``inputs`` without the gaps (:func:`_without_gaps`)."""
    return tuple(x for x in inputs if x is not None)


def _ort_session(model: nn.Module, inputs: tuple[torch.Tensor | None, ...], threads: int) -> Any:
    """An ONNX Runtime session of ``model``, exported to a temporary file (or reused, see
    :func:`exports_reused`); its inputs are the tensors of ``inputs`` (:func:`_tensors`)."""
    require("onnxruntime", extra="onnx", feature="ONNX Runtime latency")
    from prunekit.measure.onnx import export_onnx

    kept = _EXPORTS.get()
    key = _export_key(model, inputs) if kept is not None else None
    if kept is not None and key in kept:
        return ort_session(kept[key][1], threads)
    with tempfile.TemporaryDirectory(prefix="prunekit-latency-") as tmp:
        file = export_onnx(_without_gaps(model, inputs), _tensors(inputs), Path(tmp) / "model.onnx",
                           dynamic_batch=True)
        if kept is not None and _KEEPING.get() and len(list(Path(tmp).iterdir())) == 1:  # NOTE: one file
            kept[key] = (model, file.read_bytes())
        return ort_session(file, threads)


def ort_feed(session: Any, inputs: tuple[torch.Tensor, ...], size: int, batch: int | None = None) -> dict[str, Any]:
    """``{input name: array}`` for an ONNX Runtime session: ``inputs`` repeated to batch ``size``
    (:func:`~prunekit.measure.macs.batch_of`, from the example's batch size ``batch``)."""
    names = [i.name for i in session.get_inputs()]
    return {n: x.detach().cpu().numpy() for n, x in zip(names, batch_of(inputs, size, batch))}


def _session_latencies(session: Any, inputs: tuple[torch.Tensor, ...], batch_sizes: Sequence[int],
                       threads: int, timing: _Timing, batch: int | None = None) -> tuple[LatencyStats, ...]:
    results = []
    for size in batch_sizes:
        feed = ort_feed(session, inputs, size, batch)
        times = _time_calls(lambda feed=feed: session.run(None, feed), timing)  # type: ignore[misc]
        results.append(_summarise(times, "onnxruntime", size, threads))
    return tuple(results)


def _onnxruntime_latencies(model: nn.Module, inputs: tuple[torch.Tensor | None, ...],
                           batch_sizes: Sequence[int], threads: int,
                           timing: _Timing, batch: int | None) -> tuple[LatencyStats, ...]:
    session = _ort_session(model, inputs, threads)
    return _session_latencies(session, _tensors(inputs), batch_sizes, threads, timing, batch)


def _onnx_file_latencies(file: Path | bytes, inputs: tuple[torch.Tensor, ...], batch_sizes: Sequence[int],
                         threads: int, timing: _Timing) -> tuple[LatencyStats, ...]:
    return _session_latencies(ort_session(file, threads), inputs, batch_sizes, threads, timing)


def measure_onnx_latencies(path: str | Path | bytes, example_inputs: ExampleInput, *,
                           batch_sizes: Sequence[int] = (1,), threads: int = 2, warmup: int = 3,
                           repeats: int | None = None, min_time_s: float = 1.0) -> tuple[LatencyStats, ...]:
    """ONNX Runtime latency of an ONNX file (e.g. an int8 one), or of a serialised ONNX model's bytes (e.g.
    :func:`~prunekit.measure.onnx_layers.layer_onnx`'s), with :func:`measure_latency`'s protocol."""
    _check("onnxruntime", batch_sizes, threads, warmup, repeats, min_time_s)
    timing = _Timing(warmup=warmup, repeats=repeats, min_time_s=min_time_s)
    model = path if isinstance(path, bytes) else Path(path)
    return _onnx_file_latencies(model, as_inputs(example_inputs), tuple(batch_sizes), threads, timing)


def interleaved_onnx_latencies(paths: Mapping[str, str | os.PathLike[str]], example_inputs: ExampleInput, *,
                               batch_sizes: Sequence[int] = (1,), threads: int = 2, rounds: int = 5,
                               warmup: int = 3, min_time_s: float = 1.0) -> dict[str, tuple[LatencyStats, ...]]:
    """:func:`measure_onnx_latencies` of several ONNX files (name -> path) in interleaved rounds: each
    round times every file in turn for ``min_time_s / rounds`` (after ``warmup`` calls) at each batch
    size, so a slow spell of a shared machine hits every file alike instead of whichever was timed
    then; each file's statistics pool its calls over the rounds. One session per file, built once."""
    _check("onnxruntime", batch_sizes, threads, warmup, None, min_time_s)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"Latency: 'rounds' must be an integer >= 1; got {rounds!r}. Pass e.g. rounds=5.")
    inputs = as_inputs(example_inputs)
    sessions = {name: ort_session(Path(path), threads) for name, path in paths.items()}
    timing = _Timing(warmup=warmup, repeats=None, min_time_s=min_time_s / rounds)
    stats: dict[str, list[LatencyStats]] = {name: [] for name in sessions}
    for size in batch_sizes:
        feeds = {name: ort_feed(session, inputs, size) for name, session in sessions.items()}
        calls: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(rounds):
            for name, session in sessions.items():
                calls[name] += _time_calls(lambda s=session, f=feeds[name]: s.run(None, f), timing)  # type: ignore[misc]
        for name in sessions:
            stats[name].append(_summarise(calls[name], "onnxruntime", size, threads))
    return {name: tuple(values) for name, values in stats.items()}


def measure_latencies(model: nn.Module, example_inputs: ExampleInput, *, backend: str = "torch",
                      batch_sizes: Sequence[int] = (1,), threads: int = 2, warmup: int = 3,
                      repeats: int | None = None, min_time_s: float = 1.0) -> tuple[LatencyStats, ...]:
    """:func:`measure_latency` at several batch sizes; onnxruntime exports the model only once."""
    return _latencies(model, example_inputs, None, backend=backend, batch_sizes=batch_sizes, threads=threads,
                      warmup=warmup, repeats=repeats, min_time_s=min_time_s, where="measure_latency")


def _latencies(model: nn.Module, example_inputs: ExampleInput, batch: int | None, *, backend: str,
               batch_sizes: Sequence[int], threads: int, warmup: int, repeats: int | None, min_time_s: float,
               where: str) -> tuple[LatencyStats, ...]:
    """:func:`measure_latencies`, re-batching from the example's batch size ``batch`` along dim 0 where
    the caller has verified it (a profile, :func:`~prunekit.measure.macs.find_batch`); None: found here."""
    _check(backend, batch_sizes, threads, warmup, repeats, min_time_s)
    inputs = _inputs_for(model, backend, example_inputs, where)
    if batch is None:
        batch = _batch_for(model, inputs, batch_sizes, where)
    timing = _Timing(warmup=warmup, repeats=repeats, min_time_s=min_time_s)
    if backend == "onnxruntime":
        return _onnxruntime_latencies(model, inputs, tuple(batch_sizes), threads, timing, batch)
    return _torch_latencies(model, inputs, tuple(batch_sizes), threads, timing, backend, batch)


def measure_latency(model: nn.Module, example_inputs: ExampleInput, *, backend: str = "torch",
                    batch_size: int = 1, threads: int = 2, warmup: int = 3,
                    repeats: int | None = None, min_time_s: float = 1.0) -> LatencyStats:
    """Latency of ``model`` on ``example_inputs`` tiled along dim 0 to ``batch_size`` rows.

    An input whose dim 0 is not the example's batch size (a (T, T) attention mask shared by the
    batch) is passed unchanged. Re-batching is verified first (the model at batch 2 gives each
    sample's outputs at batch 1, :func:`~prunekit.measure.macs.find_batch`): a ConfigError where it
    fails (a sequence-first RNN, whose dim 0 is time); a ``batch_size`` equal to the example's own
    times it as given.

    backend: "torch" (eager, ``inference_mode``), "torch-fused" (the same after folding every
    Conv/Linear -> BatchNorm pair, :func:`prunekit.measure.fuse.fold_batchnorm`: the deployed form,
    as ONNX Runtime folds at load) or "onnxruntime" (exported with :func:`export_onnx`, CPU,
    sequential, all graph optimisations; a parameter left at its default between the inputs, such as
    GPT-2's ``past_key_values``, is no input of the graph). ``threads`` is the intra-op
    thread count for either; torch's own setting is restored afterwards. ``repeats`` None means
    adaptive (module docstring). The model's train/eval mode and weights are unchanged. A dict whose
    keys name ``forward``'s parameters is passed by name; any other dict is one input (PyTorch only).

    On Linux CPUs, glibc's default malloc may hand large tensors (above 32 MB: a ResNet-50's
    activations at batch 16) out by mmap and page-fault them in again on every call, so a wide
    model's eager time depends on the allocator: run under ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0``
    (or jemalloc/tcmalloc) to time it as a long-running server would (``benchmarks/speed.py`` does).
    """
    return measure_latencies(model, example_inputs, backend=backend, batch_sizes=(batch_size,),
                             threads=threads, warmup=warmup, repeats=repeats,
                             min_time_s=min_time_s)[0]


@dataclass(frozen=True)
class PairedLatency:
    """One model's latency from rounds interleaved with a reference model's.

    ``ratio`` is the median over rounds of (this model / the reference in the same round), and
    ``median_ms`` the reference's median times that ratio; ``round_ms`` holds every round's reading.
    """

    median_ms: float
    ratio: float
    round_ms: tuple[float, ...]


def interleaved(models: Mapping[str, nn.Module], measure: Callable[[nn.Module], float], *,
                reference: str, rounds: int = 3) -> dict[str, PairedLatency]:
    """Measure every model once per round, ``rounds`` times, with any ``measure`` (ms).

    Slowdowns that hit a whole round cancel out in the per-round ratio, and a single disturbed
    reading does not decide the result (the median over rounds does).
    """
    if reference not in models:
        raise ConfigError(f"paired_latency: reference '{reference}' is not one of the models "
                          f"{sorted(models)}. Name the model the others are compared with.")
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"paired_latency: rounds must be an int >= 1; got {rounds!r}. Use e.g. 3.")
    readings: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            readings[name].append(float(measure(model)))
    ref = readings[reference]
    base = statistics.median(ref)
    result = {}
    for name, values in readings.items():
        ratio = statistics.median(v / r for v, r in zip(values, ref, strict=True))
        result[name] = PairedLatency(median_ms=base * ratio, ratio=ratio, round_ms=tuple(values))
    return result


def paired_latency(models: Mapping[str, nn.Module], example_inputs: ExampleInput, *, reference: str,
                   rounds: int = 3, backend: str = "torch", batch_size: int = 1, threads: int = 2,
                   min_time_s: float = 1.0) -> dict[str, PairedLatency]:
    """:func:`measure_latency` of several models in interleaved rounds, each relative to ``reference``
    (see :func:`interleaved`): how much faster a pruned model is than its dense original."""
    def measure(model: nn.Module) -> float:
        return measure_latency(model, example_inputs, backend=backend, batch_size=batch_size,
                               threads=threads, min_time_s=min_time_s).median_ms

    return interleaved(models, measure, reference=reference, rounds=rounds)


NOISY = 0.10  # an A/A spread above this (10 %) means the machine is too busy for latency ratios


@dataclass(frozen=True)
class LatencyControl:
    """How much faster ``after`` is than ``before`` at one backend and batch size, with the noise
    band measured in the same run: the dense model timed twice (A and A'), interleaved with the
    other, in ``rounds`` rounds.

    ``ratio`` is the median over rounds of before / after (2.0: twice as fast); ``noise`` the
    largest relative A/A difference over the rounds (0.05: identical models differed by up to 5 %);
    ``before_ms`` and ``after_ms`` the medians in those same rounds, the times the ratio is made of
    (a profile's own medians were timed at another moment and may disagree with it on a busy machine).
    """

    backend: str
    batch_size: int
    threads: int
    ratio: float
    noise: float
    rounds: int
    before_ms: float | None = None
    after_ms: float | None = None

    @property
    def within_noise(self) -> bool:
        """True when the change is no larger than the same model's difference from itself."""
        return abs(math.log(self.ratio)) <= math.log1p(self.noise) if self.ratio > 0 else True

    @property
    def noisy(self) -> bool:
        """True when the A/A spread says the machine is too busy for a latency ratio."""
        return self.noise > NOISY

    def describe(self) -> str:
        """"1.85x faster (A/A ±3 %)", or "within noise (A/A ±12 %)"; with the interleaved medians
        when known: "1.85x faster: 0.52 -> 0.28 ms in the same rounds (A/A ±3 %)"."""
        band = f"(A/A ±{100 * self.noise:.0f} %)"
        if self.before_ms is not None and self.after_ms is not None:
            band = f": {format_ms(self.before_ms)} -> {format_ms(self.after_ms)} ms in the same rounds {band}"
        else:
            band = f" {band}"
        if self.within_noise:
            return f"within noise{band}"
        words = f"{self.ratio:.2f}x faster" if self.ratio > 1 else f"{1 / self.ratio:.2f}x slower"
        return f"{words}{band}"


def format_ms(ms: float) -> str:
    """Milliseconds as tables print them: 0.076, 5.25, 12.3, 148."""
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _reader(backend: str, inputs: tuple[Any, ...], batch_size: int, threads: int,
            timing: _Timing, batch: int | None = None) -> Callable[[nn.Module], float]:
    """Median ms of one reading of a model; ONNX sessions are built once per model."""
    sessions: dict[int, Any] = {}

    def read(model: nn.Module) -> float:
        if backend != "onnxruntime":
            return _torch_latencies(model, inputs, (batch_size,), threads, timing, backend, batch)[0].median_ms
        if id(model) not in sessions:
            sessions[id(model)] = _ort_session(model, inputs, threads)
        session = sessions[id(model)]
        feed = ort_feed(session, _tensors(inputs), batch_size, batch)
        times = _time_calls(lambda: session.run(None, feed), timing)
        return _summarise(times, backend, batch_size, threads).median_ms

    return read


def aa_control(before: nn.Module, after: nn.Module, example_inputs: ExampleInput, *, backend: str = "torch",
               batch_size: int = 1, threads: int = 2, rounds: int = 4, min_time_s: float = 0.1,
               warmup: int = 2) -> LatencyControl:
    """Time ``before`` twice and ``after`` once per round, interleaved, for ``rounds`` rounds: the
    after/before ratio and, from before's two readings, the noise band it must clear."""
    _check(backend, (batch_size,), threads, warmup, None, min_time_s)
    timing = _Timing(warmup=warmup, repeats=None, min_time_s=min_time_s)
    inputs = _inputs_for(before, backend, example_inputs, "aa_control")
    batch = _batch_for(before, inputs, (batch_size,), "aa_control")
    read = _reader(backend, inputs, batch_size, threads, timing, batch)
    paired = interleaved({"A": before, "B": after, "A2": before}, read, reference="A", rounds=rounds)
    aa = [a2 / a for a, a2 in zip(paired["A"].round_ms, paired["A2"].round_ms, strict=True)]
    noise = max(abs(r - 1) for r in aa) if aa else 0.0
    return LatencyControl(backend=backend, batch_size=batch_size, threads=threads,
                          ratio=1.0 / paired["B"].ratio, noise=noise, rounds=rounds,
                          before_ms=paired["A"].median_ms, after_ms=paired["B"].median_ms)


def aa_controls(before: nn.Module, after: nn.Module, example_inputs: ExampleInput, *,
                backends: Sequence[str] = ("torch",), batch_sizes: Sequence[int] = (1,), threads: int = 2,
                rounds: int = 4, min_time_s: float = 0.1) -> tuple[LatencyControl, ...]:
    """:func:`aa_control` for every backend and batch size (what a before/after table compares)."""
    return tuple(aa_control(before, after, example_inputs, backend=backend, batch_size=size, threads=threads,
                            rounds=rounds, min_time_s=min_time_s)
                 for backend in backends for size in batch_sizes)
