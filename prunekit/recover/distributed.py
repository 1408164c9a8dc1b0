"""Just enough torch.distributed for the training loop to run unchanged under ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`setup` reads
them, joins (or creates) the process group and says which rank this process is. A plain
``python`` run is a world of one and touches nothing in ``torch.distributed``.

A process group prunekit creates is created once and kept for the life of the process (destroyed
at exit), so that a script or workflow calling ``train`` several times (baseline, then fine-tune)
reuses it. A process group the caller created is used as it is and never destroyed here.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Context", "setup", "teardown", "wrap", "all_reduce_sum", "all_gather", "sync_buffers", "barrier"]

_created = False  # NOTE: True once setup has created the process group of this process


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``world_size`` processes, this one is ``rank``.

    ``created`` is True when prunekit started the process group (it then lives until the process
    exits); False for a group the caller created, which prunekit leaves alone.
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
    """Join the process group described by the environment (gloo on CPU, nccl on CUDA), creating
    it on the first call of the process and reusing it on every later one."""
    global _created
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_world_size(), dist.get_rank(), _env_int("LOCAL_RANK", 0), _created)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Context()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # NOTE: NCCL collectives run on the current device; each torchrun process owns its own.
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=_env_int("RANK", 0), world_size=world_size)
    if not _created:
        atexit.register(_destroy)
    _created = True
    return Context(world_size, dist.get_rank(), _env_int("LOCAL_RANK", 0), True)


def teardown(context: Context) -> None:
    """End one ``train`` call's use of the process group; the group itself stays.

    NOTE: destroying a group and creating the next one at once (a second ``train`` in the same
    torchrun process) races the rendezvous: the ranks hang, or gloo fails to connect. The group
    prunekit created is destroyed at exit instead (:func:`_destroy`).
    """
    del context


def _destroy() -> None:
    """At exit: destroy the process group prunekit created (still there unless the user ended it)."""
    if _created and dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001  NOTE: at exit a peer may be gone; nothing is left to clean up
            pass


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


def all_gather(value: Any, context: Context) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` on a single process."""
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


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
