from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit.measure as measure
from prunekit.errors import ConfigError
from prunekit.measure import count_nonzero, count_params


def test_simple_cnn_param_count(simple_cnn: nn.Module) -> None:
    assert count_params(simple_cnn) == (4 * 9 + 4) + (8 * 36 + 8) + (392 * 64 + 64) + (64 * 10 + 10)


def test_tied_weights_are_counted_once() -> None:
    embed, head = nn.Embedding(100, 16), nn.Linear(16, 100, bias=False)
    head.weight = embed.weight
    model = nn.Sequential(embed, head)
    assert count_params(model) == 100 * 16
    assert count_nonzero(model) == 100 * 16


def test_trainable_only_skips_frozen(mlp: nn.Module) -> None:
    mlp[0].requires_grad_(False)
    assert count_params(mlp, trainable_only=True) == 16 * 4 + 4
    assert count_params(mlp) == 8 * 16 + 16 + 16 * 4 + 4


def test_count_nonzero_sees_zeroed_weights(mlp: nn.Module) -> None:
    with torch.no_grad():
        mlp[0].weight[:, :4] = 0
    assert count_nonzero(mlp) == count_params(mlp) - 16 * 4


def test_lazy_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="forward pass"):
        count_params(nn.LazyLinear(4))


def test_all_names_exist() -> None:
    assert sorted(measure.__all__) == sorted(set(measure.__all__))
    for name in measure.__all__:
        assert getattr(measure, name) is not None
