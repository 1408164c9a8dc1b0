"""Recipes: every example runs end to end on a tiny budget; resume equals an uninterrupted run;
a broken recipe fails before any work with the file, the line and the field."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.recipes import load_recipe, parse_recipe, run_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """384 training and 128 test images of the real Fashion-MNIST, as an .npz."""
    from prunekit import data

    splits = data.load("fashion_mnist")
    x, y = splits.train.tensors
    xt, yt = splits.test.tensors
    path = tmp_path_factory.mktemp("data") / "fmnist_tiny.npz"
    np.savez(path, x_train=x[:384].numpy(), y_train=y[:384].numpy(), x_test=xt[:128].numpy(), y_test=yt[:128].numpy())
    return path


def _tiny(recipe: Path, npz: Path) -> dict:
    """The recipe with tiny data and budget: at most 1 epoch of 2 steps per training stage (qat: one
    fp32 and one quantised epoch)."""
    data = yaml.safe_load(recipe.read_text())
    data["data"] = str(npz)
    for stage in data["stages"]:
        (kind, options), = stage.items()
        options = options or {}
        if "epochs" in options or kind in ("train", "finetune", "distill", "gates"):
            options["epochs"] = min(options.get("epochs", 1), 1)
            options["max_steps_per_epoch"] = 2
        if "fp32_epochs" in options:  # NOTE: qat: one fp32 epoch at most, and one quantised after it
            options["fp32_epochs"] = min(options["fp32_epochs"], 1)
            options["epochs"] = options["fp32_epochs"] + 1
        if "warmup_steps" in options:
            options["warmup_steps"] = 1
        for step in (options.get("schedule") or []) if kind == "prune" else []:
            step["finetune_epochs"] = min(step.get("finetune_epochs", 0), 1)
        stage[kind] = options
    return data


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_example_recipe_runs_end_to_end(recipe: Path, tiny_npz: Path, tmp_path: Path) -> None:
    load_recipe(recipe)  # the file itself is valid as shipped
    parsed = parse_recipe(_tiny(recipe, tiny_npz), source=str(recipe))
    results = run_recipe(parsed, out_dir=tmp_path / "out", progress=False)
    assert results["completed"] == len(parsed.stages)
    assert [s["kind"] for s in results["stages"]] == [next(iter(type(s).model_fields)) for s in parsed.stages]
    first, last = results["initial"], results["stages"][-1]["profile"]
    assert last["params"] <= first["params"] and 0.0 <= last["accuracy"] <= 1.0
    assert (tmp_path / "out" / "results.json").is_file()
    model = results["model"]
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_resume_after_a_stop_gives_the_uninterrupted_result(tiny_npz: Path, tmp_path: Path) -> None:
    data = _tiny(RECIPES[[p.stem for p in RECIPES].index("simple_cnn")], tiny_npz)
    recipe = parse_recipe(data)
    whole = run_recipe(recipe, out_dir=tmp_path / "whole", progress=False)["model"]
    stopped = run_recipe(recipe, out_dir=tmp_path / "split", progress=False, stop_after=2)
    assert stopped["completed"] == 2
    resumed = run_recipe(recipe, out_dir=tmp_path / "split", progress=False, resume=True)
    assert [s["index"] for s in resumed["stages"]] == list(range(len(recipe.stages)))
    a, b = whole.state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_recipe(tiny_npz: Path, tmp_path: Path) -> None:
    data = _tiny(RECIPES[[p.stem for p in RECIPES].index("simple_cnn")], tiny_npz)
    run_recipe(parse_recipe(data), out_dir=tmp_path / "o", progress=False, stop_after=1)
    data["seed"] = 7
    with pytest.raises(ConfigError, match="different recipe"):
        run_recipe(parse_recipe(data), out_dir=tmp_path / "o", progress=False, resume=True)


BROKEN = {
    "unknown stage": ("model: simple_cnn\nstages:\n  - train: {epochs: 1}\n  - prunee: {}\n",
                      r":4: stages\[1\]: unknown stage 'prunee'.*Did you mean 'prune'"),
    "wrong type": ("model: simple_cnn\nstages:\n  - train:\n      epochs: two\n",
                   r":4: stages\[0\]\.train\.epochs: must be a whole number; got 'two'"),
    "ratio 1.5": ("model: simple_cnn\nstages:\n  - prune:\n      target: {ratio: 1.5}\n",
                  r":4: stages\[0\]\.prune\.target: .*'ratio' must be a float in \[0, 1\); got 1.5"),
    "missing model": ("data: fashion-mnist\nstages:\n  - train: {epochs: 1}\n", r":1: model: is required"),
    "bad choice": ("model: simple_cnn\nstages:\n  - prune:\n      target: {macs: 0.5}\n      scope: globl\n",
                   r":5: stages\[0\]\.prune\.scope: must be one of .*Allowed: local, global\. Did you mean 'global'"),
    "unknown importance": ("model: simple_cnn\nstages:\n  - prune:\n      target: {macs: 0.5}\n      importance: l3\n",
                          r":5: stages\[0\]\.prune\.importance: .*'l3'"),
    "round_to 0": ("model: simple_cnn\nstages:\n  - prune:\n      target: {macs: 0.5}\n      round_to: 0\n",
                   r":5: stages\[0\]\.prune\.round_to: must be 'auto' or a whole number >= 1; got 0\. Use 8"),
    "two stages in one item": ("model: simple_cnn\nstages:\n  - train: {epochs: 1}\n    prune: {target: {ratio: 0.5}}\n",
                               r":3: stages\[0\]: one list item holds 2 stages \(train, prune\).*Split them"),
    "torch entropy": ("model: simple_cnn\nstages:\n  - train: {epochs: 1}\n  - quantize: {backend: torch, method: entropy}\n",
                      r":4: stages\[1\]\.quantize: the torch backend calibrates with minmax only; got method 'entropy'"),
    "torch max drop": ("model: simple_cnn\nstages:\n  - quantize: {backend: torch, dynamic: true, max_metric_drop: 0.01}\n",
                       r":3: stages\[0\]\.quantize: max_metric_drop .* ONNX Runtime backend only"),
    "misspelt model": ("model: simple_cn\nstages:\n  - evaluate: {}\n", r":1: model\.name: .*Did you mean 'simple_cnn'"),
    "bare stage name": ("model: simple_cnn\nstages:\n  - train\n",
                        r":3: stages\[0\]: stage 'train' is a bare name.*Write it as `- train: \{\}`"),
    "misspelt top-level key": ("modle: simple_cnn\nstages:\n  - evaluate: {}\n",
                               r":1: modle: unknown key; .*Did you mean 'model'\?"),
    "model file missing": ("model: no_such_file.py:build\nstages:\n  - evaluate: {}\n",
                           r":1: model\.name: '.*no_such_file\.py' does not exist"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_recipe_fails_before_any_work(case: str, tmp_path: Path) -> None:
    text, pattern = BROKEN[case]
    file = tmp_path / "recipe.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=str(file).replace(".", r"\.") + pattern):
        run_recipe(file, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("stages", "warning"), [
    ("  - export: {}\n  - prune: {target: {ratio: 0.5}}\n",
     "stage 1 (export) writes OUT/export before stage 2 (prune) changes the model: OUT/export holds the model "
     "as it was then"),
    ("  - quantize: {}\n  - prune: {target: {ratio: 0.5}}\n  - evaluate: {}\n",
     "stage 1 (quantize) writes OUT/quantize before stage 2 (prune) changes the model"),
    ("  - train: {epochs: 1}\n  - search: {target: {macs: 0.5}}\n",
     "the search stage is last: its allocation is applied by no later prune/decompose stage"),
    ("  - search: {target: {macs: 0.5}}\n  - search: {target: {macs: 0.25}}\n  - prune: {allocation: search}\n",
     "the search stage is stage 1: its allocation is applied by no later prune/decompose stage with allocation: "
     "search before stage 2 (search) replaces it"),
], ids=["export then prune", "quantize then prune", "search last", "search replaced by a later search"])
def test_a_stage_that_makes_an_earlier_output_stale_is_a_warning(stages: str, warning: str, tmp_path: Path) -> None:
    file = tmp_path / "r.yaml"
    file.write_text("model: simple_cnn\nstages:\n" + stages)
    with pytest.warns(UserWarning, match=re.escape(warning)):
        load_recipe(file)


def test_an_output_written_last_is_no_warning(tmp_path: Path) -> None:
    file = tmp_path / "r.yaml"
    file.write_text("model: simple_cnn\nstages:\n  - search: {target: {macs: 0.5}}\n  - prune: {allocation: search}\n"
                    "  - quantize: {}\n  - evaluate: {}\n  - export: {}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_recipe(file)


def test_cli_run_prints_the_table_and_errors_in_one_line(tiny_npz: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "r.yaml"
    file.write_text(yaml.safe_dump(_tiny(RECIPES[[p.stem for p in RECIPES].index("simple_cnn")], tiny_npz)))
    assert main(["run", str(file), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1. train" in out and "3. finetune" in out and "results:" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN["ratio 1.5"][0])
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml:4" in err[0]


def test_resume_after_a_decompose_stage(tiny_npz: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(_tiny(RECIPES[[p.stem for p in RECIPES].index("prune_then_decompose")], tiny_npz))
    whole = run_recipe(recipe, out_dir=tmp_path / "whole", progress=False)["model"]
    run_recipe(recipe, out_dir=tmp_path / "split", progress=False, stop_after=3)  # train, prune, decompose
    resumed = run_recipe(recipe, out_dir=tmp_path / "split", progress=False, resume=True)["model"]
    a, b = whole.state_dict(), resumed.state_dict()
    assert any(isinstance(m, nn.Sequential) for m in resumed.modules())  # factorised layers came back
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_structural_stage_after_decompose_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "r.yaml"
    file.write_text("model: vgg_small\nstages:\n  - decompose: {method: svd, energy: 0.9}\n"
                    "  - prune: {target: {ratio: 0.3}}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:4: stages\[1\]: structural 'prune' cannot follow"):
        load_recipe(file)


def test_distillation_teacher_is_the_trained_model_also_after_resume(tiny_npz: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe that trains first distils from the trained model (not the random init it was built
    with), in the gates stage too, and a resumed run reloads that same teacher."""
    from prunekit.recipes import stages
    from prunekit.recipes.checkpoint import load_state

    teachers: list[dict[str, torch.Tensor]] = []

    class Recording(stages.Distiller):
        def __init__(self, teacher: nn.Module, **kwargs: float) -> None:
            super().__init__(teacher, **kwargs)
            teachers.append({k: v.clone() for k, v in self.teacher.state_dict().items()})

    monkeypatch.setattr(stages, "Distiller", Recording)
    tiny = {"epochs": 1, "max_steps_per_epoch": 2}
    recipe = parse_recipe({"model": "simple_cnn", "data": str(tiny_npz), "seed": 0, "stages": [
        {"train": {**tiny, "lr": 0.05}},
        {"gates": {**tiny, "target": {"macs": 0.6}, "warmup_steps": 1, "distill": {"alpha": 0.5}}},
        {"finetune": {**tiny, "distill": {}}}]})
    initial = run_recipe(recipe, out_dir=tmp_path / "probe", progress=False, stop_after=0)["model"].state_dict()
    run_recipe(recipe, out_dir=tmp_path / "whole", progress=False)
    trained = load_state(tmp_path / "whole" / "checkpoints" / "stage-01-train")[0].state_dict()
    assert len(teachers) == 2  # the gates stage and the finetune stage each distil
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)  # the train stage changed it
    for teacher in teachers:
        assert teacher.keys() == trained.keys() and all(torch.equal(teacher[k], trained[k]) for k in trained)

    teachers.clear()
    run_recipe(recipe, out_dir=tmp_path / "split", progress=False, stop_after=2)
    teachers.clear()
    run_recipe(recipe, out_dir=tmp_path / "split", progress=False, resume=True)  # only the finetune runs
    assert len(teachers) == 1 and all(torch.equal(teachers[0][k], trained[k]) for k in trained)
