"""The sparse file format: bit-exact round trips, smaller files, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _sparsity_models import conv_mlp
from torch import nn
from safetensors.torch import safe_open, save_file

from prunekit.errors import DataError, DataNotFoundError
from prunekit.io import save_weights
from prunekit.sparsity import Sparsifier, load_sparse, save_sparse, sparse_sizes


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t


def test_round_trip_is_exact_for_every_dtype_and_odd_value(tmp_path: Path) -> None:
    weight = torch.zeros(5, 13)
    weight[0, :3] = torch.tensor([-0.0, float("nan"), 1e-40])  # negative zero, NaN, a denormal
    weight[3, 7] = -2.5
    state = {"w": weight, "half": torch.tensor([0.0, 0.0, 1.5, 0.0] * 6, dtype=torch.bfloat16),
             "dense": torch.randn(4, 4, dtype=torch.float64), "count": torch.tensor(7),
             "flags": torch.tensor([True, False]), "ids": torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 3]),
             "empty": torch.zeros(0, 3)}
    file = save_sparse(state, tmp_path / "s.safetensors")
    loaded = load_sparse(file)
    assert set(loaded) == set(state)
    expected = dict(state, w=torch.where(weight == 0, 0.0, weight))  # -0.0 comes back as 0.0
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert torch.equal(_bits(loaded[key]), _bits(value)), key  # bit-exact, NaN included
    layout = json.loads(safe_open(str(file), framework="pt").metadata()["layout"])
    assert layout["w"]["layout"] == "bitmask" and layout["w"]["nonzero"] == 3
    assert layout["dense"]["layout"] == "dense"  # a dense tensor is not made bigger


def test_a_90_percent_sparse_model_loads_back_exactly_and_is_much_smaller(tmp_path: Path) -> None:
    def mlp(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    model = mlp(0)
    Sparsifier(0.9, include=[nn.Linear]).prepare(model).apply().finalize()
    file = save_sparse(model, tmp_path / "sparse.safetensors", metadata={"model": "mlp"})
    fresh = mlp(1)
    load_sparse(file, fresh)
    expected, got = model.state_dict(), fresh.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    sizes = sparse_sizes(model)
    assert sizes.dense == save_weights(model, tmp_path / "dense.safetensors").stat().st_size
    assert sizes.sparse == save_sparse(model, tmp_path / "again.safetensors").stat().st_size
    # 90 % zeros: 1 bit per entry + 10 % of the values, about 0.135 of the dense bytes.
    assert sizes.sparse < 0.16 * sizes.dense and sizes.sparse_compressed < sizes.dense_compressed
    assert sizes.ratios()["sparse"] == pytest.approx(sizes.dense / sizes.sparse)


def test_loading_refuses_foreign_missing_and_mismatched_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_sparse(tmp_path / "none.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(DataError, match="not a prunekit sparse file.*prunekit.io.load_weights"):
        load_sparse(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a file")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_sparse(junk)
    file = save_sparse({"fc1.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    model = conv_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError, match=r"shape differs for \['fc1.weight'\]"):
        load_sparse(file, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
