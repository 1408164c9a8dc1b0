"""Run a partition's stages as a pipeline over processes on one machine (gloo, CPU).

One process per stage, started with ``torch.multiprocessing`` (spawn), joined in a gloo process
group on localhost. ``torch.distributed.pipelining`` does the rest: each process wraps its stage
in a ``PipelineStage`` and a GPipe schedule splits the batch into micro-batches, so stage k works
on micro-batch m while stage k+1 works on micro-batch m-1. Forward only (no loss, no backward),
under ``no_grad``. The last rank writes the merged output to a safetensors file that the caller
reads back; the stages travel to the children the way ``multiprocessing`` sends arguments.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, PrunekitError
from prunekit.measure.macs import ExampleInput, as_inputs

__all__ = ["PipelineRun", "run_pipeline"]


@dataclass(frozen=True)
class PipelineRun:
    """What :func:`run_pipeline` returns: the merged ``output`` and the seconds the last stage
    waited from the start of the schedule to the end (``wall_time_s``, all micro-batches)."""

    output: Any
    wall_time_s: float
    world_size: int
    n_microbatches: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, stages: tuple[nn.Module, ...], inputs: tuple[torch.Tensor, ...],
            n_microbatches: int, port: int, threads: int, out_file: str) -> None:
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from prunekit.io import save_json, save_weights

    torch.set_num_threads(threads)  # NOTE: a spawned worker process of its own; nothing to restore.
    world_size = len(stages)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        stage = PipelineStage(stages[rank].eval(), rank, world_size, torch.device("cpu"))
        schedule = ScheduleGPipe(stage, n_microbatches=n_microbatches)
        dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            output = schedule.step(*inputs) if rank == 0 else schedule.step()
        seconds = time.perf_counter() - start
        if rank == world_size - 1:
            flat = list(output) if isinstance(output, (tuple, list)) else [output]
            save_weights({f"output_{i}": t for i, t in enumerate(flat)}, out_file)
            save_json({"tuple": isinstance(output, (tuple, list)), "count": len(flat),
                       "wall_time_s": seconds}, out_file + ".json")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _check(world_size: int, batch: int, n_microbatches: int) -> None:
    if world_size < 2:
        raise ConfigError(f"run_pipeline: a pipeline needs at least 2 stages; got {world_size}. "
                          f"Partition the model with stages >= 2, or run it directly.")
    if isinstance(n_microbatches, bool) or not isinstance(n_microbatches, int) or not (
            1 <= n_microbatches <= batch):
        raise ConfigError(f"run_pipeline: 'n_microbatches' must be an integer in [1, {batch}] "
                          f"(the batch size); got {n_microbatches!r}. Pass e.g. "
                          f"n_microbatches={min(batch, world_size)}, or a larger batch.")
    if batch % n_microbatches:
        # NOTE: PipelineStage sizes its receive buffers from the first micro-batch, so uneven
        # micro-batches (tensor_split of 4 rows into 3) would be received at the wrong size.
        raise ConfigError(f"run_pipeline: the batch of {batch} rows does not split into "
                          f"{n_microbatches} equal micro-batches. Pass a batch that is a multiple "
                          f"of n_microbatches, or another n_microbatches.")


def run_pipeline(partition_or_model: Any, example_inputs: ExampleInput, *,
                 n_microbatches: int | None = None, world_size: int | None = None,
                 threads: int = 1, balance: str = "macs", timeout_s: float = 300.0) -> PipelineRun:
    """Run the stages of a :class:`~prunekit.decompose.partition.Partition` (or of ``model``
    partitioned into ``world_size`` stages by ``balance``) as a pipeline of processes.

    n_microbatches: equal micro-batches the batch (dim 0) is split into; default: the largest
    divisor of the batch that is at most the number of stages.
    threads: intra-op threads per process. The output equals the chained stages' output up to
    float round-off from running smaller batches.
    """
    from prunekit.decompose.partition import Partition, partition

    inputs = as_inputs(example_inputs)
    if isinstance(partition_or_model, Partition):
        part = partition_or_model
    elif isinstance(partition_or_model, nn.Module):
        part = partition(partition_or_model, inputs, world_size or 2, balance=balance, repeats=1)
    else:
        raise ConfigError(f"run_pipeline: expected a Partition or an nn.Module; got "
                          f"{type(partition_or_model).__name__}. Pass prunekit.decompose.partition(...).")
    stages = tuple(part.stages)
    if world_size is not None and world_size != len(stages):
        raise ConfigError(f"run_pipeline: world_size {world_size} does not match the partition's "
                          f"{len(stages)} stages. Leave world_size out, or partition again.")
    batch = inputs[0].shape[0] if inputs[0].dim() else 1
    n_micro = n_microbatches if n_microbatches is not None else max(
        m for m in range(1, min(batch, len(stages)) + 1) if batch % m == 0)
    _check(len(stages), batch, n_micro)
    return _spawn(stages, inputs, n_micro, threads, timeout_s)


def _spawn(stages: tuple[nn.Module, ...], inputs: tuple[torch.Tensor, ...], n_micro: int,
           threads: int, timeout_s: float) -> PipelineRun:
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from prunekit.io import load_json

    with tempfile.TemporaryDirectory(prefix="prunekit-pipeline-") as tmp:
        out_file = str(Path(tmp) / "output.safetensors")
        args = (stages, inputs, n_micro, _free_port(), threads, out_file)
        context = mp.start_processes(_worker, args=args, nprocs=len(stages), join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise PrunekitError(
                        f"run_pipeline: the {len(stages)} stage processes did not finish in "
                        f"{timeout_s:.0f} s. Raise timeout_s, or check that the port is free.")
        except mp.ProcessRaisedException as exc:
            raise PrunekitError(f"run_pipeline: a stage process failed: "
                                f"{str(exc).strip().splitlines()[-1]}. Run the chained stages "
                                f"(Partition.run) to see whether the stage itself fails.") from exc
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
        info = load_json(out_file + ".json")
        tensors = load_file(out_file)
    flat = [tensors[f"output_{i}"] for i in range(info["count"])]
    return PipelineRun(output=tuple(flat) if info["tuple"] else flat[0],
                       wall_time_s=float(info["wall_time_s"]), world_size=len(stages),
                       n_microbatches=n_micro)

