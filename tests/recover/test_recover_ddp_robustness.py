"""train under torchrun, beyond one call: the process group is kept between calls, evaluation
data with a DistributedSampler is scored whole, single-process callbacks are refused, sharding
that drops batches warns, and the commands print on rank 0 only.

The multi-process test runs this file itself under ``torchrun --nproc_per_node=2`` (gloo on CPU):
``python -m torch.distributed.run --standalone --nproc_per_node=2 THIS_FILE OUT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from prunekit import cli
from prunekit.errors import ConfigError
from prunekit.gates import ChannelGates
from prunekit.recover import TrainConfig, distributed, train
from prunekit.recover.distributed import Context
from prunekit.recover.sources import build_source
from prunekit.structured import Target
from prunekit.tasks import CausalLM, Classification


def _classification_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def _lm_data(n: int, seed: int) -> TensorDataset:
    return TensorDataset(torch.randint(0, 16, (n, 6), generator=torch.Generator().manual_seed(seed)))


def _sharded(dataset: TensorDataset, batch_size: int) -> DataLoader:
    """A loader giving this rank its share (what a user writes for DDP evaluation)."""
    sampler = DistributedSampler(dataset, num_replicas=int(os.environ["WORLD_SIZE"]),
                                 rank=int(os.environ["RANK"]), shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def _ddp_main(out: Path) -> None:
    """Three train calls in one process (run by torchrun); each rank writes what it saw."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, info = int(os.environ["RANK"]), {}
    config = TrainConfig(epochs=1, lr=0.05, optimizer="sgd", momentum=0.0)
    # NOTE: 30 samples: 15 per rank, so no DistributedSampler padding and the whole is exact.
    val, lm_val = _classification_data(30, 1), _lm_data(30, 3)
    groups = []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    result = train(model, DataLoader(_classification_data(32, 0), batch_size=8), config,
                   val=_sharded(val, 4), out_dir=out / "run" if rank == 0 else None)
    groups.append(dist.group.WORLD if dist.is_initialized() else None)
    info["val"] = dict(result.val or {})
    info["history_val_loss"] = result.history[-1]["val_loss"]
    info["whole_val"] = dict(Classification().evaluate(model, DataLoader(val, batch_size=30)))
    lm = nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 16))
    result = train(lm, DataLoader(_lm_data(32, 2), batch_size=8), config, task="causal_lm",
                   val=_sharded(lm_val, 4))
    groups.append(dist.group.WORLD if dist.is_initialized() else None)
    info["lm_val"] = dict(result.val or {})
    info["lm_whole_val"] = dict(CausalLM().evaluate(lm, DataLoader(lm_val, batch_size=30)))
    train(model, DataLoader(_classification_data(32, 4), batch_size=8), config)
    groups.append(dist.group.WORLD if dist.is_initialized() else None)
    info["group_kept"] = all(g is not None and g is groups[0] for g in groups)
    info["created"] = distributed.setup(torch.device("cpu")).created
    (out / f"rank{rank}.json").write_text(json.dumps(info))


def _run_two_ranks(out: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               __file__, str(out)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 120 s (a hang between train calls?); stderr:\n{exc.stderr}")
    assert done.returncode == 0, f"torchrun failed ({done.returncode}); stderr:\n{done.stderr[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_train_called_again_under_torchrun_reuses_the_group_and_scores_sharded_val_whole(
        tmp_path: Path) -> None:
    infos = _run_two_ranks(tmp_path)
    for info in infos:
        assert info["group_kept"], "every train call must reuse the process group of the first"
        assert info["created"], "the group prunekit created is still its own"
        whole, got = info["whole_val"], info["val"]
        assert got["count"] == whole["count"] == 30, "the metrics cover both ranks' shares"
        for key in ("loss", "accuracy", "top5"):
            assert got[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-9), key
        assert info["history_val_loss"] == pytest.approx(whole["loss"], rel=1e-6)
        lm, lm_whole = info["lm_val"], info["lm_whole_val"]
        assert lm["count"] == lm_whole["count"] == 30 * 5
        # NOTE: exp of the mean loss over all tokens, not a mean of the ranks' perplexities
        assert lm["perplexity"] == pytest.approx(lm_whole["perplexity"], rel=1e-6)
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["val"]["count"] == 30
    assert record["val"]["loss"] == pytest.approx(infos[0]["whole_val"]["loss"], rel=1e-6)


