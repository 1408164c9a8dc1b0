"""Zeros count only where the forward uses them: parametrized weights and layers with their own forward."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from prunekit.errors import ConfigError
from prunekit.sparsity import Sparsifier, attach, sparsity_report
from prunekit.sparsity.oneshot import one_shot


class _Standardised(nn.Conv2d):
    """Standardises its weight in forward (as timm's StdConv2d): stored zeros are not the zeros used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        std = self.weight.std(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, (self.weight - mean) / (std + 1e-5), self.bias)


def _weight_norm_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(parametrizations.weight_norm(nn.Linear(16, 16)), nn.ReLU(), nn.Linear(16, 4)).eval()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_one_shot_on_weight_norm_zeroes_the_weight_the_forward_uses(method: str) -> None:
    model, x = _weight_norm_mlp(), torch.randn(32, 16)
    result = one_shot(model, [x], method=method, sparsity=0.5)
    layer = result.model[0]
    used = layer.weight.detach()  # g * v / ||v||, computed from the parametrization's tensors
    assert [r.name for r in result.layers] == ["0"] and result.skipped[-1].startswith("2:")
    assert float((used == 0).float().mean()) == 0.5 == result.layers[0].sparsity == result.sparsity
    assert torch.equal(layer.parametrizations.weight.original1 == 0, used == 0)  # zeros of v are zeros of w
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model[2](torch.relu(torch.nn.functional.linear(
            x, used, model[0].bias))))


def test_one_shot_skips_a_parametrization_that_cannot_hold_the_pruned_weight() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(parametrizations.spectral_norm(nn.Linear(16, 16)), nn.Linear(16, 16), nn.Linear(16, 4))
    model.eval()
    before = model[0].weight.detach().clone()
    result = one_shot(model, [torch.randn(8, 16)], method="magnitude", sparsity=0.5)
    assert [r.name for r in result.layers] == ["1"]
    assert any(s.startswith("0: its weight is computed by a parametrization (_SpectralNorm) that cannot hold "
                            "the pruned weight exactly") for s in result.skipped)
    torch.testing.assert_close(result.model[0].weight, before)


def test_weight_norm_with_a_row_pruned_to_zero_is_restored_not_nan() -> None:
    model = _weight_norm_mlp()
    with torch.no_grad():
        model[0].parametrizations.weight.original0[0] = 1e-6  # row 0 tiny: magnitude prunes all of it
    before = model[0].weight.detach().clone()
    result = one_shot(model, [torch.randn(8, 16)], method="magnitude", sparsity=0.5, include=["0"])
    assert result.layers == () and result.sparsity == 0.0
    assert result.skipped[0].startswith("0: its weight is computed by a parametrization (_WeightNorm)")
    torch.testing.assert_close(result.model[0].weight, before)


def test_one_shot_skips_a_layer_with_its_own_forward() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(_Standardised(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)).eval()
    before = model[0].weight.detach().clone()
    result = one_shot(model, [torch.randn(2, 8, 6, 6)], method="magnitude", sparsity=0.5)
    assert [r.name for r in result.layers] == ["1"]
    assert result.skipped == ("0: _Standardised has its own forward (not Conv2d's), which may not use the stored "
                              "weight as it is (e.g. weight standardisation), so zeros there would not be real",)
    assert torch.equal(result.model[0].weight, before)
    with pytest.raises(ConfigError, match="none of the selected layers can be pruned: 0: _Standardised has its "
                                          "own forward"):
        one_shot(model, [torch.randn(2, 8, 6, 6)], method="magnitude", include=["0"])


def test_sparsifier_leaves_such_layers_dense_and_says_why() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(16, 16)), _Standardised(1, 8, 1),
                          nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.warns(UserWarning, match="Sparsifier: 2 selected weight"):
        sparsifier = Sparsifier(0.5).prepare(model)
    assert sparsifier.targets_ == ["2.weight"]
    assert sparsifier.skipped_[0].startswith("0.weight: its weight is computed by a parametrization (_WeightNorm)")
    assert sparsifier.skipped_[1].startswith("1.weight: _Standardised has its own forward")
    sparsifier.apply()
    assert [(r.name, r.sparsity) for r in sparsifier.sparsity_report()] == [("2.weight", 0.5)]
    assert float((model[0].weight == 0).float().mean()) == 0.0
    sparsifier.finalize()
    assert [r.zeros for r in sparsity_report(model, ["0.weight"])] == [0]


def test_sparsifier_on_only_a_weight_norm_layer_names_the_parametrization() -> None:
    model = _weight_norm_mlp()
    with pytest.raises(ConfigError) as info:
        Sparsifier(0.5, ignore=["2"]).prepare(model)
    message = str(info.value)
    assert "computed by a parametrization (_WeightNorm)" in message and "is not a parameter" not in message
    with pytest.raises(ConfigError, match=r"'0.weight' is computed by a parametrization \(_WeightNorm\)"):
        attach(model, {"0.weight": torch.ones(16, 16, dtype=torch.bool)})


def test_sparsifier_warns_when_a_masked_weight_is_tied() -> None:
    model = nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 16, bias=False))
    model[1].weight = model[0].weight
    with pytest.warns(UserWarning, match="masking '1.weight' also zeroes '0.weight'"):
        Sparsifier(0.5, include=["1"]).prepare(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sparsifier(0.5, include=["1"]).prepare(nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 16)))
