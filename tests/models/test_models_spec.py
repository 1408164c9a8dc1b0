"""Model specs: every form resolves to a working model, and every bad spec gets a one-line error."""

from __future__ import annotations

from typing import Any

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit import models
from prunekit.tasks import Classification
from prunekit.errors import (
    ConfigError,
    DataError,
    DataNotFoundError,
    MissingDependencyError,
    UnknownNameError,
)
from prunekit.io import save_weights

FACTORY_FILE = """
import torch
from torch import nn
from tiny_layers import Block   # a sibling file: the file's folder is on sys.path while it runs


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.block = Block(4, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.block(x))


def build(width=8):
    return Net(width)


def build_dict():
    return {"not": "a module"}


def helper():
    return None
"""
SIBLING_FILE = """
from torch import nn

class Block(nn.Sequential):
    def __init__(self, a, b):
        super().__init__(nn.Linear(a, b), nn.ReLU())
"""


def _same_architecture(a: nn.Module, b: nn.Module) -> bool:
    """Same class name (a file factory's classes are new objects each run) and tensor shapes."""
    shapes = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    return type(a).__name__ == type(b).__name__ and shapes == {k: tuple(v.shape) for k, v in b.state_dict().items()}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    (tmp_path / "tiny_layers.py").write_text(SIBLING_FILE)
    path = tmp_path / "my_model.py"
    path.write_text(FACTORY_FILE)
    return path


# ---- zoo names --------------------------------------------------------------------------------

def test_zoo_name_resolves_and_round_trips_through_its_source() -> None:
    model = models.resolve("resnet20", num_classes=3, in_channels=1, task="classification")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    record = models.source_of("resnet20", num_classes=3, in_channels=1, task="classification")
    assert record == {"spec": "resnet20", "kwargs": {"num_classes": 3, "in_channels": 1,
                                                      "task": "classification"}}
    assert json.loads(json.dumps(record)) == record
    assert _same_architecture(models.from_source(record), model)


def test_options_set_to_none_mean_the_default() -> None:
    model = models.resolve("simple_cnn", num_classes=None, in_channels=None)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert models.source_of("simple_cnn", weights=None, num_classes=None) == {"spec": "simple_cnn", "kwargs": {}}


def test_unknown_zoo_name_suggests_and_lists_the_other_forms() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet20'.*timm:NAME, hf:PATH"):
        models.resolve("resnt20")


def test_zoo_weights_from_safetensors_and_pth(tmp_path: Path) -> None:
    source = models.create("lenet5", num_classes=4)
    save_weights(source, tmp_path / "w.safetensors")
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        assert _same_weights(models.resolve("lenet5", num_classes=4, weights=tmp_path / name), source)


# ---- timm -------------------------------------------------------------------------------------

def test_timm_resnet18_grayscale_ten_classes(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    model = models.resolve("timm:resnet18", num_classes=10, in_chans=1).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    models.check_task_fits(model, "classification", torch.randn(2, 1, 32, 32))
    torch.save(model.state_dict(), tmp_path / "w.pth")
    same = models.resolve("timm:resnet18", num_classes=10, in_channels=1, weights=tmp_path / "w.pth")
    assert _same_weights(same, model)
    record = models.source_of("timm:resnet18", num_classes=10, in_chans=1)
    assert record["spec"] == "timm:resnet18"
    assert _same_architecture(models.from_source(record), model)


def test_timm_imagenet_weights_fit_a_new_head(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    imagenet = models.resolve("timm:resnet18")  # 1000 classes, 3 channels
    save_weights(imagenet, tmp_path / "in1k.safetensors")
    model = models.resolve("timm:resnet18", num_classes=10, weights=tmp_path / "in1k.safetensors")
    assert torch.equal(model.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)
    assert model.fc.weight.shape == (10, 512)


def test_timm_errors() -> None:
    pytest.importorskip("timm")
    with pytest.raises(UnknownNameError, match="Unknown timm model 'timm:resnet1'. Did you mean 'resnet18'"):
        models.resolve("timm:resnet1")
    with pytest.raises(ConfigError, match="never downloads"):
        models.resolve("timm:resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="in_channels=1 and in_chans=3 disagree"):
        models.resolve("timm:resnet18", in_channels=1, in_chans=3)
    with pytest.raises(ConfigError, match="names nothing after 'timm:'"):
        models.resolve("timm:")


def test_missing_timm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # NOTE: makes `import timm` fail.
    with pytest.raises(MissingDependencyError, match=r"timm:resnet18.*pip install 'prunekit\[timm\]'"):
        models.resolve("timm:resnet18")


# ---- Hugging Face -----------------------------------------------------------------------------

@pytest.fixture
def gpt2_folder(tmp_path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                            bos_token_id=0, eos_token_id=0).save_pretrained(folder)
    return folder


def test_hf_config_folder_with_task_causal_lm(gpt2_folder: Path) -> None:
    model = models.resolve(f"hf:{gpt2_folder}", task="causal_lm")
    assert type(model).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, 50, (2, 7))
    models.check_task_fits(model, "causal_lm", {"input_ids": ids})
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 7, 50) and out.loss.dim() == 0
    assert type(models.resolve(f"hf:{gpt2_folder / 'config.json'}", task="causal_lm")) is type(model)
    assert type(models.resolve(f"hf:{gpt2_folder}")).__name__ == "GPT2Model"
    classifier = models.resolve(f"hf:{gpt2_folder}", task="classification", num_classes=4)
    assert classifier.config.num_labels == 4 and type(classifier).__name__ == "GPT2ForSequenceClassification"


def test_hf_llama_config_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=2, vocab_size=40).save_pretrained(tmp_path)
    model = models.resolve(f"hf:{tmp_path}", task="causal_lm")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model(input_ids=torch.randint(0, 40, (1, 5))).logits.shape == (1, 5, 40)


