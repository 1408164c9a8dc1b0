"""What the commands print around their results: warnings as one line, notes only where they hold, no
Python-API hints, counts named for what they count, flags checked with the flag named."""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from prunekit.cli import build_parser, main

_QUICK = ["--max-eval-batches", "1", "--batch-sizes", "1", "--min-time-s", "0", "--no-onnx", "--no-progress"]

_OWN_LM = '''
from torch import nn


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.head = nn.Embedding(256, 8), nn.Linear(8, 256)

    def forward(self, idx):
        return self.head(self.wte(idx))


def build():
    return LM()
'''


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _images_of_two_sizes(root: Path) -> Path:
    """An image folder (two classes) whose images are 28x28 and 30x30: loading it for simple_cnn warns."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            size = 28 if i % 2 else 30
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_a_warning_is_one_line_naming_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = _images_of_two_sizes(tmp_path / "images")
    shown = warnings.showwarning
    assert main(["eval", "--model", "simple_cnn", "--data", str(images), "--max-eval-batches", "1"]) == 0
    err = capsys.readouterr().err
    lines = _lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("prunekit eval: warning: Images differ in size")
    assert ".py:" not in err and "UserWarning" not in err and "datasets.load" not in err
    assert warnings.showwarning is shown  # NOTE: nothing left behind once the command returns


def test_debug_keeps_python_s_warning(tmp_path: Path) -> None:
    images = _images_of_two_sizes(tmp_path / "images")
    with pytest.warns(UserWarning, match="Images differ in size") as record:
        assert main(["--debug", "eval", "--model", "simple_cnn", "--data", str(images),
                     "--max-eval-batches", "1"]) == 0
    assert any(w.filename.endswith(".py") for w in record)


def test_sparsify_table_gives_no_python_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sparsify", "--model", "simple_cnn", "--baseline-epochs", "1", "--finetune-epochs", "1",
                 "--max-steps-per-epoch", "2", *_QUICK, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "latency first/last: not shown; the profiles were timed at different moments" in out
    assert "aa_controls" not in out and "controls=" not in out


def test_a_misspelt_model_gets_the_error_and_no_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "resnet2O", "--data", "fashion-mnist"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = _lines(captured.err)
    assert len(lines) == 1 and "Unknown model 'resnet2O'" in lines[0] and "random weights" not in lines[0]


def test_a_language_model_s_count_is_of_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "own_lm.py").write_text(_OWN_LM)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    assert main(["eval", "--model", f"{tmp_path / 'own_lm.py'}:build", "--data", str(tmp_path / "corpus.txt"),
                 "--tokenizer", "bytes", "--block-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "has random weights" in out  # NOTE: the note still comes for a model that loaded
    assert re.search(r"perplexity \S+  \(\d+ predicted tokens\)", out), out
    assert "samples" not in out


def test_a_text_file_has_no_test_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--split test on a text file (train and val blocks only) is an error in one line; without
    --split its val blocks are scored, and the output says so."""
    (tmp_path / "own_lm.py").write_text(_OWN_LM)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    args = ["eval", "--model", f"{tmp_path / 'own_lm.py'}:build", "--data", str(tmp_path / "corpus.txt"),
            "--tokenizer", "bytes", "--block-size", "32"]
    assert main([*args, "--split", "test"]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "has no test split" in err[0] and "--split val" in err[0], err
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "has no test split, so its held-out val split was scored" in out and "[val]" in out, out


def test_search_without_fine_tuning_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--model", "simple_cnn", "--strategy", "random", "--trials", "2", "--target-macs", "0.5",
                 "--baseline-epochs", "0", "--finetune-epochs", "0", "--val-samples", "64", "--bn-batches", "1",
                 *_QUICK, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"best: MACs kept .* -> accuracy \S+ \(not fine-tuned: --finetune-epochs 0\)", out), out
    assert "fine-tuned accuracy" not in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--target-macs", "2"], "--target-macs is the fraction of the dense MACs to keep, in (0, 1]; got 2."),
    (["--target-params", "-1"], "--target-params is the fraction of the dense parameters to keep"),
    (["--target-latency", "0"], "--target-latency is the fraction of the dense PyTorch latency to keep"),
    (["--ratio", "1.5"], "--ratio is the fraction of each group's channels to remove, in [0, 1); got 1.5."),
    (["--target-size-mb", "0"], "--target-size-mb is the most megabytes the saved weights may take, > 0"),
    (["--ratio", "0.3", "--target-macs", "0.5"], "give exactly one target; got --ratio and --target-macs."),
    ([], "no target given: pass one of --ratio, --target-macs"),
    (["--max-metric-drop", "-1"], "--max-metric-drop is the most of the validation metric to lose, >= 0"),
    (["--ratio", "0.3", "--steps", "0"], "--steps must be an integer >= 1; got 0."),
    (["--max-metric-drop", "0.01", "--tries", "0"], "--tries must be an integer >= 1; got 0."),
])
def test_prune_targets_are_checked_naming_the_flag(argv: list[str], message: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--model", "simple_cnn", *argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "{" not in lines[0] and "Pass e.g. --" in lines[0]  # NOTE: flags, not recipe syntax
    assert captured.out == ""  # NOTE: refused before any work


def _commands_with(flag: str) -> list[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [name for name, sub in commands.items() if flag in sub._option_string_actions]


def test_threads_is_an_option_of_the_timing_commands() -> None:
    assert {"profile", "prune", "partition", "train", "quantize"} <= set(_commands_with("--threads"))


@pytest.mark.parametrize("command", _commands_with("--threads"))
@pytest.mark.parametrize("threads", ["0", "-1"])
def test_threads_below_one_is_refused(command: str, threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", "simple_cnn", "--threads", threads])
    assert exit_info.value.code == 2
    assert f"prunekit {command}: error: argument --threads: expected an integer >= 1 such as 2; got '{threads}'" \
        in capsys.readouterr().err


@pytest.mark.parametrize("command, flag", [("eval", "--batch-size"), ("partition", "--batch-size"),
                                           ("search", "--trials"), ("sensitivity", "--val-samples")])
def test_counts_below_one_are_refused(command: str, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", "simple_cnn", flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: expected an integer >= 1 such as 2; got '0'" in capsys.readouterr().err


def test_models_lists_timm_names_with_the_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    assert main(["models", "timm:resnet1*"]) == 0
    names = [line.split()[0] for line in _lines(capsys.readouterr().out)]
    assert "timm:resnet18" in names and all(n.startswith("timm:resnet1") for n in names)


def test_an_empty_timm_match_says_how_to_list_them(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    assert main(["models", "timm:zzz*"]) == 2
    line = _lines(capsys.readouterr().err)[0]
    assert "no timm model matches 'timm:zzz*'" in line and "prunekit models 'timm:*'" in line


def test_an_empty_match_points_at_timm_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "zzz*"]) == 2
    line = _lines(capsys.readouterr().err)[0]
    assert "no model name matches 'zzz*'" in line and "`prunekit models 'timm:zzz*'` for timm's" in line
