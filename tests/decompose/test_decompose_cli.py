"""`prunekit decompose` options: parsing into the stage, errors, and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json

import pytest

from prunekit.cli import decompose as command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_options_become_the_stage() -> None:
    args = _parser().parse_args(["decompose", "--model", "resnet20", "--method", "tucker",
                                 "--target-macs", "0.5", "--exclude", "fc", "--include", "layer*"])
    assert command.stage(args) == {"method": "tucker", "rank": None, "energy": None, "target": {"macs": 0.5},
                                   "include": ["layer*"], "ignore": ["fc"], "options": None}
    for text, value in (("16", 16), ("0.5", 0.5), ("vbmf", "vbmf")):
        args = _parser().parse_args(["decompose", "--model", "m", "--rank", text, "--force"])
        assert command.stage(args)["rank"] == value and command.stage(args)["options"] == {"force": True}


@pytest.mark.parametrize("argv, message", [
    (["--rank", "half"], "expected an int rank"),
    (["--rank", "4", "--energy", "0.9"], "not allowed with argument"),
    (["--method", "tuker"], "invalid choice: 'tuker'"),
])
def test_bad_options_are_rejected(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["decompose", "--model", "m", *argv])
    assert message in capsys.readouterr().err


def test_every_option_has_help() -> None:
    sub = _parser()._subparsers._group_actions[0].choices["decompose"]  # type: ignore[union-attr]
    assert all(a.help for a in sub._actions if a.option_strings and a.dest != "help")


@pytest.mark.slow
def test_decompose_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.decompose import load_decomposed

    out = tmp_path / "run"
    args = _parser().parse_args([
        "decompose", "--model", "simple_cnn", "--method", "tucker", "--target-macs", "0.5",
        "--baseline-epochs", "1", "--finetune-epochs", "1", "--max-steps-per-epoch", "3",
        "--no-progress", "--no-onnx", "--batch-sizes", "1", "--out", str(out)])
    assert command.run(args) == 0
    printed = capsys.readouterr().out
    assert "tucker2" in printed and "MACs" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["after"]["macs"] <= 0.5 * results["before"]["macs"]
    assert results["decomposition"]["macs_after"] == results["after"]["macs"]
    loaded = load_decomposed(out / "decomposed")
    assert sum(p.numel() for p in loaded.parameters()) == results["after"]["params"]