def test_hf_weights_load_from_the_folder_and_round_trip(gpt2_folder: Path, tmp_path: Path) -> None:
    first = models.resolve(f"hf:{gpt2_folder}", task="causal_lm")
    first.save_pretrained(gpt2_folder)
    again = models.resolve(f"hf:{gpt2_folder}", task="causal_lm")
    assert _same_weights(again, first)
    record = models.source_of(f"hf:{gpt2_folder}", task="causal_lm")
    assert record == {"spec": f"hf:{gpt2_folder.absolute()}", "kwargs": {"task": "causal_lm"}}
    assert _same_weights(models.from_source(record), first)
    fresh = models.from_source(record, load_weights=False)
    assert _same_architecture(fresh, first) and not _same_weights(fresh, first)


def test_hf_errors(gpt2_folder: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="folder '.*empty' has no config.json"):
        models.resolve(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(DataNotFoundError, match="no such folder or file"):
        models.resolve(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="unknown task 'translation'"):
        models.resolve(f"hf:{gpt2_folder}", task="translation")
    with pytest.raises(ConfigError, match="config has no fields \\['bogus'\\]"):
        models.resolve(f"hf:{gpt2_folder}", bogus=1)
    vit = tmp_path / "vit"
    transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                           image_size=8, patch_size=4).save_pretrained(vit)
    with pytest.raises(ConfigError, match="task 'causal_lm' does not fit model type 'vit'"):
        models.resolve(f"hf:{vit}", task="causal_lm")
    assert type(models.resolve(f"hf:{vit}", task="classification")).__name__ == "ViTForImageClassification"
    models.resolve(f"hf:{gpt2_folder}", task="causal_lm").save_pretrained(gpt2_folder)
    (gpt2_folder / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match="could not load .*naming the folder without 'hf:'"):
        models.resolve(f"hf:{gpt2_folder}", task="causal_lm", n_embd=32)  # NOTE: weights != config.
    for file in gpt2_folder.glob("*.safetensors"):
        file.unlink()
    torch.save({}, gpt2_folder / "pytorch_model.bin")
    with pytest.raises(DataError, match="pytorch_model.bin but no .safetensors"):
        models.resolve(f"hf:{gpt2_folder}")
    (tmp_path / "blank.json").write_text("")
    with pytest.raises(DataError, match="blank.json' is empty"):
        models.resolve(f"hf:{tmp_path / 'blank.json'}")


# ---- your own code: file.py:factory and package.module:factory -------------------------------

