"""A stopped ``export``, ``quantize``, ``prune``, ``sparsify`` or ``decompose`` (Ctrl-C, an error) leaves
nothing in OUT: its files appear only once all are written, so the message "nothing was saved" holds and
the same command runs again; with --overwrite, the earlier run's files are there as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


_QUICK = ["--baseline-epochs", "1", "--finetune-epochs", "0", "--max-steps-per-epoch", "2", "--no-progress",
          "--no-onnx", "--batch-sizes", "1", "--max-eval-batches", "1", "--min-time-s", "0"]
_COMMANDS = {"prune": ["--ratio", "0.5"], "sparsify": ["--sparsity", "0.5"], "decompose": ["--rank", "0.5"]}


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its change time and contents."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_an_interrupted_save_or_report_leaves_nothing(command: str, tiny_npz: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.workflows import common

    out = tmp_path / "out"
    argv = [command, "--model", "simple_cnn", "--data", str(tiny_npz), *_QUICK, *_COMMANDS[command],
            "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(common, "write_run_report", _stop)  # NOTE: the model and results.json are written
        assert main(argv) == 130
    assert "interrupted; nothing was saved; run the command again." in capsys.readouterr().err
    assert not out.exists()
    assert main(argv) == 0  # NOTE: not refused as a folder holding results
    assert {"model", "results.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".prunekit-tmp-")]


def test_a_failed_overwrite_keeps_the_earlier_run(tiny_npz: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prunekit.workflows import common, prune

    out = tmp_path / "out"
    argv = ["prune", "--model", "simple_cnn", "--data", str(tiny_npz), *_QUICK, "--out", str(out)]
    assert main([*argv, "--ratio", "0.5"]) == 0
    earlier = _files(out)
    assert {"results.json", "report.html", "model/manifest.json"} <= set(earlier)
    with monkeypatch.context() as patch:
        patch.setattr(common, "write_run_report", _stop)
        assert main([*argv, "--ratio", "0.25", "--overwrite"]) == 130
    assert _files(out) == earlier  # NOTE: its results, report and model, untouched
    with monkeypatch.context() as patch:  # NOTE: a failure before anything is written, too
        patch.setattr(prune, "compare_models", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            main([*argv, "--ratio", "0.25", "--overwrite"])
    assert _files(out) == earlier


def test_a_staged_run_records_where_its_files_are(tiny_npz: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import prunekit

    out = tmp_path / "out"
    assert main(["prune", "--model", "simple_cnn", "--data", str(tiny_npz), *_QUICK, "--ratio", "0.5",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["results_file"] == str(out / "results.json")
    assert f"report: {out / 'report.html'} (open it" in capsys.readouterr().out
    assert results["files"]["model"] == str(out / "model") and Path(results["files"]["weights"]).is_file()
    manifest = (out / "model" / "manifest.json").read_text()
    assert ".prunekit-tmp-" not in manifest and ".prunekit-tmp-" not in (out / "results.json").read_text()
    assert str((out / "baseline.safetensors").absolute()) in manifest  # NOTE: the trained dense weights
    assert prunekit.load(out / "model") is not None


def test_pruning_a_trained_folder_into_itself_keeps_its_dense_weights(tiny_npz: Path, tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(["train", "--model", "simple_cnn", "--data", str(tiny_npz), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--no-progress", "--out", str(out)]) == 0
    trained = load_file(out / "model" / "model.safetensors")
    assert main(["prune", "--model", str(out), "--data", str(tiny_npz), *_QUICK, "--ratio", "0.5",
                 "--out", str(out), "--overwrite"]) == 0
    source = json.loads((out / "model" / "manifest.json").read_text())["source"]
    dense = load_file(source["kwargs"]["weights"])  # NOTE: was the pruned model's own weights file
    assert dense.keys() == trained.keys() and all(torch.equal(dense[k], trained[k]) for k in trained)
