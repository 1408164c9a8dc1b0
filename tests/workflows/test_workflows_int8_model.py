"""A folder `prunekit quantize --backend torch` wrote loads as torchao's int8 module: the commands
that would prune, train, quantise, measure or export it refuse it in one line, naming the fp32
folder it came from; `eval` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit import models
from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.workflows.common import build

pytest.importorskip("torchao")

_SIZES = {"num_classes": 10, "in_channels": 1}


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `prunekit quantize --model FP32 --backend torch --dynamic --out Q` leaves: Q/model (the
    fp32 weights and the int8 record prunekit.load re-applies) and Q/results.json naming FP32."""
    from prunekit.quantize import quantize_torch

    root = tmp_path_factory.mktemp("int8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = models.create("vgg_small", **_SIZES).eval()
    source = models.source_of("vgg_small", **_SIZES)
    prunekit.save(net, root / "fp32" / "model", source=source)
    record = quantize_torch(net, torch.randn(1, 1, 8, 8), dynamic=True).record
    prunekit.save(net, root / "q" / "model", source=source, transforms=[record])
    (root / "q" / "results.json").write_text(json.dumps({"command": "quantize", "model": str(root / "fp32")}))
    return root


@pytest.mark.parametrize("command", ["prune", "search", "quantize", "sparsify", "decompose", "train", "profile",
                                     "export"])
def test_commands_that_change_or_measure_it_refuse_an_int8_model(
        command: str, int8_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = int8_run / f"out-{command}"
    target = ["--ratio", "0.5"] if command == "prune" else []
    assert main([command, "--model", str(int8_run / "q"), "--data", "digits", *target, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"prunekit {command}: error: --model ")
    assert "is an int8 model (prunekit quantize --backend torch wrote it)" in err
    assert f"Pass the fp32 folder it was made from ('{int8_run / 'fp32'}') as --model instead" in err
    assert not out.exists()


def test_the_model_folder_itself_is_refused_in_the_library_too(int8_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"model' is an int8 model .*made from \('.*fp32'\)"):
        build(str(int8_run / "q" / "model"), "digits")


def test_eval_runs_the_int8_model(int8_run: Path) -> None:
    net, _ = build(str(int8_run / "q"), "digits", int8_ok=True)
    assert any(getattr(getattr(m, "weight", None), "qdata", None) is not None for m in net.modules())
    fp32, _ = build(str(int8_run / "fp32"), "digits")  # NOTE: the folder it names is accepted
    assert all(getattr(getattr(m, "weight", None), "qdata", None) is None for m in fp32.modules())
