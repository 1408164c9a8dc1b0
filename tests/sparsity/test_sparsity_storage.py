"""Sparse storage (prunekit.save(..., sparse=True)): bit-exact round trips, smaller files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import prunekit
from prunekit.errors import DataError
from prunekit.io import save_weights
from prunekit.io.sparse import decode, encode
from prunekit.sparsity import Sparsifier, sparse_sizes


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t


def test_encoding_is_exact_for_every_dtype_and_odd_value() -> None:
    weight = torch.zeros(5, 13)
    weight[0, :3] = torch.tensor([-0.0, float("nan"), 1e-40])  # negative zero, NaN, a denormal
    weight[3, 7] = -2.5
    state = {"w": weight, "half": torch.tensor([0.0, 0.0, 1.5, 0.0] * 6, dtype=torch.bfloat16),
             "dense": torch.randn(4, 4, dtype=torch.float64), "count": torch.tensor(7),
             "flags": torch.tensor([True, False]), "ids": torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 3]),
             "empty": torch.zeros(0, 3)}
    entries, records = encode(state)
    loaded = decode(entries, records, "test")
    assert set(loaded) == set(state)
    expected = dict(state, w=torch.where(weight == 0, 0.0, weight))  # -0.0 comes back as 0.0
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert torch.equal(_bits(loaded[key]), _bits(value)), key  # bit-exact, NaN included
    assert records["w"]["layout"] == "bitmask" and records["w"]["nonzero"] == 3
    assert records["dense"]["layout"] == "dense" and "dense" in entries  # never made bigger


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def test_a_90_percent_sparse_model_loads_back_exactly_and_is_much_smaller(tmp_path: Path) -> None:
    model = _mlp(0)
    Sparsifier(0.9, include=[nn.Linear]).prepare(model).apply().finalize()
    folder = prunekit.save(model, tmp_path / "sparse", original=_mlp(1), sparse=True)
    loaded = prunekit.load(folder, model=_mlp(1))
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    sizes = sparse_sizes(model)
    assert sizes.dense == save_weights(model, tmp_path / "dense.safetensors").stat().st_size
    assert sizes.sparse == (folder / "model.safetensors").stat().st_size
    # 90 % zeros: 1 bit per entry + 10 % of the values, about 0.135 of the dense bytes.
    assert sizes.sparse < 0.16 * sizes.dense and sizes.sparse_compressed < sizes.dense_compressed
    assert sizes.ratios()["sparse"] == pytest.approx(sizes.dense / sizes.sparse)


def test_damaged_sparse_weights_are_named(tmp_path: Path) -> None:
    model = _mlp(0)
    Sparsifier(0.9, include=[nn.Linear]).prepare(model).apply().finalize()
    folder = prunekit.save(model, tmp_path / "s", original=_mlp(1), sparse=True)
    save_file({"0.weight": torch.zeros(128, 256)}, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="model.safetensors': the sparse weights do not match their record"):
        prunekit.load(folder, model=_mlp(1))
    record = json.loads((folder / "manifest.json").read_text())
    assert record["transforms"][-1]["kind"] == "sparse"
