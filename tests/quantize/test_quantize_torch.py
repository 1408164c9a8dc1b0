"""int8 in PyTorch through torchao (``backend="torch"``): outputs close to fp32, int8 weights, the
save/load round trip through the manifest record, the CLI's four-model comparison, the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _quantize_models import tiny_cnn
from acceptance._acceptance_fixtures import write_image_folder
from torch import nn

from prunekit import load, save
from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.io import read_manifest
from prunekit.quantize import quantize_torch, restore
from prunekit.quantize.torch_int8 import Compiled, int8_bytes
from prunekit.workflows.quantize import quantize

pytest.importorskip("torchao")

_QUICK = ["--batch-sizes", "1", "--min-time-s", "0", "--no-progress"]


class LinearStack(nn.Module):
    """Three Linear layers with residual adds and a GELU, a transformer FFN in miniature."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.up, self.down, self.head = nn.Linear(width, 4 * width), nn.Linear(4 * width, width), nn.Linear(width, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.down(nn.functional.gelu(self.up(x))))


def _stack(seed: int = 0) -> LinearStack:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LinearStack().eval()


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def test_dynamic_int8_is_close_to_fp32_with_int8_weights() -> None:
    model, x = _stack(), torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
        result = quantize_torch(model, x[:1], dynamic=True)
        out = result.model(x)
    assert _relative(out, ref) < 0.03  # measured 0.006
    for layer in (result.model.up, result.model.down, result.model.head):
        assert layer.weight.qdata.dtype == torch.int8 and layer.weight.qdata.shape == layer.weight.shape
    assert int8_bytes(result.model) < 0.3 * int8_bytes(model)  # int8 data + one fp32 scale per row
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is untouched
    assert result.record["scheme"] == "dynamic" and result.record["backend"] == "torch"


def test_static_int8_is_close_to_fp32_and_restores_exactly() -> None:
    model, x = tiny_cnn(), torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    result = quantize_torch(model, x[:1], calibration=[x[:16], x[16:]], compile=True)
    assert isinstance(result.model, Compiled)  # compiled lazily: the eager int8 graph is inside
    eager = result.model.model
    with torch.no_grad():
        ref, out = model(x), eager(x)
    assert _relative(out, ref) < 0.05  # measured 0.01-0.02
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    constants = [eager.get_submodule(n.target.rpartition(".")[0]).get_buffer(n.target.rpartition(".")[2])
                 for n in eager.graph.nodes if n.op == "get_attr" and "frozen_param" in n.target]
    ints = [t for t in constants if t.dtype == torch.int8]
    assert len(ints) == 3  # both convolutions and the linear layer hold int8 weights
    record = json.loads(json.dumps(result.record))  # what the manifest keeps
    with torch.no_grad():
        assert torch.equal(restore(tiny_cnn(), record).model(x), out)


def test_save_load_round_trip_gives_the_int8_module(tmp_path: Path) -> None:
    model, x = _stack(), torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    result = quantize_torch(model, x[:1], dynamic=True)
    folder = save(model, tmp_path / "m", original=_stack(seed=9), transforms=[result.record])
    loaded = load(folder, model=_stack(seed=9))
    assert loaded.up.weight.qdata.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


