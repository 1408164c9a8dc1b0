"""A new user's three paths, each one command, and the saved result loaded back with the same outputs:
a timm model on a folder of real images, a model from the user's own file through a recipe, and a
Hugging Face causal LM fine-tuned on a plain text file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import prunekit
from _acceptance_fixtures import (
    write_image_folder,
    write_model_file,
    write_text_file,
    write_tiny_causal_lm,
)
from prunekit.cli import main

_QUICK = ["--batch-sizes", "1", "--no-onnx", "--min-time-s", "0", "--no-progress"]


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _ffn_width(config) -> int:  # type: ignore[no-untyped-def]
    """The feed-forward width: ``intermediate_size``, or GPT-2's ``n_inner`` (None: 4 x hidden)."""
    return getattr(config, "intermediate_size", None) or config.n_inner or 4 * config.hidden_size


def test_timm_resnet18_on_an_image_folder_pruned_to_half_the_macs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    images = write_image_folder(tmp_path / "images", per_class=8)
    out = tmp_path / "r18"
    assert main(["prune", "--model", "timm:resnet18", "--data", str(images), "--target-macs", "0.5",
                 "--baseline-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16", *_QUICK,
                 "--out", str(out)]) == 0
    results = _results(out)
    assert 0.48 <= results["after"]["macs"] / results["before"]["macs"] <= 0.51
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["source"] == {"spec": "timm:resnet18", "kwargs": {"num_classes": 10, "in_channels": 1,
                                                                      "weights": str(out / "baseline.safetensors")}}
    assert [t["kind"] for t in manifest["transforms"]] == ["prune"]
    capsys.readouterr()

    # NOTE: the saved folder computes what the pruned model computed: same accuracy and loss on the
    # same test images, read back by `eval --model OUT` (which goes through prunekit.load).
    assert main(["eval", "--model", str(out), "--data", str(images), "--out", str(tmp_path / "eval")]) == 0
    metrics = _results(tmp_path / "eval")["metrics"]
    assert metrics["accuracy"] == pytest.approx(results["after"]["accuracy"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(results["after"]["loss"], rel=1e-5)
    loaded = prunekit.load(out / "model")
    assert sum(p.numel() for p in loaded.parameters()) == results["after"]["params"]
    assert loaded(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_model_from_the_users_own_file_through_a_recipe(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", per_class=8)
    model_file = write_model_file(tmp_path / "my_model.py")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {model_file}:build\ndata: {images}\nstages:\n"
                      "  - train: {epochs: 1, batch_size: 16}\n"
                      "  - prune: {target: {macs: 0.5}, importance: l2, round_to: 1}\n"
                      "  - finetune: {epochs: 1, batch_size: 16}\n"
                      "  - evaluate: {}\n")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--no-progress"]) == 0
    results = _results(out)
    last = results["stages"][-1]["profile"]
    assert last["macs"] <= 0.5 * results["initial"]["macs"] * 1.02
    assert main(["eval", "--model", str(out), "--data", str(images), "--out", str(tmp_path / "eval")]) == 0
    metrics = _results(tmp_path / "eval")["metrics"]  # NOTE: read back through prunekit.load
    assert metrics["accuracy"] == pytest.approx(last["accuracy"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(last["loss"], rel=1e-5)
    loaded = prunekit.load(out / "model")
    assert type(loaded).__name__ == "Net" and sum(p.numel() for p in loaded.parameters()) == last["params"]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_a_hugging_face_causal_lm_pruned_and_fine_tuned_on_a_text_file(
        tmp_path: Path, architecture: str, capsys: pytest.CaptureFixture[str]) -> None:
    transformers = pytest.importorskip("transformers")
    corpus = write_text_file(tmp_path / "corpus.txt")
    source = write_tiny_causal_lm(tmp_path / "lm", corpus, architecture=architecture)
    dense = transformers.AutoModelForCausalLM.from_pretrained(source)
    heads, ffn = dense.config.num_attention_heads, _ffn_width(dense.config)
    out = tmp_path / "pruned"
    capsys.readouterr()
    assert main(["prune", "--model", f"hf:{source}", "--data", str(corpus), "--ratio", "0.5",
                 "--baseline-epochs", "0", "--finetune-epochs", "1", *_QUICK, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    perplexity_row = next(line for line in printed.splitlines() if line.startswith("perplexity"))
    before, after = (float(v) for v in perplexity_row.split()[1:3])
    results = _results(out)
    assert results["task"] == "causal_lm" and len(results["finetune"]["history"]) == 1
    assert before == pytest.approx(results["before"]["metrics"]["perplexity"], rel=1e-3)
    assert after == pytest.approx(results["after"]["metrics"]["perplexity"], rel=1e-3)

    # NOTE: uniform widths, so transformers' own loader reads the folder; the config follows the layers.
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out / "model").eval()
    ours = prunekit.load(out / "model").eval()
    assert theirs.config.num_attention_heads == heads // 2
    assert _ffn_width(theirs.config) == ffn // 2
    ids = torch.randint(0, dense.config.vocab_size, (2, 16))
    assert torch.allclose(theirs(ids).logits, ours(ids).logits, atol=1e-6)
    assert transformers.AutoTokenizer.from_pretrained(out / "model")("the model").input_ids
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", str(corpus)]) == 0
    assert f"perplexity {results['after']['metrics']['perplexity']:.4g}" in capsys.readouterr().out


def test_sentence_embeddings_are_scored_by_cosine_to_the_dense_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    corpus = write_text_file(tmp_path / "corpus.txt")
    source = write_tiny_causal_lm(tmp_path / "lm", corpus, architecture="llama")
    out = tmp_path / "pruned"
    assert main(["prune", "--model", f"hf:{source}", "--task", "embedding", "--data", str(corpus),
                 "--ratio", "0.3", "--baseline-epochs", "0", "--finetune-epochs", "0", *_QUICK,
                 "--out", str(out)]) == 0
    results = _results(out)
    assert results["task"] == "embedding"
    assert results["before"]["metrics"]["cosine"] == pytest.approx(1.0, abs=1e-5)  # the teacher itself
    assert results["after"]["metrics"]["cosine"] < 0.999
    assert main(["eval", "--model", str(out), "--task", "embedding", "--data", str(corpus),
                 "--out", str(tmp_path / "eval")]) == 0
    cosine = _results(tmp_path / "eval")["metrics"]["cosine"]
    assert cosine == pytest.approx(results["after"]["metrics"]["cosine"], rel=1e-4)
