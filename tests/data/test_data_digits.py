"""digits: scikit-learn's bundled 8x8 images as seeded, standardised splits."""

from __future__ import annotations

import pytest
import torch

from prunekit.data.digits import load_digits
from prunekit.errors import ConfigError


def test_shapes_sizes_and_classes() -> None:
    splits = load_digits()
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [1258, 180, 359]
    x, y = splits.train.tensors
    assert x.shape == (1258, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    assert splits.class_names == tuple("0123456789")
    assert set(y.tolist()) == set(range(10))


def test_standardised_with_train_statistics() -> None:
    splits = load_digits()
    x = splits.train.tensors[0]
    assert abs(x.mean().item()) < 1e-5 and x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert abs(splits.test.tensors[0].mean().item()) < 0.1  # same scale, not re-fitted on test


def test_split_is_deterministic_and_partitions_the_data() -> None:
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=3)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])
    # Every image lands in exactly one split: the label histogram of the union is the dataset's.
    union = torch.cat([s.tensors[1] for s in (c.train, c.val, c.test)])
    assert torch.equal(torch.bincount(union), torch.bincount(torch.cat(
        [s.tensors[1] for s in (a.train, a.val, a.test)])))
    assert len(union) == 1797


def test_fractions_are_validated() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=1.2)
    with pytest.raises(ConfigError, match="no training samples"):
        load_digits(val_fraction=0.6, test_fraction=0.4)
