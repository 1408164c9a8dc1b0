"""The prune workflow on the user's own objects: their trained ``nn.Module`` and their DataLoaders
(or DataSplits) give the same run as specs do (before/after profiles, saved folder, report), and
their module is never changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunekit
from prunekit.data import DataSplits, Loaders
from prunekit.errors import ConfigError
from prunekit.workflows import Measure
from prunekit.workflows.prune import prune

_QUICK = {"finetune_epochs": 1, "measure": Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0)}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def _tensors(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 12, 12, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def test_the_user_s_module_and_dataloaders_give_a_whole_run(tmp_path: Path) -> None:
    model, (x, y) = _model().train(), _tensors()
    loaders = Loaders(name="mine", train=DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16),
                      val=DataLoader(TensorDataset(x[64:80], y[64:80]), batch_size=16),
                      test=DataLoader(TensorDataset(x[80:], y[80:]), batch_size=16), task="classification")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = prune(model, loaders, stage={"target": {"macs": 0.5}, "round_to": 1}, out_dir=tmp_path / "run",
                    **_QUICK)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert results["model"] == "Sequential" and results["architecture"] is None and "baseline" not in results
    assert results["after"]["macs"] <= 0.5 * results["before"]["macs"] and results["after"]["accuracy"] is not None
    assert (tmp_path / "run" / "report.html").is_file()
    loaded = prunekit.load(tmp_path / "run" / "model", model=model).eval()
    assert sum(p.numel() for p in loaded.parameters()) == results["after"]["params"]
    assert loaded(x[:2]).shape == (2, 4)
    # NOTE: what was measured of the saved model is kept beside it
    assert prunekit.io.read_manifest(tmp_path / "run" / "model").metrics == {"profile": results["after"]}


def test_the_user_s_module_on_data_splits_within_a_metric_budget(tmp_path: Path) -> None:
    model, (x, y) = _model(), _tensors()
    parts = [TensorDataset(x[s], y[s]) for s in (slice(0, 64), slice(64, 80), slice(80, 96))]
    splits = DataSplits("mine", *parts, num_classes=4, input_shape=(1, 12, 12), class_names=("a", "b", "c", "d"))
    results = prune(model, splits, stage={"target": {"macs": 0.5}, "round_to": 1}, max_metric_drop=1.0,
                    out_dir=tmp_path / "run", **_QUICK)
    assert results["metric_budget"]["chosen"] == 0 and results["data"] == "mine"
    assert prunekit.io.read_manifest(tmp_path / "run" / "model").data["class_names"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("model", "data", "words"), [
    (_model(), DataLoader(TensorDataset(*_tensors())), r"Wrap your DataLoaders: Loaders\(name='mine', train="),
    (42, "fashion_mnist", "model must be a spec .* or an nn.Module; got int"),
])
def test_other_objects_are_one_line_errors(model: object, data: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        prune(model, data, stage={"target": {"macs": 0.5}}, **_QUICK)  # type: ignore[arg-type]


def _splits() -> DataSplits:
    x, y = _tensors()
    parts = [TensorDataset(x[s], y[s]) for s in (slice(0, 64), slice(64, 80), slice(80, 96))]
    return DataSplits("mine", *parts, num_classes=4, input_shape=(1, 12, 12), class_names=("a", "b", "c", "d"))


def _unchanged(model: nn.Module) -> Callable[[], bool]:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return lambda: all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_decompose_sparsify_and_search_take_the_user_s_module(tmp_path: Path) -> None:
    from prunekit.workflows.decompose import decompose
    from prunekit.workflows.search import search
    from prunekit.workflows.sparsify import sparsify

    model, splits, x = _model(), _splits(), _tensors()[0][:2]
    unchanged = _unchanged(model)
    runs = {
        "decompose": lambda out: decompose(model, splits, stage={"method": "svd", "rank": 0.5}, out_dir=out, **_QUICK),
        "sparsify": lambda out: sparsify(model, splits, stage={"sparsity": 0.5}, out_dir=out, **_QUICK),
        "search": lambda out: search(model, splits, strategy="random", constraints={"macs": 0.5}, trials=3,
                                     val_samples=16, out_dir=out, **_QUICK),
    }
    done = {}
    for command, run in runs.items():
        results = done[command] = run(tmp_path / command)
        assert unchanged() and "baseline" not in results and "baseline_training" not in results, command
        assert results["model"] == "Sequential" and results["data"] == "mine", command
        loaded = prunekit.load(tmp_path / command / "model", model=model).eval()
        assert loaded(x).shape == (2, 4), command
        assert sum(p.numel() for p in loaded.parameters()) == results["after"]["params"], command
        # NOTE: what was saved is what was measured: the same outputs as the run's own model
        assert results["after"]["accuracy"] == pytest.approx(
            prunekit.measure.evaluate(loaded, splits.test).accuracy), command
        metrics = prunekit.io.read_manifest(tmp_path / command / "model").metrics
        assert metrics["profile"]["params"] == results["after"]["params"], command
    assert results["after"]["macs"] <= 0.5 * results["before"]["macs"]
    # NOTE: sparsify's size row is the weights file as saved, in the sparse format
    sparse = (tmp_path / "sparsify" / "model" / "model.safetensors").stat().st_size
    assert done["sparsify"]["after"]["size_bytes"] == sparse < done["sparsify"]["before"]["size_bytes"]


def test_a_user_s_module_is_searched_by_one_worker_only(tmp_path: Path) -> None:
    from prunekit.workflows.search import search

    with pytest.raises(ConfigError, match="2 workers rebuild the model and data from their specs"):
        search(_model(), _splits(), strategy="tpe", constraints={"macs": 0.5}, workers=2, out_dir=tmp_path)


def test_quantize_takes_the_user_s_pruned_module_and_its_dense_one(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from prunekit.structured import StructuredPruner
    from prunekit.workflows.quantize import quantize

    dense, splits = _model().eval(), _splits()
    pruned = StructuredPruner({"macs": 0.5}, round_to=1).fit_transform(dense, _tensors()[0][:1])
    unchanged = _unchanged(pruned)
    results = quantize(pruned, splits, dense=dense, calibration_batches=1, out_dir=tmp_path / "q",
                       measure=Measure(batch_sizes=(1,), backends=(), min_time_s=0))
    assert unchanged() and results["model"] == "Sequential"
    assert [p["name"] for p in results["profiles"]] == ["dense fp32", "pruned fp32", "dense int8", "pruned int8"]
    macs = [p["macs"] for p in results["profiles"]]
    assert macs[0] == macs[2] and macs[1] == macs[3] <= 0.5 * macs[0]
    assert (tmp_path / "q" / "model.onnx").is_file()
    loaded = prunekit.load(tmp_path / "q" / "model", model=pruned)
    assert torch.equal(loaded[0].weight, pruned[0].weight)
    with pytest.raises(ConfigError, match="dense must be the nn.Module the model was cut from; got str"):
        quantize(pruned, splits, dense="resnet20", out_dir=tmp_path / "r")  # type: ignore[arg-type]


def test_export_and_profile_take_the_user_s_module(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from prunekit.structured import StructuredPruner
    from prunekit.workflows.export import export
    from prunekit.workflows.profile import profile

    dense, splits = _model().eval(), _splits()
    pruned = StructuredPruner({"macs": 0.5}, round_to=1).fit_transform(dense, _tensors()[0][:1])
    unchanged = _unchanged(pruned)
    results = export(pruned, splits, out_dir=tmp_path / "e")
    assert unchanged() and results["model"] == "Sequential" and results["data"] == "mine"
    assert results["params"] == sum(p.numel() for p in pruned.parameters())
    loaded = prunekit.load(tmp_path / "e" / "model", model=pruned).eval()
    x = _tensors()[0][:3]
    with torch.no_grad():
        want = pruned(x)
    assert torch.equal(loaded(x), want)
    session = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]  # NOTE: the batch dim is dynamic
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5)
    found, record = profile(pruned, splits, measure=Measure(batch_sizes=(1,), backends=("torch",), min_time_s=0))
    assert record["model"] == "Sequential" and found.params == results["params"]
    assert found.accuracy == pytest.approx(prunekit.measure.evaluate(pruned, splits.test).accuracy)
    with pytest.raises(ConfigError, match=r"export: your own Sequential needs data, whose first sample is the example"):
        export(pruned, None, out_dir=tmp_path / "f")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("method", ["svd", "auto"])
def test_decompose_leaves_the_user_s_global_rng_state_as_it_was(method: str) -> None:
    """Building each factorised layer (nn.init) drew from the caller's RNG. (A DataLoader's iterator
    draws from it too, which is PyTorch's doing: DataSplits are used here.)"""
    from prunekit.workflows.decompose import decompose

    model, splits = _model(), _splits()
    state = torch.random.get_rng_state()
    results = decompose(model, splits, stage={"method": method, "rank": 0.5}, **_QUICK)
    assert results["decomposition"]["layers"] and torch.equal(torch.random.get_rng_state(), state)