def _two_ranks(monkeypatch: pytest.MonkeyPatch, rank: int = 0) -> None:
    """Make train believe it is rank ``rank`` of two processes (no process group is made)."""
    monkeypatch.setattr(distributed, "setup", lambda device: Context(world_size=2, rank=rank))


def test_train_refuses_a_single_process_callback_under_several_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    gates = ChannelGates(Target(macs=0.5)).fit(model, torch.randn(1, 1, 6, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [(torch.randn(4, 1, 6, 6), torch.randint(0, 2, (4,)))] * 2
    _two_ranks(monkeypatch)
    with pytest.raises(ConfigError, match=r"ChannelGates works in a single process only, but this run has 2 "
                                          r"processes .*Fix: run this training with plain python"):
        train(model, data, TrainConfig(epochs=1), callbacks=[gates])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sharding_a_loader_without_distributed_sampler_warns_of_dropped_batches() -> None:
    loader = DataLoader(_classification_data(80, 0), batch_size=16)  # 5 batches for 2 processes
    with pytest.warns(UserWarning, match=r"the data has 5 batches per epoch and no DistributedSampler, so the 2 "
                                         r"processes take its batches in turn and the last 1 batch\(es\) of every "
                                         r"epoch, short of a full round, are never trained on\. Fix: "
                                         r"give the DataLoader a DistributedSampler, or make the number of "
                                         r"batches a multiple of 2"):
        source = build_source(loader, None, TrainConfig(epochs=1), Context(world_size=2, rank=0))
    assert source.steps_per_epoch == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NOTE: rank 1 stays quiet; an even split needs no warning
        build_source(loader, None, TrainConfig(epochs=1), Context(world_size=2, rank=1))
        build_source(DataLoader(_classification_data(64, 0), batch_size=16), None, TrainConfig(epochs=1),
                     Context(world_size=2, rank=0))
        build_source(loader, None, TrainConfig(epochs=1, max_steps_per_epoch=1), Context(world_size=2, rank=0))


def test_a_metric_fn_on_shards_is_averaged_by_samples_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from prunekit.recover.train import _evaluate_shards
    from prunekit.tasks import Custom

    task = Custom(lambda model, batch: model(batch[0]).sum(), metric="mean",
                  metric_fn=lambda model, batches: float(torch.cat([b[0] for b in batches]).mean()))
    mine = DataLoader(TensorDataset(torch.ones(10, 1)), batch_size=4)  # this rank: 10 samples of 1.0
    # NOTE: the other rank (simulated) scored 30 samples of mean 3.0; the mean of all 40 is 2.5
    monkeypatch.setattr(distributed, "all_gather", lambda value, context: [value, (30, {"mean": 3.0})])
    with pytest.warns(UserWarning, match="averaged over ranks weighted by samples: exact for per-sample means only"):
        got = _evaluate_shards(task, nn.Identity(), mine, None, Context(world_size=2, rank=0))
    assert got == {"mean": pytest.approx(2.5)}


_RESULTS = {"table": "THE TABLE", "layers_table": "LAYERS", "achieved": {"macs": 0.5, "params": 0.5,
            "channels_removed": 0.3}, "target": {"macs": 0.5}, "written": {}}


@pytest.mark.parametrize("command", ["prune", "sparsify", "decompose"])
@pytest.mark.parametrize("rank", ["0", "1"])
def test_commands_print_on_rank_zero_only(command: str, rank: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    workflow = importlib.import_module(f"prunekit.workflows.{command}")
    monkeypatch.setattr(workflow, command, lambda *args, **kwargs: dict(_RESULTS))
    monkeypatch.setenv("RANK", rank)
    argv = [command, "--model", "vgg_small", "--data", "digits", "--out", "runs/x"]
    argv += ["--ratio", "0.3"] if command == "prune" else []
    args = cli.build_parser().parse_args(argv)
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert ("THE TABLE" in printed) == (rank == "0"), printed
    if rank == "1":
        assert printed == ""


if __name__ == "__main__":
    _ddp_main(Path(sys.argv[1]))
    # NOTE: torch's gloo sometimes aborts in C++ teardown after the interpreter exits ("terminate called
    # without an active exception", ~1 run in 20, also with plain torch and an explicit
    # destroy_process_group); what this test checks is written by now, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
