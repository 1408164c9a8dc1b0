"""Every command and recipe stage on a user's own model and data: a tiny Llama on a text file, and a
model from the user's own ``.py`` file on a folder of PNG images. Combinations that cannot work fail
before any training, in one line that says what to do instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import prunekit
from acceptance._acceptance_fixtures import (
    write_image_folder,
    write_model_file,
    write_text_file,
    write_tiny_causal_lm,
)
from prunekit.cli import build_parser, main
from prunekit.errors import ConfigError
from prunekit.io import read_manifest
from prunekit.workflows import Measure
from prunekit.workflows.common import load_model
from prunekit.workflows.inputs import EXAMPLE_TOKENS, model_example
from prunekit.workflows.profile import profile
from prunekit.workflows.prune import prune
from prunekit.workflows.sparsify import sparsify

pytest.importorskip("transformers")

_QUICK = ["--batch-sizes", "1", "--no-onnx", "--min-time-s", "0"]
_TUNE = ["--baseline-epochs", "0", "--finetune-epochs", "1", "--max-steps-per-epoch", "2", "--no-progress"]


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """``(hf:FOLDER spec of a tiny Llama, the text file)``."""
    root = tmp_path_factory.mktemp("text")
    corpus = write_text_file(root / "corpus.txt", repeats=10)
    return f"hf:{write_tiny_causal_lm(root / 'lm', corpus, architecture='llama')}", corpus


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """``(my_model.py:build spec, a folder of PNG images, one sub-folder per class)``."""
    root = tmp_path_factory.mktemp("images")
    return f"{write_model_file(root / 'my_model.py')}:build", write_image_folder(root / "images", per_class=4)


def _results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def _run(argv: list[str]) -> None:
    assert main(argv) == 0, argv


def _zeros(model: torch.nn.Module, name: str) -> float:
    return float((model.get_parameter(name) == 0).float().mean())


# ---- a tiny Llama on a text file ------------------------------------------------------------------


@pytest.mark.parametrize("method", [None, "wanda"])
def test_sparsify_a_llama_on_text(text: tuple[str, Path], tmp_path: Path, method: str | None) -> None:
    spec, corpus = text
    extra = ["--method", method] if method else []
    _run(["sparsify", "--model", spec, "--data", str(corpus), "--sparsity", "0.5", *extra, *_TUNE, *_QUICK,
          "--out", str(tmp_path)])
    results = _results(tmp_path)
    assert results["task"] == "causal_lm" and results["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(results["before"]["metrics"]) >= {"perplexity"} and results["after"]["metrics"]["perplexity"] > 1
    loaded = prunekit.load(tmp_path / "model")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert _zeros(loaded, "model.layers.0.mlp.up_proj.weight") == pytest.approx(0.5)


def test_decompose_a_llama_on_text_and_eval_reads_it_back(text: tuple[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec, corpus = text
    _run(["decompose", "--model", spec, "--data", str(corpus), "--task", "causal_lm", "--method", "svd",
          "--rank", "8", *_TUNE, *_QUICK, "--out", str(tmp_path / "dc")])
    results = _results(tmp_path / "dc")
    assert results["task"] == "causal_lm" and results["after"]["params"] < results["before"]["params"]
    capsys.readouterr()
    _run(["eval", "--model", str(tmp_path / "dc"), "--data", str(corpus)])
    assert f"perplexity {results['after']['metrics']['perplexity']:.4g}" in capsys.readouterr().out


def test_profile_a_llama_with_and_without_data(text: tuple[str, Path]) -> None:
    spec, corpus = text
    quick = {"batch_sizes": (1,), "backends": ("torch",), "min_time_s": 0.0}
    with_data, results = profile(spec, str(corpus), measure=Measure(**quick))
    assert results["task"] == "causal_lm" and with_data.metrics["perplexity"] > 1
    # NOTE: no data: a block of token ids; the config's ...ForCausalLM picks the class.
    alone, results = profile(spec, measure=Measure(**quick))
    assert results["task"] == "causal_lm" and 0 < alone.macs < with_data.macs
    assert alone.params == with_data.params


def test_export_a_llama_without_data_runs_in_onnx_runtime(text: tuple[str, Path], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    spec, _ = text
    _run(["export", "--model", spec, "--out", str(tmp_path)])
    loaded = prunekit.load(tmp_path / "model").eval()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    ids = torch.randint(0, loaded.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    (logits, *_) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), loaded(ids).logits, atol=1e-4)
    assert _results(tmp_path)["task"] == "causal_lm"
    assert loaded.config.use_cache  # NOTE: the cache was only off while exporting.


def test_partition_a_llama_on_text(text: tuple[str, Path], tmp_path: Path) -> None:
    spec, corpus = text
    _run(["partition", "--model", spec, "--data", str(corpus), "--task", "causal_lm", "--stages", "2",
          "--min-time-s", "0", "--no-onnx", "--no-progress", "--out", str(tmp_path)])
    results = _results(tmp_path)
    assert results["check"]["exact"] and len(results["stages"]) == 2


def test_a_recipe_trains_prunes_sparsifies_and_evaluates_a_llama(text: tuple[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    transformers = pytest.importorskip("transformers")
    spec, corpus = text
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {spec}\ndata: {corpus}\ntask: causal_lm\nstages:\n"
                      "  - train: {epochs: 1, max_steps_per_epoch: 2}\n"
                      "  - prune: {target: {ratio: 0.5}, importance: l2, round_to: 1}\n"
                      "  - sparsify: {sparsity: 0.5, method: wanda}\n"
                      "  - evaluate: {}\n")
    _run(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"])
    results = _results(tmp_path / "run")
    evaluated = results["stages"][-1]
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["stage", "params", "MACs", "size", "MB", "perplexity", "seconds"]
    assert evaluated["summary"]["task"] == "causal_lm"
    assert evaluated["summary"]["metrics"]["perplexity"] == pytest.approx(evaluated["profile"]["metrics"]["perplexity"])
    assert results["stages"][1]["profile"]["params"] < results["initial"]["params"]
    assert results["stages"][2]["summary"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "model")("the model").input_ids
    assert sum(p.numel() for p in theirs.parameters()) == evaluated["profile"]["params"]


def test_without_data_the_example_input_comes_from_the_model(text: tuple[str, Path]) -> None:
    spec, _ = text
    llama = load_model(spec, task="causal_lm")
    ids = model_example(llama, spec, batch_size=2)
    assert ids.shape == (2, EXAMPLE_TOKENS) and not ids.is_floating_point() and int(ids.max()) < llama.config.vocab_size
    assert model_example(load_model("simple_cnn"), "simple_cnn").shape == (1, 1, 28, 28)
    pytest.importorskip("timm")
    grey = load_model("timm:resnet18", in_channels=1)
    assert model_example(grey, "timm:resnet18").shape == (1, 1, 224, 224)  # NOTE: pretrained_cfg's size, its channels.


# ---- the user's own model file on a folder of PNG images ---------------------------------------


def test_sparsify_with_taylor_on_an_image_folder(images: tuple[str, Path], tmp_path: Path) -> None:
    spec, folder = images
    _run(["sparsify", "--model", spec, "--data", str(folder), "--importance", "taylor", "--sparsity", "0.5",
          "--batch-size", "16", *_TUNE, *_QUICK, "--out", str(tmp_path)])
    results = _results(tmp_path)
    assert results["task"] == "classification" and results["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 <= results["after"]["accuracy"] <= 1  # NOTE: measured, not the None of a profile without data
    assert _zeros(prunekit.load(tmp_path / "model"), "features.3.weight") == pytest.approx(0.5)


def test_decompose_profile_export_and_partition_a_model_file_on_images(images: tuple[str, Path],
                                                                        tmp_path: Path) -> None:
    spec, folder = images
    _run(["decompose", "--model", spec, "--data", str(folder), "--method", "tucker", "--rank", "0.5",
          "--batch-size", "16", *_TUNE, *_QUICK, "--out", str(tmp_path / "dc")])
    decomposed = _results(tmp_path / "dc")
    assert decomposed["after"]["macs"] < decomposed["before"]["macs"]
    _run(["profile", "--model", str(tmp_path / "dc"), "--data", str(folder), "--task", "classification",
          *_QUICK, "--out", str(tmp_path / "pr")])
    profiled = _results(tmp_path / "pr")["profile"]
    assert profiled["macs"] == decomposed["after"]["macs"]
    assert profiled["accuracy"] == pytest.approx(decomposed["after"]["accuracy"])
    _run(["export", "--model", spec, "--data", str(folder), "--out", str(tmp_path / "ex")])
    exported = prunekit.load(tmp_path / "ex" / "model")
    assert type(exported).__name__ == "Net" and (tmp_path / "ex" / "model.onnx").is_file()
    _run(["partition", "--model", spec, "--data", str(folder), "--stages", "2", "--min-time-s", "0",
          "--no-onnx", "--no-progress", "--out", str(tmp_path / "pa")])
    assert _results(tmp_path / "pa")["check"]["exact"]


def test_a_recipe_trains_prunes_sparsifies_and_evaluates_a_model_file(images: tuple[str, Path],
                                                                       tmp_path: Path) -> None:
    spec, folder = images
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {spec}\ndata: {folder}\nstages:\n"
                      "  - train: {epochs: 1, batch_size: 16}\n"
                      "  - prune: {target: {macs: 0.5}, importance: taylor, round_to: 1}\n"
                      "  - sparsify: {sparsity: 0.5, importance: taylor}\n"
                      "  - evaluate: {}\n")
    _run(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"])
    results = _results(tmp_path / "run")
    assert results["stages"][1]["profile"]["macs"] <= 0.5 * results["initial"]["macs"] * 1.02
    assert results["stages"][2]["summary"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    evaluated = results["stages"][-1]
    assert evaluated["summary"]["task"] == "classification"
    assert evaluated["summary"]["metrics"]["accuracy"] == pytest.approx(evaluated["profile"]["accuracy"])
    assert type(prunekit.load(tmp_path / "run" / "model")).__name__ == "Net"


# ---- combinations that cannot work: one line, before any training ----------------------------------


def test_one_shot_taylor_on_unlabelled_text_is_refused_before_training(text: tuple[str, Path],
                                                                       tmp_path: Path) -> None:
    spec, corpus = text
    with pytest.raises(ConfigError, match=r"sparsify: importance 'taylor' needs gradients of a labelled loss "
                                          r".* causal_lm batches without labels\. Use importance magnitude"):
        sparsify(spec, str(corpus), stage={"importance": "taylor"}, out_dir=tmp_path / "sp")
    with pytest.raises(ConfigError, match=r"prune: importance 'taylor' needs gradients .* Use a data-free "
                                          r"importance \(l2, l1, fpgm\)"):
        prune(spec, str(corpus), stage={"target": {"ratio": 0.5}, "importance": "taylor"},
              out_dir=tmp_path / "pr")
    assert not (tmp_path / "sp").exists() and not (tmp_path / "pr").exists()


def test_a_recipe_refuses_taylor_on_text_before_its_first_stage(text: tuple[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec, corpus = text
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {spec}\ndata: {corpus}\nstages:\n"
                      "  - train: {epochs: 1}\n"
                      "  - sparsify: {importance: taylor}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sparsify: importance 'taylor' needs gradients of a labelled loss" in error
    assert not (tmp_path / "run").exists()


def test_a_model_that_does_not_say_its_input_asks_for_data(images: tuple[str, Path]) -> None:
    spec, _ = images
    with pytest.raises(ConfigError, match=r"profile: cannot tell what input '.*my_model\.py:build' takes "
                                          r"without data .* Pass --data with a sample of its inputs"):
        profile(spec)


def test_a_saved_folder_says_its_input_from_the_data_it_was_made_for(images: tuple[str, Path], tmp_path: Path) -> None:
    """A folder pruned from a model file on images profiles and exports without --data: its manifest
    records the input shape (before, the same error as the model file)."""
    spec, folder = images
    prune(spec, str(folder), stage={"target": {"ratio": 0.5}}, baseline_epochs=0, finetune_epochs=0,
          measure=Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0), out_dir=tmp_path / "run")
    measured, _ = profile(str(tmp_path / "run"), measure=Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0))
    assert measured.macs > 0 and measured.params < 0.5 * sum(p.numel() for p in load_model(spec).parameters())


def test_a_recipe_names_an_unknown_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: simple_cnn\ntask: causal_llm\nstages:\n  - evaluate: {}\n")
    assert main(["run", str(recipe), "--check"]) == 2
    assert "unknown task 'causal_llm'; expected one of causal_lm, classification, embedding" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sparsify", "decompose", "profile", "export", "partition", "prune",
                                     "train", "eval"])
def test_every_command_that_scores_a_model_takes_task(command: str) -> None:
    args = build_parser().parse_args([command, "--model", "simple_cnn", "--task", "causal_lm"])
    assert args.task == "causal_lm"


def test_a_task_that_does_not_fit_the_model_fails_before_anything_runs(images: tuple[str, Path]) -> None:
    spec, folder = images
    with pytest.raises(ConfigError, match=r"The task 'causal_lm' does not fit Net: it needs logits \[batch, "
                                          r"seq, vocab\]"):
        sparsify(spec, str(folder), stage={}, task="causal_lm")
    with pytest.raises(ConfigError, match=r"The task 'causal_lm' does not fit Net"):
        profile(spec, str(folder), task="causal_lm")


def test_a_text_recipe_resumed_after_any_stage_ends_with_the_same_weights(text: tuple[str, Path],
                                                                         tmp_path: Path) -> None:
    from prunekit.recipes.runner import run_recipe

    spec, corpus = text
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {spec}\ndata: {corpus}\nstages:\n"
                      "  - train: {epochs: 1, max_steps_per_epoch: 2}\n"
                      "  - prune: {target: {ratio: 0.5}, round_to: 1}\n"
                      "  - finetune: {epochs: 1, max_steps_per_epoch: 2}\n")
    whole = run_recipe(recipe, out_dir=tmp_path / "whole", progress=False)["model"]
    run_recipe(recipe, out_dir=tmp_path / "parts", progress=False, stop_after=2)
    resumed = run_recipe(recipe, out_dir=tmp_path / "parts", progress=False, resume=True)["model"]
    assert whole.state_dict().keys() == resumed.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


# ---- photos as they come: mixed sizes and modes, a factory that takes only the class count ------


def test_photos_of_mixed_sizes_are_resized_by_image_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real photo folders hold images of many sizes (and grey, RGB, RGBA): without --image-size the
    error names the option; with it they are resized and pruned. The factory takes ``num_classes``
    only: prunekit does not force ``in_channels`` on it (the model is checked against the data)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i, mode in enumerate(["RGB", "L", "RGBA", "RGB"]):
            h, w = (int(v) for v in rng.integers(12, 40, 2))
            pixels = rng.integers(0, 255, (h, w, {"RGB": 3, "L": 1, "RGBA": 4}[mode]), dtype=np.uint8)
            Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(tmp_path / "photos" / label / f"{i}.png")
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build(num_classes=5):\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),\n"
        "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n")
    argv = ["prune", "--model", f"{tmp_path / 'net.py'}:build", "--data", str(tmp_path / "photos"),
            "--ratio", "0.5", *_TUNE, *_QUICK]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "Fix: pass --image-size" in capsys.readouterr().err and not (tmp_path / "a" / "results.json").exists()
    _run([*argv, "--image-size", "16x20", "--out", str(tmp_path / "b")])
    results = _results(tmp_path / "b")
    assert results["after"]["params"] < results["before"]["params"]
    assert prunekit.load(tmp_path / "b" / "model")(torch.zeros(1, 3, 16, 20)).shape == (1, 2)
    recipe = tmp_path / "recipe.yaml"  # NOTE: a recipe's data takes the size too
    recipe.write_text(f"model: {tmp_path / 'net.py'}:build\ndata: {{name: {tmp_path / 'photos'}, image_size: [16, 20]}}\n"
                      "stages:\n  - prune: {target: {ratio: 0.5}, finetune: {epochs: 0}}\n  - evaluate: {}\n")
    _run(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"])
    assert prunekit.load(tmp_path / "run" / "model")(torch.zeros(1, 3, 16, 20)).shape == (1, 2)
    # NOTE: the saved folders remember the size: eval and export need no --image-size again
    for folder in ("b", "run"):
        made_for = read_manifest(tmp_path / folder / "model").data
        assert {k: made_for[k] for k in ("name", "input_shape", "class_names")} == \
            {"name": "photos", "input_shape": [3, 16, 20], "class_names": ["cat", "dog"]}
        assert len(made_for["mean"]) == len(made_for["std"]) == 3 and made_for["pixel_scale"] == 1 / 255
    capsys.readouterr()
    _run(["eval", "--model", str(tmp_path / "b"), "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "e")])
    assert "prunekit eval: warning: " in (err := capsys.readouterr().err)  # NOTE: the CLI's one-line warning
    assert "resized to 16x20, the size the model was made for" in err
    assert _results(tmp_path / "e")["metrics"]["accuracy"] == results["after"]["accuracy"]


def test_image_size_option_parses_n_and_h_by_w() -> None:
    parser = build_parser()
    base = ["prune", "--model", "simple_cnn"]
    assert parser.parse_args([*base, "--image-size", "32"]).image_size == 32
    assert parser.parse_args([*base, "--image-size", "24x40"]).image_size == (24, 40)
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--image-size", "0x3"])


# ---- the dense model a pruned folder records: its trained weights, not a new random init ---------


def test_a_pruned_folder_records_the_dense_weights_it_was_cut_from(images: tuple[str, Path], tmp_path: Path) -> None:
    """quantize and export rebuild the dense model from the pruned folder's manifest to compare with
    it. Before, the record named only the architecture: 'dense fp32' was a new random init (14 %
    where the trained model scored 43 %). A baseline trained in the run is kept as
    baseline.safetensors and named; a trained folder (prunekit train --out) is its own dense weights."""
    from prunekit.io import read_manifest
    from prunekit.models import from_source

    spec, folder = images
    quick = {"baseline_epochs": 1, "finetune_epochs": 0, "out_dir": None,
             "measure": Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0)}
    stage = {"target": {"ratio": 0.5}}
    pruned = prune(spec, str(folder), stage=stage, **{**quick, "out_dir": tmp_path / "a"})
    source = read_manifest(tmp_path / "a" / "model").source
    assert source["kwargs"]["weights"] == str((tmp_path / "a" / "baseline.safetensors").absolute())
    dense = from_source(source).eval()
    from safetensors.torch import load_file

    baseline = load_file(tmp_path / "a" / "baseline.safetensors")
    assert baseline and all(torch.equal(dense.state_dict()[k], v) for k, v in baseline.items())
    assert pruned["before"]["params"] == sum(p.numel() for p in dense.parameters())
    from prunekit.workflows.quantize import _dense_source

    (tmp_path / "a" / "baseline.safetensors").rename(tmp_path / "moved.safetensors")  # NOTE: the folder alone
    with pytest.warns(UserWarning, match="dense weights .* are not there any more"):
        assert _dense_source(str(tmp_path / "a")) is not None
    _run(["train", "--model", spec, "--data", str(folder), "--epochs", "1", "--max-steps-per-epoch", "2",
          "--no-progress", *_QUICK, "--out", str(tmp_path / "t")])
    prune(str(tmp_path / "t"), str(folder), stage=stage, **{**quick, "baseline_epochs": 0, "out_dir": tmp_path / "b"})
    trained = read_manifest(tmp_path / "b" / "model").source["kwargs"]["weights"]
    assert trained == str((tmp_path / "t" / "model" / "model.safetensors").absolute())
    assert not (tmp_path / "b" / "baseline.safetensors").exists()


def test_a_hugging_face_image_classifier_on_an_image_folder_is_built_with_its_head(images: tuple[str, Path],
                                                                                  tmp_path: Path) -> None:
    """Before, images gave no task, and hf: built the bare AutoModel: the classifier's weights were
    dropped and the run failed ("returned BaseModelOutputWithPooling; expected logits")."""
    transformers = pytest.importorskip("transformers")
    _, folder = images
    config = transformers.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    results = prune(f"hf:{tmp_path / 'vit'}", str(folder), stage={"target": {"ratio": 0.5}}, baseline_epochs=0,
                    finetune_epochs=0, measure=Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0),
                    out_dir=tmp_path / "run")
    assert results["task"] == "classification" and results["after"]["accuracy"] is not None
    assert type(prunekit.load(tmp_path / "run" / "model")).__name__ == "ViTForImageClassification"


def _vit(folder: Path, id2label: dict[int, str] | None) -> str:
    transformers = pytest.importorskip("transformers")
    labels = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    config = transformers.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64, num_labels=10, **labels)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return f"hf:{folder}"


def test_an_image_classifier_scores_the_data_in_its_own_label_order(images: tuple[str, Path], tmp_path: Path) -> None:
    """A trained head whose id2label is not in sorted-folder order was scored against the wrong
    classes: the folder 'class_0' was label 0 while the model's output 0 is 'Class-9'."""
    from prunekit.workflows.common import build

    spec, folder = images
    _, plain = build(spec, str(folder))
    net, ordered = build(_vit(tmp_path / "vit", {i: f"Class-{9 - i}" for i in range(10)}), str(folder))
    assert ordered.class_names == tuple(f"class_{9 - i}" for i in range(10))
    for split in ("train", "val", "test"):
        (x_plain, y_plain), (x, y) = getattr(plain, split).tensors, getattr(ordered, split).tensors
        assert torch.equal(x, x_plain) and torch.equal(y, 9 - y_plain)
    assert net.config.id2label[0] == "Class-9"


