"""Just enough torch.distributed for the training loop to run unchanged under ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`setup` reads
them, joins (or creates) the process group and says which rank this process is. A plain
``python`` run is a world of one and touches nothing in ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Context", "setup", "teardown", "wrap", "all_reduce_sum", "sync_buffers", "barrier"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``world_size`` processes, this one is ``rank``.

    ``created`` is True when :func:`setup` started the process group, so that :func:`teardown`
    ends only what it began (a caller's own process group is left alone).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    created: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> Context:
    """Join the process group described by the environment (gloo on CPU, nccl on CUDA)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_world_size(), dist.get_rank(), _env_int("LOCAL_RANK", 0), False)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Context()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # NOTE: NCCL collectives run on the current device; each torchrun process owns its own.
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=_env_int("RANK", 0), world_size=world_size)
    return Context(world_size, dist.get_rank(), _env_int("LOCAL_RANK", 0), True)


def teardown(context: Context) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if context.created and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several ranks, else itself.

    DDP broadcasts rank 0's parameters and buffers on construction, so every rank starts alike.
    """
    if not context.distributed:
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(values: torch.Tensor, context: Context) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (``values`` itself on a single process).

    NCCL reduces only CUDA tensors: CPU ``values`` make a round trip through the current GPU.
    """
    if context.distributed:
        on = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else values.device)
        reduced = values.to(on, copy=True)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        values = reduced.to(values.device)
    return values


@torch.no_grad()
def sync_buffers(model: nn.Module, context: Context) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, but the forward then updates them from
    each rank's own batch; after the last step the ranks differ until they are synced again.
    """
    if context.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(context: Context) -> None:
    """Wait for every rank (a no-op on a single process)."""
    if context.distributed:
        dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default
