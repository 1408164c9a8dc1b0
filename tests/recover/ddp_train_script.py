"""Run by test_recover_distributed.py under torchrun: train on 2 ranks, dump each rank's weights.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_train_script.py OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _recover_fixtures import quadrant_splits, tiny_net

from prunekit.io import save_weights
from prunekit.recover import TrainConfig, train


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    # NOTE: a different seed per rank on purpose: DDP must broadcast rank 0's initial weights.
    model = tiny_net(seed=rank)
    if rank == 0:
        save_weights(model, out / "initial.safetensors")
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, max_steps_per_epoch=4)
    result = train(model, quadrant_splits(n_train=128), config, out_dir=out / "run", progress=False)
    save_weights(model, out / f"rank{rank}.safetensors")
    info = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]),
            "group_destroyed": not dist.is_initialized(), "history": list(result.history)}
    (out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
