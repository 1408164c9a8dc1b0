"""A stopped ``export`` or ``quantize`` (Ctrl-C, an error) leaves nothing in OUT: its files appear only
once all are written, so the message "nothing was saved" holds and the same command runs again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prunekit.cli import main
from prunekit.workflows import Measure


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 training and 16 test images of 28x28 noise in 10 classes, as an .npz."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=rng.random((64, 1, 28, 28), dtype=np.float32), y_train=np.arange(64) % 10,
             x_test=rng.random((16, 1, 28, 28), dtype=np.float32), y_test=np.arange(16) % 10)
    return path


def _stop(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt  # NOTE: Ctrl-C once the model folder is written


def test_an_interrupted_export_leaves_nothing_and_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.workflows import export

    out = tmp_path / "runs" / "exp"
    (tmp_path / "runs").mkdir()
    argv = ["export", "--model", "simple_cnn", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(export, "export_onnx", _stop)
        assert main(argv) == 130
    assert "interrupted; nothing was saved; run the command again." in capsys.readouterr().err
    assert not out.exists() and list((tmp_path / "runs").iterdir()) == []
    assert main([*argv, "--no-onnx"]) == 0  # NOTE: not refused as a folder holding results
    assert sorted(p.name for p in out.iterdir()) == ["model", "results.json"]


def test_a_failed_export_into_an_earlier_folder_keeps_its_files(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from prunekit.workflows import export

    out = tmp_path / "exp"
    export.export("simple_cnn", out_dir=out, onnx=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "model").iterdir()}
    monkeypatch.setattr(export, "export_onnx", _stop)
    with pytest.raises(KeyboardInterrupt):
        export.export("simple_cnn", out_dir=out)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "model").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["model", "results.json"]


def test_an_interrupted_quantize_leaves_nothing(tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prunekit.workflows import quantize

    monkeypatch.setattr(quantize, "int8_profiles", _stop)  # NOTE: after the ONNX files are written
    with pytest.raises(KeyboardInterrupt):
        quantize.quantize("simple_cnn", str(tiny_npz), out_dir=tmp_path / "q", calibration_batches=1,
                          measure=Measure(max_eval_batches=1, batch_sizes=(1,), min_time_s=0.0))
    assert not (tmp_path / "q").exists()
