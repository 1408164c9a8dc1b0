"""`prunekit sparsify`: options, one-line errors before any training, and (slow) end to end runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import prunekit.cli as cli
from prunekit.cli import sparsify as sparsify_command
import prunekit
from prunekit.sparsity import sparsity_report

_TINY = ["--model", "vgg_small", "--data", "digits", "--baseline-epochs", "1", "--finetune-epochs", "2",
         "--max-steps-per-epoch", "6", "--no-progress", "--no-onnx", "--batch-sizes", "1"]


def test_sparsify_is_a_command() -> None:
    assert sparsify_command in cli.COMMANDS


def test_every_sparsify_option_is_explained_in_help() -> None:
    sub = cli.build_parser()._subparsers._group_actions[0].choices["sparsify"]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"sparsify {action.option_strings} has no help text"


@pytest.mark.parametrize(("argv", "words"), [
    (["--importance", "magnitud"], "unknown importance 'magnitud'. Did you mean 'magnitude'"),
    (["--method", "wand"], "unknown method 'wand'. Did you mean 'wanda'"),
    (["--method", "magnitude"], "unknown method 'magnitude'"),
    (["--sparsity", "1.5"], r"'sparsity' must be a fraction in \[0, 1\] of the weights to zero; got 1.5"),
    (["--pattern", "2:4", "--schedule", "gradual"], "the 2:4 pattern fixes the sparsity at 0.5"),
    (["--pattern", "2:4", "--sparsity", "0.9"], "zeroes exactly 0.5 of the weights, but sparsity=0.9"),
    (["--pattern", "2:4", "--scope", "global"], "scope 'global' has no meaning for the 2:4 pattern"),
    (["--method", "wanda", "--schedule", "gradual"], "method 'wanda' prunes in one shot"),
    (["--schedule", "gradual", "--finetune-epochs", "0"], "finetune_epochs is 0"),
    (["--pattern", "3:9:1"], "sparsity pattern '3:9:1' is not understood"),
])
def test_bad_options_fail_in_one_line_before_training(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      argv: list[str], words: str) -> None:
    assert cli.main(["sparsify", *_TINY, *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunekit sparsify: error:") and "\n" not in err
    assert re.search(words, err), err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow  # NOTE: loads the digits data (scikit-learn import) before the check.
def test_a_layer_the_pattern_cannot_fit_is_named_before_the_baseline_trains(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["sparsify", *_TINY, "--pattern", "2:4", "--baseline-epochs", "50",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"layer 'features.0.weight' \(32, 1, 3, 3\) has 9 inputs per output.*"
                     r"--(ignore|exclude) features.0", err), err


def _check_run(out: Path, sparsity: float) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == "sparsify"
    assert results["achieved_sparsity"] == pytest.approx(sparsity, abs=1e-3)
    before, after = results["before"], results["after"]
    assert before["params"] == after["params"] and after["accuracy"] is not None
    assert results["nonzero_params"]["after"] < results["nonzero_params"]["before"]
    rebuilt = prunekit.load(out / "model")
    rows = sparsity_report(rebuilt, [r["name"] for r in results["layers"]])
    assert [r.zeros for r in rows] == [r["zeros"] for r in results["layers"]]
    assert (out / "model" / "model.safetensors").stat().st_size == results["sizes"]["sparse"]
    return results


@pytest.mark.slow
def test_gradual_magnitude_to_90_percent_writes_results_and_a_loadable_sparse_file(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli.main(["sparsify", *_TINY, "--sparsity", "0.9", "--schedule", "gradual", "--updates", "4",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vgg_small sparse" in printed and "sparsity of the sparsified layers: 90.00 %" in printed
    assert "no speed-up in PyTorch's dense kernels" in printed
    results = _check_run(out, 0.9)
    assert results["schedule_steps"] == {"name": "gradual", "start": 0, "end": 8, "frequency": 2}
    assert results["sizes"]["sparse"] < 0.3 * results["sizes"]["dense"]


@pytest.mark.slow
def test_wanda_2_4_holds_its_zeros_through_fine_tuning(tmp_path: Path) -> None:
    pytest.importorskip("prunekit.sparsity.oneshot")
    out = tmp_path / "run"
    assert cli.main(["sparsify", *_TINY, "--method", "wanda", "--pattern", "2:4",
                     "--ignore", "features.0", "--out", str(out)]) == 0
    _check_run(out, 0.5)
    rebuilt = prunekit.load(out / "model")
    weight = rebuilt.features[3].weight.permute(0, 2, 3, 1).reshape(64, -1, 4)  # NOTE: 4 input channels a group
    assert torch.all((weight != 0).sum(-1) == 2)


def test_the_workflow_ramps_over_the_first_part_of_fine_tuning() -> None:
    from prunekit.workflows.sparsify import _schedule

    assert _schedule("gradual", 400, 0.75, 20) == {"name": "gradual", "start": 0, "end": 299, "frequency": 14}
    assert _schedule("iterative", 100, 0.5, 3) == {"name": "iterative", "milestones": [0, 24, 49]}
    assert _schedule("iterative", 4, 0.5, 20) == {"name": "iterative", "milestones": [0, 1]}
    assert _schedule("one_shot", 100, 0.75, 20) == {"name": "one_shot"}
