"""One model's numbers in one frozen record, and the side-by-side table every command prints.

``profile`` measures params, MACs (per sample), safetensors size, latency per backend and batch
size, and accuracy/loss when a dataset is given. ``compare`` renders profiles as columns, with a
"first/last" column (e.g. "2.03x smaller") when there are two or more; latency ratios only with an
A/A control measured in the same run ("1.80x faster (A/A ±3 %)", or "within noise").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit._checks import positional_inputs
from prunekit.errors import ConfigError, DataError
from prunekit.measure.accuracy import evaluate
from prunekit.measure.latency import (
    BACKENDS,
    DEFAULT_BACKENDS,
    LatencyControl,
    LatencyStats,
    _latencies,
    _onnx_args,
    format_ms,
)
from prunekit.measure.macs import ExampleInput, _forward_inputs, batch_of, count_macs, find_batch, leading_size
from prunekit.measure.params import count_params
from prunekit.measure.size import size_on_disk

__all__ = ["Profile", "profile", "compare", "compare_markdown"]

_FORMAT_VERSION = 1
# NOTE: task metrics that are fractions in [0, 1], shown as percentages like accuracy.
_FRACTIONS = frozenset({"top5"})


@dataclass(frozen=True)
class Profile:
    """What ``profile`` measured. ``macs`` is per sample; ``size_bytes`` is the safetensors file.

    ``accuracy`` (in [0, 1]) and ``loss`` are None without a dataset; ``metrics`` holds the task's
    other numbers (``perplexity`` of a language model, ``top5``, ``cosine``...); ``notes`` says what
    could not be measured and why (e.g. an ONNX export failure), so one failure does not lose the rest.
    """

    name: str
    params: int
    macs: int
    size_bytes: int
    latency: tuple[LatencyStats, ...] = ()
    accuracy: float | None = None
    loss: float | None = None
    input_shape: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples); :meth:`from_dict` reads it back."""
        data = asdict(self)
        data["latency"] = [asdict(stats) | {"samples_ms": list(stats.samples_ms)} for stats in self.latency]
        data["input_shape"] = list(self.input_shape)
        data["notes"] = list(self.notes)
        return {"version": _FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict` output (e.g. a results.json entry)."""
        required = [f.name for f in fields(cls) if f.name not in ("latency", "accuracy", "loss",
                                                                   "input_shape", "notes", "metrics")]
        missing = [key for key in required if key not in data]
        if missing:
            raise DataError(f"Profile record lacks {missing}; got keys {sorted(data)}. Use a dict "
                            f"written by Profile.to_dict().")
        try:
            latency = tuple(LatencyStats(**{**stats, "samples_ms": tuple(stats.get("samples_ms", ()))})
                            for stats in data.get("latency", ()))
        except TypeError as exc:
            raise DataError(f"Profile record '{data['name']}' has a malformed latency entry "
                            f"({exc}). Use a dict written by Profile.to_dict().") from exc
        return cls(name=str(data["name"]), params=int(data["params"]), macs=int(data["macs"]),
                   size_bytes=int(data["size_bytes"]), latency=latency,
                   accuracy=data.get("accuracy"), loss=data.get("loss"),
                   input_shape=tuple(data.get("input_shape", ())),
                   notes=tuple(data.get("notes", ())), metrics=dict(data.get("metrics") or {}))

    def latency_for(self, backend: str, batch_size: int) -> LatencyStats | None:
        """The latency entry for ``backend`` at ``batch_size``, or None if not measured."""
        return next((s for s in self.latency
                     if s.backend == backend and s.batch_size == batch_size), None)


def profile(model: nn.Module, example_inputs: ExampleInput, *, name: str = "model",
            batch_sizes: Sequence[int] = (1, 64), threads: int = 2,
            backends: Sequence[str] = DEFAULT_BACKENDS, dataset: TensorDataset | Iterable[Any] | None = None,
            task: Any = None, max_batches: int | None = None, warmup: int = 3, repeats: int | None = None,
            min_time_s: float = 1.0, progress: Callable[[str], None] | None = None) -> Profile:
    """Measure ``model`` on ``example_inputs`` (batch 1 is enough; it is tiled for larger batches).

    The batch is dim 0, verified on the model first (:func:`~prunekit.measure.macs.find_batch`); an
    input whose dim 0 differs (a shared attention mask) is passed unchanged. Where the example cannot
    be re-batched (a sequence-first RNN, whose dim 0 is time), MACs and latency are those of the
    example as given (latency labelled with its dim 0), and a note says so.

    Latency uses :func:`measure_latency`'s protocol for each backend x batch size (add
    "torch-fused" for the BatchNorm-folded deployed form). An
    onnxruntime failure is recorded in ``notes`` and the other numbers are kept. ``progress`` is
    called with a short message before each step. ``dataset`` (a TensorDataset or any iterable of
    batches) is scored by ``task`` (a Task or name; default classification), on at most
    ``max_batches`` batches. The model is not changed. A dict whose keys name ``forward``'s
    parameters is passed by name; any other dict is one input, which ONNX cannot take (noted).
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"profile: backends must be among {', '.join(BACKENDS)}; got "
                          f"{unknown}. Pass e.g. backends=('torch',).")
    step = progress or (lambda message: None)
    inputs = _forward_inputs(positional_inputs(model, example_inputs, "profile"))
    notes = [note] if backends and (note := _busy_machine_note()) else []
    step("finding the batch dimension")
    found = find_batch(model, inputs)
    if found.size is not None:
        batch, sample = found.size, batch_of(inputs, 1, found.size)
    else:  # NOTE: re-batching would change what the example means: measure it as it is
        batch, sample = leading_size(inputs) or 1, inputs
        batch_sizes = (batch,)
        notes.append(_not_rebatched_note(found.reason, _first_shape(inputs), batch))
    step("counting parameters and MACs")
    params, macs = count_params(model), count_macs(model, sample)
    step("measuring size on disk")
    size = size_on_disk(model)
    latency: list[LatencyStats] = []
    if "onnxruntime" in backends:
        try:
            _onnx_args(sample)
        except ConfigError as exc:  # NOTE: a batch dict: PyTorch runs it, ONNX cannot take it
            backends = tuple(b for b in backends if b != "onnxruntime")
            notes.append(f"onnxruntime latency not measured: {exc}")
    for backend in backends:
        step(f"measuring {backend} latency at batch sizes {', '.join(map(str, batch_sizes))}")
        try:
            latency += _latencies(model, inputs, batch, backend=backend, batch_sizes=batch_sizes,
                                  threads=threads, warmup=warmup, repeats=repeats, min_time_s=min_time_s,
                                  where="profile")
        except Exception as exc:  # NOTE: ORT and the exporter raise many types; torch must work.
            if backend == "torch" or isinstance(exc, ConfigError):
                raise
            notes.append(f"{backend} latency not measured: {' '.join(str(exc).split())[:400]}")
    accuracy = loss = None
    extra: dict[str, float] = {}
    if dataset is not None:
        step("evaluating the task's metric")
        metrics = evaluate(model, dataset, task=task, max_batches=max_batches)
        accuracy, loss = metrics.get("accuracy"), metrics.get("loss")
        extra = {k: float(v) for k, v in metrics.items() if k not in ("accuracy", "loss", "count")}
    return Profile(name=name, params=params, macs=macs, size_bytes=size, latency=tuple(latency),
                   accuracy=accuracy, loss=loss, input_shape=_first_shape(sample),
                   notes=tuple(notes), metrics=extra)


def _first_shape(inputs: tuple[Any, ...]) -> tuple[int, ...]:
    """The shape of the first tensor among ``inputs`` (also inside a dict, list or tuple input)."""
    from torch.utils._pytree import tree_flatten

    return next((tuple(x.shape) for x in tree_flatten(inputs)[0] if isinstance(x, torch.Tensor)), ())


def _not_rebatched_note(reason: str, shape: tuple[int, ...], batch: int) -> str:
    """What a profile measured where the example's batch dimension could not be established, and how to fix it."""
    shown = "x".join(map(str, shape)) or "-"
    return (f"batch dimension not established ({reason}): MACs and latency are of the example as given "
            f"(input {shown}, latency labelled batch {batch}), not per sample, and other batch sizes were not "
            f"measured; pass inputs with the batch on dim 0 (e.g. nn.GRU(batch_first=True)) to measure them")


def _busy_machine_note() -> str | None:
    """A warning when other work competes for the cores, so noisy latency is not taken at face value."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # NOTE: not available on Windows
        return None
    cores = os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"machine busy when latency was measured (1-min load average {load:.1f} on {cores} "
            f"cores): latency is noisy; re-measure on an idle machine")


# ---- rendering -------------------------------------------------------------------------------

def format_count(n: float) -> str:
    """12345678 -> "12.35 M": a count with a G/M/K suffix, as the tables print it."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _ratio(first: float, last: float, fewer: str, more: str) -> str:
    """How many times ``last`` is below ``first``, in words ("2.03x smaller", "1.10x larger")."""
    if first <= 0 or last <= 0:
        return "-"
    ratio = first / last
    if abs(ratio - 1) < 0.005:
        return "same"
    return f"{ratio:.2f}x {fewer}" if ratio > 1 else f"{1 / ratio:.2f}x {more}"


def _latency_keys(profiles: Sequence[Profile]) -> list[tuple[str, int, int]]:
    keys: list[tuple[str, int, int]] = []
    for p in profiles:
        keys += [k for k in ((s.backend, s.batch_size, s.threads) for s in p.latency) if k not in keys]
    return sorted(keys, key=lambda k: (BACKENDS.index(k[0]) if k[0] in BACKENDS else 99, k[1], k[2]))


def _latency_rows(profiles: Sequence[Profile], controls: Sequence[LatencyControl]) -> list[list[str]]:
    """One row per backend x batch size; the first/last ratio only where an A/A control measured it
    (the profiles themselves were timed minutes apart, so their ratio mixes in the machine's drift)."""
    keys = _latency_keys(profiles)
    measured = {(c.backend, c.batch_size, c.threads): c for c in controls}
    show_threads = len({k[2] for k in keys}) > 1
    rows = []
    for backend, batch, threads in keys:
        found = [next((s for s in p.latency if (s.backend, s.batch_size, s.threads)
                       == (backend, batch, threads)), None) for p in profiles]
        cells = ["-" if s is None else f"{format_ms(s.median_ms)} ms ({format_ms(s.p10_ms)}-{format_ms(s.p90_ms)})"
                 for s in found]
        label = f"{backend} batch {batch}" + (f", {threads} threads" if show_threads else "")
        control = measured.get((backend, batch, threads))
        rows.append([label, *cells, control.describe() if control is not None else "-"])
    return rows


def _metric_row(label: str, values: list[float | None], render: Callable[[float], str],
                change: Callable[[float, float], str]) -> list[str]:
    cells = ["-" if v is None else render(v) for v in values]
    first, last = values[0], values[-1]
    return [label, *cells, "-" if first is None or last is None else change(first, last)]


def _rows(profiles: Sequence[Profile],
          controls: Sequence[LatencyControl] = ()) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body rows (label, one cell per profile, first/last) and footnotes."""
    if not profiles:
        raise ConfigError("compare() needs at least one Profile; got none. Pass profile(...) results.")
    rows = [
        ["input", *["x".join(map(str, p.input_shape)) or "-" for p in profiles], ""],
        _metric_row("params", [p.params for p in profiles], format_count,
                    lambda a, b: _ratio(a, b, "smaller", "larger")),
        _metric_row("MACs / sample", [p.macs for p in profiles], format_count,
                    lambda a, b: _ratio(a, b, "fewer", "more")),
        _metric_row("size (safetensors)", [p.size_bytes for p in profiles], _bytes,
                    lambda a, b: _ratio(a, b, "smaller", "larger")),
        *_latency_rows(profiles, controls),
    ]
    if any(p.accuracy is not None for p in profiles):
        rows.append(_metric_row("accuracy", [p.accuracy for p in profiles],
                                lambda a: f"{100 * a:.2f} %", lambda a, b: f"{100 * (b - a):+.2f} pp"))
    if any(p.loss is not None for p in profiles):
        rows.append(_metric_row("loss", [p.loss for p in profiles], lambda v: f"{v:.4f}",
                                lambda a, b: f"{b - a:+.4f}"))
    for metric in dict.fromkeys(k for p in profiles for k in p.metrics):
        values = [p.metrics.get(metric) for p in profiles]
        if metric in _FRACTIONS:
            rows.append(_metric_row(metric, values, lambda a: f"{100 * a:.2f} %",
                                    lambda a, b: f"{100 * (b - a):+.2f} pp"))
        else:
            rows.append(_metric_row(metric, values, lambda v: f"{v:.4g}", lambda a, b: f"{b - a:+.4g}"))
    threads = sorted({s.threads for p in profiles for s in p.latency})
    notes = []
    if threads:
        notes.append(f"latency: median ms (p10-p90) per forward pass, "
                     f"{'/'.join(map(str, threads))} threads")
    notes += [f"{p.name}: {note}" for p in profiles for note in p.notes]
    notes += _control_notes(profiles, controls)
    header = ["", *[p.name for p in profiles], "first/last"]
    if len(profiles) == 1:
        header, rows = header[:-1], [row[:-1] for row in rows]
    return header, rows, notes


def _control_notes(profiles: Sequence[Profile], controls: Sequence[LatencyControl]) -> list[str]:
    """What the latency first/last column means, and a warning when the A/A spread is wide."""
    if len(profiles) < 2 or not any(p.latency for p in profiles):
        return []
    if not controls:
        return ["latency first/last: not shown; the profiles were timed at different moments, with no "
                "A/A control to tell a change from the machine's noise"]
    notes = [f"latency first/last: median of {controls[0].rounds} interleaved rounds; 'within noise' when "
             f"the change is no larger than the same model timed twice (A/A)"]
    noisy = [c for c in controls if c.noisy]
    if noisy:
        worst = max(c.noise for c in noisy)
        notes.append(f"machine busy: the same model timed twice differed by up to {100 * worst:.0f} %; "
                     f"latency ratios are unreliable, re-measure on an idle machine")
    return notes


def compare(*profiles: Profile, controls: Sequence[LatencyControl] = ()) -> str:
    """Plain-text table of ``profiles`` side by side (one column each), plus footnotes.

    ``controls`` (:func:`~prunekit.measure.latency.aa_controls` of the first and last model) give
    the latency first/last column; without them no latency ratio is printed.
    """
    header, rows, notes = _rows(profiles, controls)
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * (sum(widths) + 2 * (len(widths) - 1)))
    return "\n".join(lines + notes)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def compare_markdown(*profiles: Profile, controls: Sequence[LatencyControl] = ()) -> str:
    """The :func:`compare` table as Markdown (benchmarks write these), footnotes as a list."""
    header, rows, notes = _rows(profiles, controls)
    lines = ["| " + " | ".join(_escape(c) or " " for c in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines + ([""] + [f"- {_escape(n)}" for n in notes] if notes else []))
