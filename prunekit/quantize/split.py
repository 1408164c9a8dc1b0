"""Edge/server split: a partitioned model's first stage runs int8 in this process (the edge), the
other stages fp32 in another process (the server), connected over loopback TCP.

``split_run`` exports every stage to ONNX, quantises the first (static QDQ, calibrated on the
batches' first-stage inputs), starts the server process, and sends each batch's first-stage
outputs across. It reports the bytes that cross per batch and the end-to-end latency, against the
whole fp32 model run in one process, and how often the split's answers agree with it.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError
from prunekit.measure import export_onnx
from prunekit.quantize.calibration import feeds
from prunekit.quantize.ptq import quantize_onnx
from prunekit.quantize.runtime import session
from prunekit.quantize import split_server
from prunekit.quantize.split_server import receive_arrays, send_arrays

__all__ = ["SplitRun", "split_run"]


@dataclass(frozen=True)
class SplitRun:
    """Per batch: bytes sent to the server and received back (headers included), the median
    end-to-end latency of the split and of the whole fp32 model in one process (ms), and the
    fraction of samples whose argmax agrees with the whole fp32 model's."""

    bytes_sent: int
    bytes_received: int
    split_ms: float
    whole_ms: float
    agreement: float
    repeats: int


def _export_stages(part: Any, example: tuple[torch.Tensor, ...], folder: Path) -> list[Path]:
    inputs = part.stage_inputs(*example)
    return [export_onnx(stage, stage_in, folder / f"stage_{k}.onnx") for k, (stage, stage_in)
            in enumerate(zip(part.stages, inputs, strict=True))]


def _server(files: Sequence[Path], threads: int) -> tuple[subprocess.Popen[str], int]:
    # NOTE: run by path with -I: the server process imports onnxruntime and numpy, never prunekit or torch.
    process = subprocess.Popen([sys.executable, "-I", split_server.__file__, f"--threads={threads}",
                                *map(str, files)], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout is not None else ""
    if not line.startswith("port "):
        process.kill()
        raise ConfigError(f"split: the server process did not start (it printed {line!r}). Run "
                          f"`python {split_server.__file__}` by hand to see why.")
    return process, int(line.split()[1])


def split_run(part: Any, model: torch.nn.Module, batches: Sequence[torch.Tensor], *, repeats: int = 20,
              threads: int = 1) -> SplitRun:
    """Run ``part`` (a :class:`~prunekit.decompose.Partition` of ``model`` with 2+ stages) split
    across two processes on ``batches`` (model inputs; the first also calibrates the int8 stage),
    each batch ``repeats`` times, and compare with ``model`` whole, fp32, in this process."""
    if len(part.stages) < 2 or not batches:
        raise ConfigError(f"split: needs a partition of at least 2 stages and at least one batch; got "
                          f"{len(part.stages)} stage(s) and {len(batches)} batch(es). Partition with stages=2.")
    with tempfile.TemporaryDirectory(prefix="prunekit-split-") as tmp:
        folder = Path(tmp)
        files = _export_stages(part, (batches[0],), folder)
        edge_fp32 = session(files[0])
        calibration = feeds(batches, [i.name for i in edge_fp32.get_inputs()], [i.type for i in edge_fp32.get_inputs()])
        edge = session(quantize_onnx(files[0], folder / "edge.int8.onnx", calibration=calibration), threads=threads)
        whole = session(export_onnx(model, batches[0], folder / "whole.onnx"), threads=threads)
        process, port = _server(files[1:], threads)
        try:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _measure(sock, edge, whole, batches, repeats)
        finally:
            process.wait(timeout=60)


def _measure(sock: socket.socket, edge: Any, whole: Any, batches: Sequence[torch.Tensor], repeats: int) -> SplitRun:
    split_times, whole_times, agree, total, sent, received = [], [], 0, 0, 0, 0
    edge_name, whole_name = edge.get_inputs()[0].name, whole.get_inputs()[0].name
    for batch in batches:
        x = batch.numpy()
        for i in range(repeats + 1):  # NOTE: the first round warms both paths up and is not timed.
            start = time.perf_counter()
            middle = edge.run(None, {edge_name: x})
            sent_now = send_arrays(sock, middle)
            reply = receive_arrays(sock)
            split_s = time.perf_counter() - start
            start = time.perf_counter()
            reference = whole.run(None, {whole_name: x})[0]
            whole_s = time.perf_counter() - start
            if reply is None:
                raise ConnectionError("split: the server closed the connection mid-run")
            if i:
                split_times.append(split_s)
                whole_times.append(whole_s)
            else:
                sent, received = sent + sent_now, received + reply[1]
                agree += int((np.asarray(reply[0][0]).argmax(1) == reference.argmax(1)).sum())
                total += len(x)
    return SplitRun(bytes_sent=sent // len(batches), bytes_received=received // len(batches),
                    split_ms=1e3 * statistics.median(split_times), whole_ms=1e3 * statistics.median(whole_times),
                    agreement=agree / total, repeats=repeats)
