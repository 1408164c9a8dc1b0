"""A prune stage fine-tunes between its steps with the recipe's training options (or its own
``finetune`` options), not with TrainConfig's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.errors import ConfigError
from prunekit.recipes import parse_recipe, run_recipe


_TRAIN = {"epochs": 1, "max_steps_per_epoch": 2, "optimizer": "sgd", "lr": 0.05, "batch_size": 32}


def _recipe(npz: Path, prune: dict) -> dict:
    return {"model": "simple_cnn", "data": str(npz), "stages": [{"train": dict(_TRAIN)}, {"prune": prune}]}


def test_schedule_steps_fine_tune_with_the_recipes_training_options(tiny_npz: Path, tmp_path: Path) -> None:
    prune = {"schedule": [{"target": {"ratio": 0.2}, "finetune_epochs": 1},
                          {"target": {"ratio": 0.4}, "finetune_epochs": 0}]}
    results = run_recipe(parse_recipe(_recipe(tiny_npz, prune)), out_dir=tmp_path / "a", progress=False)
    first, second = results["stages"][1]["summary"]["steps"]
    config = first["finetune_config"]
    assert {k: config[k] for k in _TRAIN} == {**_TRAIN, "epochs": 1}
    assert config["seed"] == 1 and second["finetune_config"] is None


def test_the_stage_can_set_its_own_fine_tuning(tiny_npz: Path, tmp_path: Path) -> None:
    prune = {"target": {"ratio": 0.3}, "steps": 2, "finetune_epochs": 1,
             "finetune": {"optimizer": "adamw", "lr": 0.002, "max_steps_per_epoch": 1}}
    results = run_recipe(parse_recipe(_recipe(tiny_npz, prune)), out_dir=tmp_path / "b", progress=False)
    summary = results["stages"][1]["summary"]
    config = summary["finetune_config"]
    assert (config["optimizer"], config["lr"], config["max_steps_per_epoch"], config["epochs"]) == ("adamw", 0.002, 1, 1)
    assert [s["step"] for s in summary["steps"]] == [0, 1]


def test_a_bad_finetune_option_names_the_field(tiny_npz: Path) -> None:
    prune = {"target": {"ratio": 0.3}, "finetune": {"optimizr": "sgd"}}
    with pytest.raises(ConfigError, match=r"stages\[1\]\.prune\.finetune\.optimizr: unknown key"):
        parse_recipe(_recipe(tiny_npz, prune))


def test_max_eval_batches_caps_every_evaluation_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from prunekit.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: simple_cnn\nstages:\n  - train: {epochs: 1, max_steps_per_epoch: 2}\n"
                      "  - evaluate: {split: val}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                 "--max-eval-batches", "1"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["stages"][1]["summary"]["metrics"]["count"] == 512
    # NOTE: 1 batch of 512 test images: the profiles' accuracies are multiples of 1/512.
    for profile in (results["initial"], results["stages"][0]["profile"]):
        assert profile["accuracy"] * 512 == pytest.approx(round(profile["accuracy"] * 512))


@pytest.mark.parametrize("resume", [False, True], ids=["one run", "resumed before the finetune"])
def test_training_after_sparsify_keeps_the_zeros(tiny_npz: Path, tmp_path: Path, resume: bool) -> None:
    import torch

    recipe = parse_recipe({"model": "simple_cnn", "data": str(tiny_npz), "stages": [
        {"train": dict(_TRAIN)},
        {"sparsify": {"importance": "magnitude", "sparsity": 0.5}},
        {"prune": {"target": {"ratio": 0.25}}},
        {"finetune": {**_TRAIN, "lr": 0.5}}]})
    out = tmp_path / "run"
    if resume:
        run_recipe(recipe, out_dir=out, progress=False, stop_after=2)
    results = run_recipe(recipe, out_dir=out, progress=False, resume=resume)
    import prunekit

    layers = results["stages"][1]["summary"]["layers"]
    pruned = dict(prunekit.load(out / "checkpoints" / "stage-03-prune").named_parameters())
    weights = dict(results["model"].named_parameters())
    assert layers and all(layer["name"] in weights for layer in layers)
    for layer in layers:  # the finetune (lr 0.5) moved the weights but kept exactly the zeros it got
        name = layer["name"]
        before, after = pruned[name], weights[name]
        assert (before == 0).float().mean() >= 0.3, name
        assert torch.equal(before == 0, after == 0), name
        assert not torch.equal(before, after), name
    assert not any(isinstance(m, torch.nn.utils.parametrize.ParametrizationList) for m in results["model"].modules())
    assert results["stages"][3]["summary"]["epochs"] == 1


def test_quantize_stage_with_the_torch_backend_saves_an_int8_model_that_loads(tiny_npz: Path, tmp_path: Path) -> None:
    import torch

    import prunekit

    pytest.importorskip("torchao")
    recipe = parse_recipe({"model": "simple_cnn", "data": str(tiny_npz), "stages": [
        {"train": dict(_TRAIN)}, {"quantize": {"backend": "torch", "dynamic": True}}]})
    results = run_recipe(recipe, out_dir=tmp_path / "run", progress=False)
    summary = results["stages"][1]["summary"]
    assert summary["quantize"]["backend"] == "torch" and set(summary["test"]) == {"fp32", "int8"}
    assert abs(summary["test"]["int8"]["accuracy"] - summary["test"]["fp32"]["accuracy"]) <= 0.05
    loaded = prunekit.load(summary["files"]["model"])
    linears = [m for m in loaded.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.qdata.dtype == torch.int8 for m in linears)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp32 = results["model"](x)
        int8 = loaded(x)
    assert float((int8 - fp32).norm() / fp32.norm()) < 0.05


def test_quantize_stage_refuses_torch_options_it_cannot_run() -> None:
    for options, message in (({"method": "entropy"}, "minmax only"), ({"max_metric_drop": 0.01}, "ONNX Runtime"),
                             ({"dynamic": False}, "compile: true")):
        with pytest.raises(ConfigError, match=f"stages\\[0\\]\\.quantize: .*{message}"):
            parse_recipe({"model": "simple_cnn", "stages": [
                {"quantize": {"backend": "torch", "dynamic": True, **options}}]})


def test_a_prune_stage_within_a_metric_budget(tiny_npz: Path, tmp_path: Path) -> None:
    """The stage keeps the deepest cut within the budget; with none allowed, the model goes on uncut."""
    prune = {"target": {"macs": 0.2}, "round_to": 1, "finetune_epochs": 1, "max_metric_drop": 1.0, "tries": 3,
             "finetune": {"max_steps_per_epoch": 1}}
    results = run_recipe(parse_recipe(_recipe(tiny_npz, prune)), out_dir=tmp_path / "a", progress=False)
    summary = results["stages"][1]["summary"]
    assert summary["metric_budget"]["chosen"] == 0 and summary["achieved"]["macs"] <= 0.2
    assert results["stages"][1]["profile"]["macs"] < results["stages"][0]["profile"]["macs"]
    strict = {**prune, "max_metric_drop": 0.0, "finetune_epochs": 0, "tries": 1}
    with pytest.warns(UserWarning, match="no cut of the 1 tried kept the validation accuracy within 0"):
        results = run_recipe(parse_recipe(_recipe(tiny_npz, strict)), out_dir=tmp_path / "b", progress=False)
    assert results["stages"][1]["profile"]["macs"] == results["stages"][0]["profile"]["macs"]
    with pytest.raises(ConfigError, match="max_metric_drop needs a 'target'"):
        parse_recipe(_recipe(tiny_npz, {"schedule": [{"target": {"ratio": 0.2}}], "max_metric_drop": 0.01}))