def test_file_factory_with_options_and_weights(factory_file: Path, tmp_path: Path) -> None:
    path_before = list(sys.path)
    model = models.resolve(f"{factory_file}:build", width=6)
    assert sys.path == path_before
    assert model(torch.randn(2, 4)).shape == (2, 3) and model.block[0].out_features == 6
    save_weights(model, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        assert _same_weights(models.resolve(f"{factory_file}:build", width=6, weights=tmp_path / name), model)
    with pytest.raises(DataError, match="tensor 'block.0.weight' has shape \\(6, 4\\).*expects \\(8, 4\\)"):
        models.resolve(f"{factory_file}:build", weights=tmp_path / "w.pth")


def test_file_factory_source_is_absolute(factory_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(factory_file.parent)
    record = models.source_of("my_model.py:build", width=5, weights=Path("w.pth"))
    assert record == {"spec": f"{factory_file}:build", "kwargs": {"width": 5, "weights": str(factory_file.parent / "w.pth")}}
    monkeypatch.chdir(factory_file.parent.parent)
    rebuilt = models.from_source(record, load_weights=False)
    assert rebuilt.block[0].out_features == 5


def test_module_factory(factory_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(factory_file.parent))
    monkeypatch.delitem(sys.modules, "my_model", raising=False)
    model = models.resolve("my_model:build", width=3)
    assert model(torch.randn(1, 4)).shape == (1, 3)
    assert models.source_of("my_model:build", width=3) == {"spec": "my_model:build", "kwargs": {"width": 3}}
    assert _same_architecture(models.from_source(models.source_of("my_model:build", width=3)), model)
    with pytest.raises(UnknownNameError, match="module 'my_model' has no factory 'buld'. Did you mean 'build'"):
        models.resolve("my_model:buld")


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("{dir}/nope.py:build", DataNotFoundError, "no such file '.*nope.py'; expected a Python file defining build"),
    ("{file}:buld", UnknownNameError,
     "has no factory 'buld'. Did you mean 'build'\\? Its callables: Net, build, build_dict, helper"),
    ("{file}:build_dict", ConfigError, "build_dict\\(\\) returned a dict, not an nn.Module"),
    ("{dir}/empty.py:build", DataError, "empty.py' is empty; expected Python code defining build"),
    ("{dir}/broken.py:build", ConfigError, "running '.*broken.py' raised ZeroDivisionError"),
    ("{dir}/binary.py:build", DataError, "cannot read '.*binary.py'"),
    ("no_such_module_xyz:build", DataNotFoundError, "no module 'no_such_module_xyz' can be imported"),
    ("{file}", ConfigError, "names a Python file but no factory; expected '.*my_model.py:factory'"),
    ("{dir}/w.pth", ConfigError, "is a weights file, not a model"),
    ("{dir}/config.json", ConfigError, "for a Hugging Face config write 'hf:"),
    ("{dir}/missing/folder", DataNotFoundError, "no such file or folder"),
    ("{dir}/plain", DataNotFoundError, "folder '.*plain' has no manifest.json; expected a folder prunekit saved"),
    ("{dir}/hfdir", DataNotFoundError, "It holds config.json: for a Hugging Face folder write 'hf:"),
    ("  ", ConfigError, "expected a non-empty string naming a model"),
])
def test_bad_specs_get_one_line_errors(factory_file: Path, spec: str, error: type, message: str) -> None:
    folder = factory_file.parent
    (folder / "empty.py").write_text("  \n")
    (folder / "broken.py").write_text("x = 1 / 0\n")
    (folder / "binary.py").write_bytes(b"\xff\xfe\x00bad")
    (folder / "w.pth").write_bytes(b"x")
    (folder / "config.json").write_text("{}")
    (folder / "plain").mkdir()
    (folder / "hfdir").mkdir()
    (folder / "hfdir" / "config.json").write_text("{}")
    with pytest.raises(error, match=message) as info:
        models.resolve(spec.format(dir=folder, file=factory_file))
    assert "\n" not in str(info.value) and str(info.value).startswith(("Model spec", "Unknown"))


def test_factory_option_errors(factory_file: Path) -> None:
    with pytest.raises(ConfigError, match="build\\(width=8\\) cannot take the options \\['depth'\\]"):
        models.resolve(f"{factory_file}:build", depth=2)
    with pytest.raises(ConfigError, match="cannot be stored in manifest.json"):
        models.source_of(f"{factory_file}:build", width=object())


# ---- weights files that are not state dicts ---------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ([torch.zeros(1)], "holds a list, not a state dict"),
    ({"a": torch.zeros(1), "b": "text"}, "entry 'b' holds a str, expected a tensor"),
    (nn.Linear(4, 8), "is not a readable state dict"),  # NOTE: weights_only=True refuses a pickled module.
    (None, "is empty \\(0 bytes\\)"),
])
def test_weights_that_are_not_a_state_dict(factory_file: Path, tmp_path: Path, content: object,
                                           message: str) -> None:
    path = tmp_path / "bad.pth"
    if content is None:
        path.write_bytes(b"")
    else:
        torch.save(content, path)
    with pytest.raises(DataError, match=message):
        models.resolve(f"{factory_file}:build", weights=path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        models.resolve(f"{factory_file}:build", weights=tmp_path / "none.safetensors")


# ---- folders prunekit saved -------------------------------------------------------------------

def test_saved_folder_delegates_to_prunekit_io_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "prunekit", "version": 1}))
    sentinel = nn.Linear(2, 2)
    seen: list[Path] = []

    def fake_load(folder: Path) -> nn.Module:
        seen.append(Path(folder))
        return sentinel

    monkeypatch.setattr(prunekit.io, "load", fake_load, raising=False)
    assert models.resolve(str(tmp_path), task="classification") is sentinel
    assert seen == [tmp_path]
    assert models.source_of(str(tmp_path)) == {"spec": str(tmp_path.absolute()), "kwargs": {}}
    with pytest.raises(ConfigError, match="saved folder, which carries its own .* \\['weights'\\]"):
        models.resolve(str(tmp_path), weights="w.safetensors")


