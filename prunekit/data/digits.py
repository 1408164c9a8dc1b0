"""scikit-learn's bundled handwritten digits (1,797 8x8 greyscale images, 10 classes).

Ships inside scikit-learn, so it needs no download: the quickest real dataset for tests and demos.
"""

from __future__ import annotations

import torch

from prunekit.data.base import DataSplits
from prunekit.data.custom import from_arrays
from prunekit.errors import require

__all__ = ["CLASS_NAMES", "load_digits"]

CLASS_NAMES = tuple(str(d) for d in range(10))


def load_digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """Seeded train/val/test splits (fractions of all 1,797 images) of float32 ``[N, 1, 8, 8]``
    inputs, scaled from 0..16 to [0, 1], then standardised with the train split's mean and std."""
    datasets = require("sklearn.datasets", pip_name="scikit-learn", extra="sklearn",
                       feature="The 'digits' dataset")
    bunch = datasets.load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    y = torch.from_numpy(bunch.target).long()
    return from_arrays(x, y, name="digits", val_fraction=val_fraction, test_fraction=test_fraction,
                       seed=seed, class_names=CLASS_NAMES)