def test_refusals_are_one_line_and_name_what_to_use() -> None:
    model, x = tiny_cnn(), torch.randn(4, 1, 8, 8)
    with pytest.raises(ConfigError, match="slower than fp32.*compile=True.*dynamic=True.*onnxruntime"):
        quantize_torch(model, x, calibration=[x])
    conv_only = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    with pytest.raises(ConfigError, match="no nn.Linear layer.*onnxruntime"):
        quantize_torch(conv_only, x, dynamic=True)
    with pytest.raises(ConfigError, match="calibration data is empty"):
        quantize_torch(model, x, compile=True)
    with pytest.raises(ConfigError, match="minmax only.*backend='onnxruntime'"):
        quantize("simple_cnn", "unused", backend="torch", dynamic=True, method="entropy")
    with pytest.raises(ConfigError, match="max_metric_drop.*ONNX Runtime backend only"):
        quantize("simple_cnn", "unused", backend="torch", dynamic=True, max_metric_drop=0.01)
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        quantize("simple_cnn", "unused", backend="tflite")
    with pytest.raises(ConfigError, match="torch backend only"):
        quantize("simple_cnn", "unused", compile=True)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(image folder, simple_cnn with half its MACs pruned, saved as a command saves it)``."""
    from prunekit import StructuredPruner, data, models

    root = tmp_path_factory.mktemp("quantize_torch")
    images = write_image_folder(root / "images", per_class=4)
    splits = data.load(str(images))
    sizes = {"num_classes": splits.num_classes, "in_channels": splits.input_shape[0]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = models.create("simple_cnn", **sizes).eval()
    pruner = StructuredPruner({"macs": 0.5}).fit(net, splits.example_input(1))
    save(pruner.transform(net), root / "pruned" / "model", source=models.source_of("simple_cnn", **sizes),
         transforms=[pruner.plan_])
    return images, root / "pruned"


def test_cli_torch_backend_compares_four_models_and_saves_int8(pruned: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    images, model = pruned
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(model), "--data", str(images), "--backend", "torch", "--dynamic",
                 "--out", str(out), *_QUICK]) == 0
    assert "int8 in PyTorch (torchao, dynamic)" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    profiles = {p["name"]: p for p in results["profiles"]}
    assert list(profiles) == ["dense fp32", "pruned fp32", "dense int8", "pruned int8"]
    assert profiles["pruned int8"]["size_bytes"] < profiles["pruned fp32"]["size_bytes"] < profiles["dense fp32"]["size_bytes"]
    assert all(p["latency"][0]["backend"] == "torch" for p in profiles.values())
    assert abs(profiles["pruned int8"]["accuracy"] - profiles["pruned fp32"]["accuracy"]) <= 0.1
    assert not (out / "model.onnx").exists()
    manifest = read_manifest(out / "model")
    assert [t["kind"] for t in manifest.transforms] == ["prune", "quantize"]
    assert manifest.transforms[-1]["backend"] == "torch"
    loaded = load(out)  # the int8 module, rebuilt from the fp32 weights and the record
    assert any(getattr(getattr(m, "weight", None), "qdata", None) is not None for m in loaded.modules())


def test_cli_refuses_static_without_compile(pruned: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    images, model = pruned
    argv = ["quantize", "--model", str(model), "--data", str(images), "--backend", "torch", *_QUICK]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile" in err[0] and "onnxruntime" in err[0]
    assert not (tmp_path / "x" / "model").exists()


@pytest.mark.slow
def test_static_compiled_runs_and_matches_eager() -> None:
    """torch.compile (inductor, freezing) of the PT2E int8 graph: oneDNN int8 kernels, same outputs
    up to requantisation rounding (compiles for tens of seconds on 2 cores)."""
    model, x = tiny_cnn(), torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    result = quantize_torch(model, x[:1], calibration=[x], compile=True)
    with torch.no_grad():
        eager, fast = result.model.model(x), result.model(x)
    assert _relative(fast, eager) < 0.02


def test_dynamic_int8_transformer_keeps_its_embeddings() -> None:
    """A BERT encoder on padded sentences (text data, an embedding task): the workflow's torch int8
    scores cosine >= 0.98 to fp32 and profiles it in PyTorch."""
    transformers = pytest.importorskip("transformers")
    from prunekit import data
    from prunekit.tasks import Embedding
    from prunekit.workflows import Measure
    from prunekit.workflows.quantize import quantize_model_torch, torch_profiles

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 128, (4, 12), generator=g), torch.ones(4, 12, dtype=torch.long)) for _ in range(3)]
    for _, mask in batches:
        mask[:, 6:] = 0
    loaders = data.Loaders(name="sentences", train=batches, val=batches, test=batches, task="embedding")
    task, measure = Embedding(teacher=model), Measure(batch_sizes=(1,), min_time_s=0)
    int8 = quantize_model_torch(model, loaders, task=task, dynamic=True, measure=measure)
    assert int8.record["val"]["int8"] >= 0.98 and int8.record["metric"] == "cosine"
    assert int8.model.encoder.layer[0].intermediate.dense.weight.qdata.dtype == torch.int8
    profile, = torch_profiles([("model int8", model, int8.model)], loaders, task=task, measure=measure)
    assert profile.metrics["cosine"] >= 0.98 and profile.latency[0].backend == "torch"
    with pytest.raises(ConfigError, match="static int8 in PyTorch.*image models.*dynamic=True"):
        quantize_model_torch(model, loaders, task=task, compile=True)


def test_dynamic_int8_quantises_gpt2_conv1d_layers_and_loads(tmp_path: Path) -> None:
    """GPT-2's attention and MLP layers are transformers Conv1D (x @ W + b, W stored (in, out)): they
    become int8 too, not only lm_head, and a saved folder loads to the same int8 module."""
    transformers = pytest.importorskip("transformers")

    def gpt2(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32)
        return transformers.GPT2LMHeadModel(config).eval()

    model, x = gpt2(0), torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).logits
        result = quantize_torch(model, x[:1], dynamic=True)
        out = result.model(x).logits
    block = result.model.transformer.h[0]
    for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        assert layer.weight.qdata.dtype == torch.int8
    assert _relative(out, ref) < 0.05
    assert int8_bytes(result.model) < 0.5 * int8_bytes(model)
    assert "Conv1D" in result.record["layers"]
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the input is untouched
    folder = save(model, tmp_path / "m", original=gpt2(9), transforms=[result.record])
    loaded = load(folder, model=gpt2(9))
    assert loaded.transformer.h[1].mlp.c_fc.weight.qdata.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, out)