def test_an_image_classifier_with_other_class_names_is_warned_about(images: tuple[str, Path], tmp_path: Path) -> None:
    from prunekit.workflows.common import build

    spec, folder = images
    _, plain = build(spec, str(folder))
    with pytest.warns(UserWarning, match=r"names its outputs \('cat', 'dog'.*but data .* has the classes \('class_0'"):
        _, kept = build(_vit(tmp_path / "vit", {i: n for i, n in enumerate(
            ["cat", "dog", "fox", "owl", "ant", "bee", "cow", "pig", "hen", "elk"])}), str(folder))
    assert torch.equal(kept.test.tensors[1], plain.test.tensors[1])


def test_a_classifier_without_class_names_takes_the_data_s(images: tuple[str, Path], tmp_path: Path) -> None:
    """transformers' placeholders (LABEL_0...) give way to the folder names, which save_pretrained keeps."""
    from prunekit.workflows.common import build

    _, folder = images
    net, splits = build(_vit(tmp_path / "vit", None), str(folder))
    assert net.config.id2label == dict(enumerate(splits.class_names)) and splits.class_names[3] == "class_3"
    assert net.config.label2id["class_3"] == 3


def test_a_saved_model_s_class_names_order_the_data(tmp_path: Path) -> None:
    """A folder trained on 'Cat', 'apple' (sorted: upper case first) scores a folder named 'cat',
    'apple' (sorted: 'apple' first) in its own order, not the new folder's."""
    from prunekit.data import DataSplits
    from prunekit.workflows.common import in_model_order

    x = torch.zeros(3, 1, 2, 2)
    split = torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 1]))
    splits = DataSplits("d", split, split, split, num_classes=2, input_shape=(1, 2, 2), class_names=("apple", "cat"))
    ordered = in_model_order(torch.nn.Linear(4, 2), splits, "runs/a", "./fruit", ["Cat", "apple"])
    assert ordered.class_names == ("cat", "apple") and ordered.test.tensors[1].tolist() == [1, 0, 0]
    assert in_model_order(torch.nn.Linear(4, 2), splits, "runs/a", "./fruit", None) is splits
