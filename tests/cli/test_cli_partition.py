"""`prunekit partition`: the sub-command parses, partitions, prints the table and writes files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from prunekit import models
from prunekit.cli import partition as command
from prunekit.decompose.partition import load_partition
from prunekit.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prunekit")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["partition", *argv])


def test_partition_command_prints_table_and_writes_stages(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["--model", "lenet5", "--stages", "3", "--no-onnx", "--min-time-s", "0",
                   "--no-progress", "--threads", "1", "--out", str(tmp_path)])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert all(f"stage {k}" in printed for k in range(3)) and "stage 3" not in printed
    assert "whole model" in printed and "chained stages vs model: exact" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == "partition" and len(results["stages"]) == 3
    assert results["check"] == {"exact": True, "max_abs_diff": 0.0}
    assert sum(r["macs"] for r in results["stages"]) == results["whole"]["macs"]
    part = load_partition(models.create("lenet5"), tmp_path / "stages")
    x = models.example_input("lenet5", batch_size=2)
    # NOTE: the stages keep the model's parameter names, so together they are its state dict.
    reference = models.create("lenet5").eval()
    reference.load_state_dict({k: v for s in part.stages for k, v in s.state_dict().items()})
    assert torch.equal(part.run(x), reference(x))


def test_partition_command_rejects_bad_stage_count() -> None:
    args = _parse(["--model", "lenet5", "--stages", "0", "--no-progress", "--min-time-s", "0"])
    with pytest.raises(ConfigError, match="'stages' must be an integer >= 1; got 0"):
        args.run(args)
