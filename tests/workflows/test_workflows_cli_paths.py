"""What a user driving the CLI gets: saved folders as --model, --device, capped evaluation, and
results written (and said where) only with --out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunekit.cli import main
from prunekit.io import load
from prunekit.workflows import Measure
from prunekit.workflows.common import capped, check_device
from prunekit.workflows.evaluate import evaluate

_TINY = ["--baseline-epochs", "1", "--finetune-epochs", "1", "--max-steps-per-epoch", "3",
         "--no-progress", "--no-onnx", "--batch-sizes", "1", "--min-time-s", "0"]


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `prunekit prune` run of SimpleCNN to half the MACs (evaluation capped at 2 batches)."""
    out = tmp_path_factory.mktemp("prune") / "run"
    assert main(["prune", "--model", "simple_cnn", *_TINY, "--target-macs", "0.5", "--device", "cpu",
                 "--max-eval-batches", "2", "--out", str(out)]) == 0
    return out


def test_max_eval_batches_caps_the_profiles(pruned_run: Path) -> None:
    results = json.loads((pruned_run / "results.json").read_text())
    assert results["before"]["accuracy"] is not None and results["after"]["accuracy"] is not None
    # NOTE: 2 batches of 512 test images: every accuracy is a multiple of 1/1024.
    for key in ("before", "after"):
        assert results[key]["accuracy"] * 1024 == pytest.approx(round(results[key]["accuracy"] * 1024))


def test_eval_reads_the_folder_prune_wrote(pruned_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    folder = pruned_run / "model"
    assert main(["eval", "--model", str(folder), "--max-eval-batches", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "(1024 samples)" in printed and "nothing written (pass --out DIR" in printed
    results = evaluate(str(folder), max_batches=2)
    after = json.loads((pruned_run / "results.json").read_text())["after"]
    assert results["metrics"]["accuracy"] == pytest.approx(after["accuracy"])
    assert results["metrics"]["count"] == 1024


def test_profile_of_a_saved_folder_writes_where_it_says(pruned_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    out = tmp_path / "profile"
    assert main(["profile", "--model", str(pruned_run / "model"), "--no-onnx", "--batch-sizes", "1",
                 "--min-time-s", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"results: {out / 'results.json'}" in printed
    results = json.loads((out / "results.json").read_text())
    saved = json.loads((pruned_run / "results.json").read_text())
    assert results["profile"]["macs"] == saved["after"]["macs"]
    assert results["profile"]["params"] == sum(p.numel() for p in load(pruned_run / "model").parameters())


def test_prune_of_a_saved_folder_saves_a_loadable_smaller_model(pruned_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert main(["prune", "--model", str(pruned_run / "model"), *_TINY, "--finetune-epochs", "0",
                 "--ratio", "0.25", "--max-eval-batches", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    first = json.loads((pruned_run / "results.json").read_text())
    # NOTE: a saved folder starts trained: no baseline, and the same model the first run saved.
    assert "baseline" not in results
    assert results["before"]["macs"] == first["after"]["macs"]
    assert results["before"]["accuracy"] == pytest.approx(first["after"]["accuracy"])
    assert results["after"]["macs"] < results["before"]["macs"]
    assert results["architecture"] == first["architecture"]
    loaded = load(out / "model")
    assert sum(p.numel() for p in loaded.parameters()) == results["after"]["params"]


def test_capped_takes_the_first_batches() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
    assert capped(data, None, 4) is data
    assert capped(data, 2, 3).tensors[1].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="max_eval_batches must be >= 1"):
        capped(data, 0, 3)
    assert Measure().max_eval_batches is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_device("cpu") == torch.device("cpu") and check_device(None) is None
    assert main(["eval", "--model", "simple_cnn", "--device", "cuda", "--max-eval-batches", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunekit eval: error: device: 'cuda' was asked for") and "\n" not in err
    assert main(["eval", "--model", "simple_cnn", "--device", "tpu9"]) == 2
    assert "is not a torch device" in capsys.readouterr().err


def test_partition_writes_only_with_out_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["partition", "--model", "lenet5", "--stages", "2", "--no-onnx", "--min-time-s", "0",
            "--no-progress", "--threads", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(argv) == 0
        assert list(tmp_path.iterdir()) == []
    assert "nothing written (pass --out DIR" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert f"results: {tmp_path / 'p' / 'results.json'}" in printed and "stages:" in printed
    assert (tmp_path / "p" / "stages" / "manifest.json").is_file()


@pytest.mark.gpu
def test_train_and_eval_on_cuda(tmp_path: Path) -> None:
    out = tmp_path / "cuda"
    assert main(["train", "--model", "simple_cnn", "--epochs", "1", "--max-steps-per-epoch", "5",
                 "--device", "cuda", "--no-progress", "--no-profile", "--max-eval-batches", "1",
                 "--out", str(out)]) == 0
    on_gpu = evaluate("simple_cnn", weights=str(out / "model.safetensors"), max_batches=2, device="cuda")
    on_cpu = evaluate("simple_cnn", weights=str(out / "model.safetensors"), max_batches=2)
    assert on_gpu["metrics"]["count"] == on_cpu["metrics"]["count"] == 1024
    assert on_gpu["metrics"]["accuracy"] == pytest.approx(on_cpu["metrics"]["accuracy"], abs=2 / 1024)


def test_export_of_a_saved_folder_loads_back_equal(pruned_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime

    capsys.readouterr()
    out = tmp_path / "export"
    assert main(["export", "--model", str(pruned_run / "model"), "--out", str(out)]) == 0
    assert f"results: {out / 'results.json'}" in capsys.readouterr().out
    source, exported = load(pruned_run / "model").eval(), load(out / "model").eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = source(x)
    assert torch.equal(exported(x), want)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_a_recipe_starts_from_a_saved_folder(pruned_run: Path, tmp_path: Path) -> None:
    from prunekit.recipes import parse_recipe, run_recipe

    recipe = parse_recipe({"model": str(pruned_run / "model"), "stages": [{"evaluate": {}}]})
    results = run_recipe(recipe, out_dir=tmp_path / "recipe", progress=False)
    saved = json.loads((pruned_run / "results.json").read_text())
    assert results["initial"]["params"] == saved["after"]["params"]
    assert results["stages"][0]["summary"]["metrics"]["count"] == 10000
