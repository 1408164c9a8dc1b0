"""The recipe runner keeps the promises of the CLI and the docs: a prune stage fine-tunes after pruning as
``prunekit prune`` does; ``--overwrite`` never replaces the recipe's input; bad options fail before any
training, naming the file, line and field; a saved folder's plans stay in the manifest; a resume after the
last stage writes the model; an ``evaluate`` row shows the split it scored."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.errors import ConfigError, OutputError
from prunekit.io import read_manifest
from prunekit.recipes import load_recipe, parse_recipe, run_recipe

_TRAIN = {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 32}


def _recipe(npz: Path, *stages: dict, model: str = "simple_cnn") -> dict:
    return {"model": model, "data": str(npz), "stages": list(stages)}


def _yaml(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "r.yaml"
    file.write_text(text)
    return file


def test_prune_model_fine_tunes_after_the_last_step_too(tiny_npz: Path) -> None:
    from prunekit import data
    from prunekit.models import create
    from prunekit.structured import StructuredPruner
    from prunekit.workflows.prune import prune_model

    splits = data.load(str(tiny_npz))
    for steps, calls in ((1, 1), (2, 2)):
        tuned: list[int] = []

        def tune(model: torch.nn.Module, tuned: list[int] = tuned) -> None:
            tuned.append(sum(p.numel() for p in model.parameters()))

        pruner = StructuredPruner({"ratio": 0.25}, steps=steps)
        pruned, plan, _, records, result = prune_model(create("simple_cnn"), splits, pruner, finetune_epochs=1,
                                                       tune=tune)
        assert len(tuned) == calls and result is None  # NOTE: append returns None
        assert tuned[-1] == sum(p.numel() for p in pruned.parameters())  # NOTE: the last call tunes the result
        assert len(records) == (0 if steps == 1 else 2)


def test_a_prune_stage_with_a_target_fine_tunes_finetune_epochs(tiny_npz: Path, tmp_path: Path) -> None:
    prune = {"target": {"ratio": 0.25}, "finetune_epochs": 1, "finetune": {"max_steps_per_epoch": 1}}
    results = run_recipe(parse_recipe(_recipe(tiny_npz, {"prune": prune})), out_dir=tmp_path, progress=False)
    summary = results["stages"][0]["summary"]
    assert summary["finetune_config"]["epochs"] == 1 and summary["finetune"]["epochs"] == 1
    assert [row["epoch"] for row in summary["finetune"]["history"]] == [0]  # NOTE: it trained, once


def test_overwrite_refuses_to_replace_the_folder_the_recipe_reads(tiny_npz: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.models import create

    out = tmp_path / "run"
    saved = prunekit.save(create("simple_cnn"), out / "model", source="simple_cnn")
    digest = hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()
    for spec in (str(out / "model"), str(out)):
        recipe = _yaml(tmp_path, f"model: {spec}\ndata: {tiny_npz}\nstages:\n  - evaluate: {{}}\n")
        assert main(["run", str(recipe), "--out", str(out), "--overwrite", "--no-progress"]) != 0
        assert "would replace the recipe's model input" in capsys.readouterr().err
        with pytest.raises(OutputError, match="Pick another --out"):
            run_recipe(recipe, out_dir=out, overwrite=True)
    assert hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest() == digest
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("stage, message", [
    ("prune: {target: {ratio: 0.3}, options: {layer_chanels: {conv1: 2}}}",
     r"r\.yaml:4: stages\[1\]\.prune\.options: PrunerOptions: unknown key 'layer_chanels'.*'layer_channels'"),
    ("decompose: {method: svd, rank: 0.5, options: {forse: true}}",
     r"r\.yaml:4: stages\[1\]\.decompose\.options: DecomposeOptions: unknown key 'forse'.*'force'"),
    ("sparsify: {pattern: '4y4'}", r"r\.yaml:4: stages\[1\]\.sparsify\.pattern: sparsity pattern '4y4' is not"),
    ("sparsify: {pattern: '5:4', sparsity: null}", r"r\.yaml:4: stages\[1\]\.sparsify\.pattern: .*0 < N < M"),
], ids=["pruner options", "decompose options", "pattern", "n:m"])
def test_check_refuses_bad_stage_options(stage: str, message: str, tmp_path: Path) -> None:
    recipe = _yaml(tmp_path, f"model: simple_cnn\nstages:\n  - train: {{epochs: 1}}\n  - {stage}\n")
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe)


@pytest.mark.parametrize("stages, message", [
    ("  - prune: {target: {ratio: 0.3}, ignore: [conv9]}\n",
     r"r\.yaml:6: stages\[2\]\.prune\.ignore: .*\['conv9'\]"),
    ("  - prune: {target: {ratio: 0.3}, options: {layer_ratios: {conv9: 0.5}}}\n",
     r"r\.yaml:6: stages\[2\]\.prune\.options: .*'conv9'"),
    ("  - sparsify: {sparsity: 0.5, ignore: [conv9]}\n", r"r\.yaml:6: stages\[2\]\.sparsify\.ignore: .*'conv9'"),
    ("  - prune: {target: {ratio: 0.25}}\n  - sparsify: {pattern: '2:4', sparsity: null}\n",
     r"r\.yaml:7: stages\[3\]\.sparsify\.pattern: layer 'conv1\.weight' .* 9 inputs per output"),
], ids=["prune ignore", "prune layer names", "sparsify ignore", "n:m layer shape"])
def test_what_the_model_cannot_take_fails_before_any_training(stages: str, message: str, tiny_npz: Path,
                                                               tmp_path: Path) -> None:
    recipe = _yaml(tmp_path, f"model: simple_cnn\ndata: {tiny_npz}\nstages:\n"
                             f"  - train: {{epochs: 1, max_steps_per_epoch: 1}}\n  - evaluate: {{}}\n{stages}")
    load_recipe(recipe)  # NOTE: the schema cannot know the model's modules
    with pytest.raises(ConfigError, match=message):
        run_recipe(recipe, out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "state.json").exists()  # NOTE: no stage ran


def test_run_help_lists_the_stage_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "prune: target, importance, scope" in shown and "sparsify: " in shown and "evaluate: split, latency" in shown


def test_a_recipe_on_a_saved_pruned_folder_keeps_its_plans(tiny_npz: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    run_recipe(parse_recipe(_recipe(tiny_npz, {"prune": {"target": {"ratio": 0.5}, "round_to": 1}})),
               out_dir=first, progress=False)
    earlier = read_manifest(first / "model").of_kind("prune")
    recipe = parse_recipe(_recipe(tiny_npz, {"prune": {"target": {"ratio": 0.5}, "round_to": 1}},
                                  {"evaluate": {}}, model=str(first)))
    out = tmp_path / "second"
    run_recipe(recipe, out_dir=out, progress=False, stop_after=1)
    results = run_recipe(recipe, out_dir=out, progress=False, resume=True)
    plans = [t["plan"] for t in read_manifest(out / "model").of_kind("prune")]
    assert len(plans) == 2 and plans[0] == earlier[0]["plan"]
    assert (plans[0]["sizes"]["conv1.weight:0"], plans[1]["sizes"]["conv1.weight:0"]) == (4, 2)  # NOTE: 4 -> 2 -> 1
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(prunekit.load(out / "model")(x), results["model"].eval()(x))


def test_resume_after_the_last_checkpoint_writes_the_model_and_report(tiny_npz: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    recipe = parse_recipe(_recipe(tiny_npz, {"prune": {"target": {"ratio": 0.25}}}, {"evaluate": {}}))
    run_recipe(recipe, out_dir=out, progress=False)
    for name in ("model", "report.html", "report.md"):  # NOTE: as a run killed after the last checkpoint
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    results = run_recipe(recipe, out_dir=out, progress=False, resume=True)
    assert results["files"]["model"] == str(out / "model") and (out / "model" / "manifest.json").is_file()
    assert results["report"] and Path(results["report"]).is_file()
    assert json.loads((out / "results.json").read_text())["files"]["model"] == str(out / "model")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(prunekit.load(out / "model")(x),
                                   prunekit.load(out / "checkpoints" / "stage-02-evaluate")(x))


def test_an_evaluate_row_shows_the_split_it_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    profile = {"params": 10, "macs": 20, "size_bytes": 1000, "accuracy": 0.8}
    record = {"index": 0, "kind": "evaluate", "seconds": 0.1, "profile": profile,
              "summary": {"split": "val", "task": "classification", "metrics": {"accuracy": 0.7, "loss": 1.0}}}
    monkeypatch.setattr("prunekit.cli.run.run_recipe", lambda *a, **k: {"initial": profile, "stages": [record]})
    recipe = _yaml(tmp_path, "model: simple_cnn\nstages:\n  - evaluate: {split: val}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "evaluate" in line)
    assert "70.00 %" in row and "80.00 %" not in row and "(val)" in row
