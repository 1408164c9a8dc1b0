"""train under `torchrun --nproc_per_node=2` (gloo on CPU): every rank ends with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.recover import distributed
from prunekit.recover import checkpoint

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["splits", "loader"])
def test_two_ranks_end_with_identical_trained_weights(tmp_path: Path, mode: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(SCRIPT), str(tmp_path), mode]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 120 s; stderr:\n{exc.stderr}")
    assert done.returncode == 0, (
        f"torchrun failed ({done.returncode}); stderr:\n{done.stderr[-4000:]}")
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    initial = load_file(str(tmp_path / "initial.safetensors"))
    assert _state_equal(rank0, rank1), "ranks disagree on the final weights (or BN buffers)"
    assert not _state_equal(rank0, initial), "training did not change the weights"
    assert _state_equal(rank0, load_file(str(tmp_path / "run" / "model.safetensors")))
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2]
    assert all(i["group_kept"] for i in infos), "train keeps the group it created for later calls (destroyed at exit)"
    assert infos[0]["history"] == infos[1]["history"], "metrics are reduced over ranks"
    assert (tmp_path / "run" / checkpoint.FILE).is_file()
    if mode == "loader":  # NOTE: sharded by rank: disjoint halves of one shuffled order
        seen = [set(i["indices"]) for i in infos]
        assert len(seen[0]) == len(seen[1]) == 4 * 16 and not seen[0] & seen[1]


def test_single_process_context_touches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed.setup(torch.device("cpu"))
    assert context == distributed.Context() and context.is_main and not context.distributed
    assert not torch.distributed.is_initialized()
    distributed.teardown(context)
