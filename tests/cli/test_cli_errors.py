"""Bad input gives one line saying what is wrong and what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunekit.cli import main


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _single_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def test_unknown_model_suggests_the_close_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(capsys, "train", "--model", "resnt20", "--epochs", "1")
    line = _single_line(err)
    assert code == 2
    assert "Unknown model 'resnt20'" in line and "resnet20" in line and "prunekit models" in line


def test_negative_epochs_is_rejected_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(capsys, "train", "--model", "simple_cnn", "--epochs", "-1")
    line = _single_line(err)
    assert code == 2
    assert "epochs" in line and "-1" in line


def test_missing_data_names_the_package_and_the_override(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    code, err = _run_cli(capsys, "eval", "--model", "simple_cnn", "--data-dir", str(tmp_path / "nope"))
    line = _single_line(err)
    assert code == 2
    assert "dataset-fashion-mnist" in line and "--data-dir" in line


def test_corrupt_idx_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = Path("/usr/share/datasets/fashion-mnist")
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    # A gzip stream whose IDX header promises 60000 images but holds only a few bytes of pixels.
    header = bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    code, err = _run_cli(capsys, "eval", "--model", "simple_cnn", "--data-dir", str(tmp_path))
    line = _single_line(err)
    assert code == 2
    assert "train-images-idx3-ubyte.gz" in line


def test_bad_weights_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    code, err = _run_cli(capsys, "profile", "--model", "simple_cnn", "--weights", str(bogus), "--no-onnx",
                         "--batch-sizes", "1")
    line = _single_line(err)
    assert code == 2
    assert str(bogus) in line


def test_real_process_exit_code_and_no_traceback() -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "prunekit", "train", "--model", "lenet_5"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    line = _single_line(proc.stderr)
    assert "lenet5" in line  # the did-you-mean suggestion



@pytest.mark.parametrize("earlier", [False, True], ids=["new folder", "folder with the user's files"])
def test_an_interrupted_command_names_what_it_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], earlier: bool) -> None:
    """Ctrl-C after a command wrote part of its results: the message names them (not the files that
    were there before) and the command that replaces them (a rerun without --overwrite is refused),
    never "nothing was saved"."""
    from prunekit.cli import prune

    out = tmp_path / "p"
    argv = ["prune", "--model", "simple_cnn", "--target-macs", "0.5", "--out", str(out)]
    if earlier:
        out.mkdir()
        (out / "notes.txt").write_text("the user's own, there before")
        argv.append("--overwrite")

    def stopped(args: object) -> int:
        (out / "baseline.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(prune, "run", stopped)
    assert main(argv) == 130
    line = _single_line(capsys.readouterr().err)
    assert "nothing was saved" not in line and "notes.txt" not in line
    assert f"it left {out / 'baseline.safetensors'} (perhaps incomplete)" in line
    assert line.endswith(f"prunekit prune --model simple_cnn --target-macs 0.5 --out {out} --overwrite")
