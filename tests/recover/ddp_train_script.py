"""Run by test_recover_distributed.py under torchrun: train on 2 ranks, dump each rank's weights.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_train_script.py OUT [loader]

With "loader" the data is a plain shuffled DataLoader of dict batches (no DistributedSampler), so
train shards it by rank; each rank also records the sample indices it trained on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _recover_fixtures import DictImages, quadrant_splits, tiny_net
from torch.utils.data import DataLoader

from prunekit.io import save_weights
from prunekit.recover import TrainConfig, train


class _Indices:
    """Records the "index" of every sample this rank trains on."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_loss(self, step: int, model: torch.nn.Module, batch: dict, outputs: torch.Tensor,
                loss: torch.Tensor) -> torch.Tensor:
        self.seen += batch["index"].tolist()
        return loss


def main(out: Path, mode: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    # NOTE: a different seed per rank on purpose: DDP must broadcast rank 0's initial weights.
    model = tiny_net(seed=rank)
    if rank == 0:
        save_weights(model, out / "initial.safetensors")
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, max_steps_per_epoch=4)
    splits, indices = quadrant_splits(n_train=128), _Indices()
    if mode == "loader":
        data = DataLoader(DictImages(splits.train), batch_size=16, shuffle=True)
        result = train(model, data, config, val=DataLoader(DictImages(splits.val), batch_size=64),
                       out_dir=out / "run", callbacks=[indices])
    else:
        result = train(model, splits, config, out_dir=out / "run", progress=False)
    save_weights(model, out / f"rank{rank}.safetensors")
    info = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]),
            "group_kept": dist.is_initialized(), "history": list(result.history), "indices": indices.seen}
    (out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "splits")
