"""DataSplits (an .npz file, an image folder...) as DataLoaders; TensorBatches; Loaders into train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunekit import data
from prunekit.errors import ConfigError
from prunekit.measure import evaluate
from prunekit.recover import TrainConfig, train


def _npz_splits(tmp_path: Path) -> data.DataSplits:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(60, 3)).astype("float32"), y=np.arange(60) % 3)
    return data.load(str(path))


def test_splits_as_loaders_cover_every_sample_once(tmp_path: Path) -> None:
    splits = _npz_splits(tmp_path)
    loaders = splits.loaders(batch_size=8, seed=1)
    assert loaders.task == "classification" and loaders.info["num_classes"] == 3
    seen = torch.cat([y for _, y in loaders.train])
    assert sorted(seen.tolist()) == sorted(splits.train.tensors[1].tolist())
    model = nn.Linear(3, 3)
    assert evaluate(model, loaders.test) == pytest.approx(evaluate(model, splits.test))
    result = train(model, loaders, TrainConfig(epochs=1))
    assert result.test is not None and result.test.count == len(splits.test)


def test_tensor_batches_slice_in_order() -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(10), torch.arange(10) * 2)
    batches = data.TensorBatches(dataset, 4)
    assert len(batches) == 3 and [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(batches)[2][1].tolist() == [16, 18]  # re-iterable
    with pytest.raises(ConfigError, match="batch_size"):
        data.TensorBatches(dataset, 0)


def _named(labels: list[int], names: tuple[str, ...]) -> data.DataSplits:
    x = torch.arange(len(labels), dtype=torch.float32)[:, None]
    y = torch.tensor(labels)
    split = torch.utils.data.TensorDataset(x, y)
    return data.DataSplits("d", split, split, split, num_classes=len(names), input_shape=(1,), class_names=names)


def test_in_class_order_relabels_to_the_names_given() -> None:
    splits = _named([0, 1, 2, 2], ("Bird", "cat", "golden_retriever"))
    ordered = splits.in_class_order(["golden-retriever", "BIRD", "Cat"])
    assert ordered is not None and ordered.class_names == ("golden_retriever", "Bird", "cat")
    assert ordered.train.tensors[1].tolist() == [1, 2, 0, 0]
    assert torch.equal(ordered.test.tensors[0], splits.test.tensors[0])
    assert splits.in_class_order(["bird", "cat", "golden retriever"]) is splits


@pytest.mark.parametrize("names", [["bird", "cat"], ["bird", "cat", "dog"], ["bird", "cat", "cat", "x"]])
def test_in_class_order_is_none_for_other_names(names: list[str]) -> None:
    assert _named([0, 1, 2], ("bird", "cat", "golden retriever")).in_class_order(names) is None
