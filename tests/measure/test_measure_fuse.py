from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, fold_batchnorm, measure_latency
from prunekit.structured import StructuredPruner


def _trained_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so folding is exercised."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.3 * torch.randn_like(x))
    return model.eval()


def test_fold_keeps_the_function_and_removes_every_bn() -> None:
    model = models.create("resnet20", num_classes=10)
    x = torch.randn(4, *models.example_input("resnet20").shape[1:])
    model = _trained_bn(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert folded.remaining == 0
    assert folded.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded.model(x), model(x), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "input model changed"
    assert count_macs(folded.model, x[:1]) <= count_macs(model, x[:1])


def test_fold_on_a_pruned_model_matches_it() -> None:
    torch.manual_seed(0)
    model = models.create("resnet20", num_classes=10)
    x = models.example_input("resnet20")
    model = _trained_bn(model, torch.randn(4, *x.shape[1:]))
    pruned = StructuredPruner({"macs": 0.5}, importance="l2").fit_transform(model, x).eval()
    folded = fold_batchnorm(pruned)
    assert folded.remaining == 0
    with torch.no_grad():
        torch.testing.assert_close(folded.model(x), pruned(x), rtol=1e-4, atol=1e-4)


def test_bn_that_does_not_follow_a_layer_is_counted_as_remaining() -> None:
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    folded = fold_batchnorm(model)
    assert (folded.folded, folded.remaining) == (1, 1)
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded.model(x), model.eval()(x))


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # NOTE: control flow on data: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_untraceable_model_is_a_clear_error_and_torch_backend_still_works() -> None:
    x = torch.randn(1, 1, 6, 6)
    with pytest.raises(ConfigError, match=r"_DataDependent.*backend='torch'"):
        fold_batchnorm(_DataDependent())
    with pytest.raises(ConfigError, match="torch.fx could not trace"):
        measure_latency(_DataDependent(), x, backend="torch-fused", repeats=1, warmup=0)
    assert measure_latency(_DataDependent(), x, backend="torch", repeats=1, warmup=0).median_ms > 0


def test_model_without_bn_is_copied_unchanged() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    folded = fold_batchnorm(model)
    assert (folded.folded, folded.remaining) == (0, 0) and folded.model is not model
    torch.testing.assert_close(folded.model(torch.ones(1, 3)), model(torch.ones(1, 3)))
