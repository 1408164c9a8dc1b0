"""Where an ONNX file's time goes in ONNX Runtime, per operator type: the answer to "I pruned it and it
is not faster" when the cost is in operators that pruning does not shrink (fixed per-operator time,
layout reorders, quantise/dequantise pairs).

Runs the file with ONNX Runtime's own profiler (the session options every timing here uses, plus
profiling) and sums each node's kernel time by operator type, per run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import ConfigError, require
from prunekit.measure.latency import ort_feed, ort_options
from prunekit.measure.macs import ExampleInput, as_inputs

__all__ = ["OpTime", "op_times"]


@dataclass(frozen=True)
class OpTime:
    """One operator type's kernel time per run (ms) and how many nodes of that type ran per run."""

    op_type: str
    ms: float
    nodes: int


def op_times(path: str | os.PathLike[str], example_inputs: ExampleInput, *, batch_size: int = 1,
             threads: int = 2, runs: int = 50, warmup: int = 5) -> list[OpTime]:
    """Kernel time per operator type of the ONNX file at ``path`` in ONNX Runtime (optimised graph, CPU),
    at ``batch_size`` (``example_inputs`` repeated), averaged over ``runs`` runs after ``warmup``;
    slowest first. Profiling adds a little time per node, so compare shares, not totals, with latency."""
    if runs < 1 or warmup < 0 or batch_size < 1:
        raise ConfigError(f"op_times: runs and batch_size must be >= 1 and warmup >= 0; got runs={runs}, "
                          f"batch_size={batch_size}, warmup={warmup}.")
    ort = require("onnxruntime", extra="onnx", feature="ONNX Runtime operator profile")
    with tempfile.TemporaryDirectory(prefix="prunekit-ops-") as tmp:
        options = ort_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = ort_feed(session, as_inputs(example_inputs), batch_size)
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = _kernel_events(Path(session.end_profiling()))
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    timed = len(events) // (warmup + runs) * runs  # NOTE: every run runs the same nodes; the last are timed
    for op, us in events[len(events) - timed:]:
        total[op] += us
        count[op] += 1
    return sorted((OpTime(op, total[op] / runs / 1e3, count[op] // runs) for op in total), key=lambda t: -t.ms)


def _kernel_events(file: Path) -> list[tuple[str, float]]:
    """(operator type, microseconds) of every node kernel run in an ONNX Runtime profile, in order."""
    events = json.loads(file.read_text())
    return [(e["args"]["op_name"], float(e["dur"])) for e in events
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