# ---- tasks fit outputs ------------------------------------------------------------------------

def test_check_task_fits_names_what_the_task_needs() -> None:
    classifier = models.create("simple_cnn").train()
    x = torch.randn(2, 1, 28, 28)
    models.check_task_fits(classifier, "classification", x)
    assert classifier.training  # NOTE: the check runs in eval mode and restores the flag.
    models.check_task_fits(classifier, "embedding", (x,))
    models.check_task_fits(nn.Identity(), "custom", "anything")
    with pytest.raises(ConfigError, match="'classification' does not fit Flatten: it needs logits .*shape \\(1568,\\)"):
        models.check_task_fits(nn.Flatten(0), "classification", x)
    models.check_task_fits(nn.Conv2d(1, 3, 3), "classification", x)  # NOTE: per-pixel classes [B, C, H, W]
    with pytest.raises(ConfigError, match="'causal_lm' does not fit SimpleCNN"):
        models.check_task_fits(classifier, "causal_lm", x)
    with pytest.raises(ConfigError, match="failed on the example inputs"):
        models.check_task_fits(classifier, "classification", torch.randn(2, 5))
    with pytest.raises(ConfigError, match="expected one of classification, causal_lm"):
        models.check_task_fits(classifier, "regression", x)


class _TwoHeads(nn.Module):
    """Logits first in a tuple, or under "logits" in a dict: where tasks.Classification reads them."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict, self.body, self.aux = as_dict, nn.Linear(5, 3), nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> object:
        if self.as_dict:
            return {"aux": self.aux(x), "logits": self.body(x)}
        return self.body(x), self.aux(x)


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_classification_fits_the_outputs_the_task_scores(as_dict: bool) -> None:
    model, x = _TwoHeads(as_dict), torch.randn(4, 5)
    models.check_task_fits(model, "classification", x)
    assert Classification().evaluate(model, [(x, torch.tensor([0, 1, 2, 0]))])["count"] == 4


class _OwnLM(nn.Module):
    """A language model of one's own: forward(idx) returns logits, or nanoGPT's (logits, loss)."""

    def __init__(self, with_loss: bool = False) -> None:
        super().__init__()
        self.embed, self.head, self.with_loss = nn.Embedding(20, 8), nn.Linear(8, 20), with_loss

    def forward(self, idx: torch.Tensor) -> Any:
        logits = self.head(self.embed(idx))
        return (logits, None) if self.with_loss else logits


def test_causal_lm_fits_a_plain_module_that_returns_logits() -> None:
    batch = {"input_ids": torch.randint(0, 20, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    models.check_task_fits(_OwnLM(), "causal_lm", batch)  # the mask is not passed: forward does not name it
    models.check_task_fits(_OwnLM(with_loss=True), "causal_lm", batch)
    with pytest.raises(ConfigError, match=r"'causal_lm' does not fit Sequential: it needs logits \[batch, seq, vocab\]"):
        models.check_task_fits(nn.Sequential(nn.Embedding(20, 8), nn.Flatten()), "causal_lm", batch)


# ---- import cost ------------------------------------------------------------------------------

def test_importing_models_loads_no_optional_framework() -> None:
    code = ("import sys, prunekit.models; "
            "print([m for m in ('torchvision', 'timm', 'transformers') if m in sys.modules])")
    root = Path(prunekit.__file__).parents[1]  # NOTE: the same package this test imported.
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_source_record_passes_its_own_none_values_to_the_factory(tmp_path: Path) -> None:
    """torchvision's detection and segmentation builders download a backbone unless given
    weights_backbone=None: a None the user wrote in the record must reach the factory."""
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build(width=4, backbone='DEFAULT'):\n"
        "    if backbone is not None:\n"
        "        raise RuntimeError('would download ' + backbone)\n"
        "    return nn.Linear(2, width)\n")
    record = {"spec": f"{tmp_path / 'net.py'}:build", "kwargs": {"width": 3, "backbone": None}}
    assert models.from_source(record).out_features == 3
