"""The prune workflow on the user's own objects: their trained ``nn.Module`` and their DataLoaders
(or DataSplits) give the same run as specs do (before/after profiles, saved folder, report), and
their module is never changed."""

from __future__ import annotations

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
