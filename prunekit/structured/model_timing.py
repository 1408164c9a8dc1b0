"""Rounding decided on the whole model: for runtimes whose speed depends on how layers meet.

ONNX Runtime's CPU convolutions run in a blocked layout (NCHWc: 16 float32 channels per block on
AVX-512, 8 on AVX2) only where a convolution's input channels fill whole blocks; elsewhere the graph
falls back to plain NCHW convolutions with layout reorders around them. Timed one layer at a time
(:class:`~prunekit.structured.rounding.LayerTimings`), a layer pays those reorders at both ends
whatever its width, so odd widths look free; in the model they are not: ResNet-20 at half the MACs
with exact widths (11, 22, 44-48 channels) ran 0.71x of the dense model under ONNX Runtime at batch 1,
the same target on multiples of 16 ran 1.61x (``benchmarks/rounding.py --part ort``). ONNX Runtime's
per-op profile of the exact-width model (taken by hand, not by a repository command) showed 12 layout
reorders and 9 plain NCHW convolutions, the dense model's 1 reorder and none.

:class:`ModelTimings` therefore times the pruned model itself: the plan with exact widths against the
same plan with its groups rounded up, each built once (exported once for ONNX Runtime), timed in
interleaved rounds of exact, rounded and exact again (the A/A control). Rounding is kept only when
the rounded model is faster beyond the control's spread and :data:`~prunekit.structured.rounding.NOISE_FLOOR`.

``backend="onnxruntime-int8"`` times each candidate as it will be deployed with ``prunekit quantize``:
exported, quantised to static int8 (:mod:`prunekit.measure.onnx_int8`) and run by ONNX Runtime. Its
fast int8 convolutions want other widths than fp32's: on x86 the direct int8 kernel (MLAS's
symmetric convolution) takes at least 16 output channels and channel counts divisible by 4; other
layers fall back to a slower im2col path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph.dependency import DependencyGraph
from prunekit.measure.latency import BACKENDS, ort_feed, ort_session
from prunekit.measure.macs import ExampleInput, as_inputs, batch_of
from prunekit.measure.onnx_int8 import timing_int8
from prunekit.structured.apply import apply
from prunekit.structured.plan import Plan
from prunekit.measure.fuse import fold_batchnorm
from prunekit.structured.rounding import NOISE_FLOOR, _block_ms, gains_against

__all__ = ["ModelTimings", "describe", "RULES", "MODEL_BACKENDS"]

MODEL_BACKENDS = (*BACKENDS, "onnxruntime-int8")  # NOTE: int8 only here: a quantised model is timed whole

RULES = {"exact": "exact widths", "auto": "multiples of 8 or 16 (the auto rule)", "16": "multiples of 16"}


def describe(readings: Mapping[str, Any]) -> str:
    """One line for a person: the widths kept for the backend and what each candidate saved, or why
    exact widths stayed (``ModelTimings.readings``, recorded as ``achieved_["rounding"]``)."""
    chosen = RULES.get(readings["chosen"], readings["chosen"])
    if "gains" not in readings:
        return f"widths for {readings['backend']}: {chosen} ({readings.get('error') or readings.get('note')})"
    timed = ", ".join(f"{RULES.get(k, k)} {100 * g:+.0f} %" for k, g in readings["gains"].items())
    return (f"widths for {readings['backend']}: {chosen}; the whole pruned model timed against exact widths: "
            f"{timed} time saved (A/A noise {100 * readings['noise']:.0f} %)")


@dataclass
class ModelTimings:
    """Decides rounding for a whole plan by timing the pruned model on ``backend`` (module docstring).

    ``pays`` (the per-group :class:`~prunekit.structured.rounding.RoundingTable` question) is always
    False: the search allocates the target once with exact widths and once per rounding rule and asks
    :meth:`fastest`. ``readings`` holds the last decision: each candidate's relative time saved
    against exact widths (``gains``), the A/A ``noise`` and the ``chosen`` one.
    """

    model: nn.Module
    graph: DependencyGraph
    example_inputs: ExampleInput
    backend: str = "onnxruntime"
    batch_size: int = 1
    threads: int = 2
    readings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in MODEL_BACKENDS:
            raise ConfigError(f"ModelTimings: backend must be one of {', '.join(MODEL_BACKENDS)}; "
                              f"got '{self.backend}'.")

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        """Never decided one group at a time (see the class docstring)."""
        return False

    def fastest(self, plans: Mapping[str, Plan]) -> str:
        """The name of the fastest plan of ``plans`` (the first is the exact reference, the others
        rounded, finest first): a rounded plan wins only when faster than the reference beyond the
        A/A spread and :data:`~prunekit.structured.rounding.NOISE_FLOOR`, and a coarser one only when
        also faster than every finer winner beyond that spread."""
        names = list(plans)
        if len(names) == 1:
            self.readings = {"backend": self.backend, "chosen": names[0],
                             "note": "no rounded plan lands within the target's band"}
            return names[0]
        models = {n: apply(self.model, self.graph, p, verify_result=False).eval() for n, p in plans.items()}
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(self.threads)
            with tempfile.TemporaryDirectory(prefix="prunekit-rounding-") as tmp:
                calls = {n: self._call(m, Path(tmp) / f"{i}.onnx") for i, (n, m) in enumerate(models.items())}
                gains, noise = gains_against(lambda n: _block_ms(calls[n], block_s=0.05, blocks=3), names[0],
                                             names[1:])
        except Exception as exc:  # noqa: BLE001  (export and runtimes raise many types)
            # NOTE: a model the backend cannot run keeps exact widths; the reason is recorded, not raised
            self.readings = {"backend": self.backend, "chosen": names[0],
                             "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
            return names[0]
        finally:
            torch.set_num_threads(threads)
        bar = max(noise, NOISE_FLOOR)
        chosen = names[0]
        for name in names[1:]:
            best = gains.get(chosen, 0.0)
            if gains[name] > bar and (1.0 - best) / max(1.0 - gains[name], 1e-9) - 1.0 > bar:
                chosen = name
        self.readings = {"backend": self.backend, "batch_size": self.batch_size, "threads": self.threads,
                         "gains": {n: round(g, 4) for n, g in gains.items()}, "noise": round(noise, 4),
                         "chosen": chosen}
        return chosen

    def _call(self, model: nn.Module, file: Path) -> Callable[[], object]:
        inputs = as_inputs(self.example_inputs)
        batch = batch_of(inputs, self.batch_size)
        if not self.backend.startswith("onnxruntime"):
            net = fold_batchnorm(model).model if self.backend == "torch-fused" else model

            def call() -> object:
                with torch.inference_mode():
                    return net(*batch)
            return call
        from prunekit.measure.onnx import export_onnx

        exported = export_onnx(model, inputs, file, dynamic_batch=True)
        if self.backend == "onnxruntime-int8":
            exported = timing_int8(exported, batch, file.parent)
        session = ort_session(exported, self.threads)
        feed = ort_feed(session, inputs, self.batch_size)
        return lambda: session.run(None, feed)
