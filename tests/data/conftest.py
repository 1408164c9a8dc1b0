"""Fixtures for the data tests: IDX files written byte by byte, and a tiny Fashion-MNIST folder."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from _data_files import FASHION_STEMS, idx_bytes

WriteIdx = Callable[..., Path]


@pytest.fixture
def write_idx() -> WriteIdx:
    """write_idx(path, array) writes an IDX file, gzip-compressed when the name ends in .gz."""

    def write(path: Path, array: np.ndarray | bytes) -> Path:
        data = array if isinstance(array, bytes) else idx_bytes(array)
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        return path

    return write


@pytest.fixture
def tiny_fashion(tmp_path: Path, write_idx: WriteIdx) -> Callable[..., Path]:
    """make(n_train=20, n_test=10, gz=True, name="fm") -> a folder with the four IDX files."""

    def make(n_train: int = 20, n_test: int = 10, *, gz: bool = True, name: str = "fm") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        rng = np.random.default_rng(0)
        arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  (np.arange(n_train) % 10).astype(np.uint8),
                  rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                  (np.arange(n_test) % 10).astype(np.uint8))
        for stem, array in zip(FASHION_STEMS, arrays):
            write_idx(folder / (stem + (".gz" if gz else "")), array)
        return folder

    return make
