"""Fixtures shared by the recipe tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training and 64 test images of the real Fashion-MNIST, as an .npz."""
    from prunekit import data

    splits = data.load("fashion_mnist")
    (x, y), (xt, yt) = splits.train.tensors, splits.test.tensors
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x[:256].numpy(), y_train=y[:256].numpy(), x_test=xt[:64].numpy(), y_test=yt[:64].numpy())
    return path
