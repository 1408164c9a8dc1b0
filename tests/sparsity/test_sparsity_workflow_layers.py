"""Which layers the sparsify workflow zeroes: the classifier by the forward's call order, and a
parametrized layer it cannot hold through fine-tuning."""

from __future__ import annotations

import pytest
import torch
from _sparsity_models import HeadFirst, splits
from torch import nn
from torch.nn.utils import parametrizations

from prunekit.recover import TrainConfig
from prunekit.workflows.sparsify import sparsify_model


class _WeightNormMLP(nn.Module):
    """conv -> weight_norm Linear -> Linear head, on the ``[2, 3, 3]`` inputs of ``splits``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 2)
        self.fc = parametrizations.weight_norm(nn.Linear(32, 16))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def _zeros(weight: torch.Tensor) -> float:
    return float((weight.detach() == 0).float().mean())


def test_sparsify_leaves_the_classifier_dense_when_it_is_declared_first() -> None:
    torch.manual_seed(0)
    net = HeadFirst()
    head = net.head.weight.detach().clone()
    net, rows, info = sparsify_model(net, splits(n_train=32, n_eval=16), sparsity=0.8)
    assert [r.name for r in rows] == ["conv.weight", "fc.weight"]
    assert torch.equal(net.head.weight, head)
    assert _zeros(net.fc.weight) == pytest.approx(0.8, abs=0.01) and info["skipped"] == []


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibration_method_with_fine_tuning_leaves_a_weight_norm_layer_dense_and_says_so(method: str) -> None:
    torch.manual_seed(1)
    net = _WeightNormMLP()
    dense = net.fc.weight.detach().clone()
    config = TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=2, lr=0.05)
    with pytest.warns(UserWarning, match=r"sparsify: 1 layer\(s\) left dense: fc: its weight is computed by a "
                                         r"parametrization \(_WeightNorm\), so masks cannot hold its zeros"):
        sparse, rows, info = sparsify_model(net, splits(n_train=64, n_eval=16), method=method, sparsity=0.5,
                                            finetune=config, calibration_batches=1)
    assert [r.name for r in rows] == ["conv.weight"] and rows[0].sparsity == pytest.approx(0.5)
    assert _zeros(sparse.conv.weight) == pytest.approx(0.5)  # zeros held through fine-tuning
    assert _zeros(sparse.fc.weight) == 0.0 and not torch.equal(sparse.fc.weight, dense)  # dense, fine-tuned
    assert any(s.startswith("fc: its weight is computed by a parametrization (_WeightNorm)") for s in info["skipped"])
