from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prunekit.io import save_weights
from prunekit.measure import compressed_size, count_params, size_on_disk


def test_size_is_the_safetensors_file(simple_cnn: nn.Module, tmp_path: Path) -> None:
    size = size_on_disk(simple_cnn)
    assert size == save_weights(simple_cnn, tmp_path / "m.safetensors").stat().st_size
    payload = 4 * count_params(simple_cnn)
    assert payload < size < payload + 2_000, "float32 values plus a small JSON header"


def test_zeros_compress(simple_cnn: nn.Module) -> None:
    dense = compressed_size(simple_cnn)
    assert dense > 0.8 * size_on_disk(simple_cnn), "random float32 barely compresses"
    with torch.no_grad():
        simple_cnn.fc1.weight.zero_()
    assert compressed_size(simple_cnn) < 0.3 * dense
