"""Per-pixel classes (logits [batch, classes, H, W], labels [batch, H, W]) go through the workflows
as tasks.Classification scores them; the model check used to refuse anything but [batch, classes]."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunekit
from prunekit.data import Loaders
from prunekit.workflows import Measure
from prunekit.workflows.prune import prune


def test_a_per_pixel_classifier_is_pruned_and_scored(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 8, 8, generator=g)
    y = (x[:, 0] > 0.5).long() + (x[:, 0] > 1.2).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 3, 1))
    part = DataLoader(TensorDataset(x, y), batch_size=16)
    data = Loaders("pixels", train=part, val=part, test=part, task="classification")
    result = prune(model, data, stage={"target": {"ratio": 0.5}}, finetune_epochs=0, out_dir=tmp_path,
                   measure=Measure(batch_sizes=(1,), min_time_s=0.0, backends=("torch",)))
    assert "accuracy" in result["table"]
    loaded = prunekit.load(tmp_path / "model", model=model)
    assert loaded[0].out_channels == 8 and loaded(x[:2]).shape == (2, 3, 8, 8)


def test_feature_maps_scored_against_image_labels_is_one_line() -> None:
    import pytest

    from prunekit import tasks
    from prunekit.errors import DataError

    batch = (torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,)))
    with pytest.raises(DataError, match=r"Classification: the model's logits \(4, 3, 8, 8\) do not fit labels "
                                        r"\(4,\); expected labels \[batch\] for logits \[batch, classes\]") as info:
        tasks.create("classification").evaluate(nn.Conv2d(1, 3, 3, padding=1), [batch])
    assert "\n" not in str(info.value)
