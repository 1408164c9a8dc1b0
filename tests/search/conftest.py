"""Tiny data shared by the search tests: a few real Fashion-MNIST batches and an .npz of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def fashion() -> tuple[torch.Tensor, torch.Tensor]:
    """512 Fashion-MNIST training images (normalised) and labels."""
    from prunekit import data

    x, y = data.load("fashion_mnist").train.tensors
    return x[:512].clone(), y[:512].clone()


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory, fashion: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """256 training and 64 test images of the real Fashion-MNIST, as an .npz."""
    x, y = fashion
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x[:256].numpy(), y_train=y[:256].numpy(), x_test=x[256:320].numpy(),
             y_test=y[256:320].numpy())
    return path


@pytest.fixture
def search_arguments(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], dict[str, Any]]:
    """Runs ``prunekit`` with the given arguments and returns the keyword arguments the search
    command handed to ``prunekit.workflows.search.search`` (which is not run)."""
    from prunekit.cli import main

    def run(argv: list[str]) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def fake_search(model: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
            seen.update(kwargs)
            raise SystemExit(0)

        monkeypatch.setattr("prunekit.workflows.search.search", fake_search)
        with pytest.raises(SystemExit):
            main(argv)
        return seen

    return run
