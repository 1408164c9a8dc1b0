"""SparseGPT: exact at sparsity 0, exact N:M counts, lazy batched updates, better reconstruction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.sparsity.oneshot import LayerStats, one_shot, sparsegpt
from prunekit.sparsity.patterns import Pattern


def _correlated(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features come in correlated pairs, with uneven scales: a pruned weight's
    contribution can be largely recovered by updating its partner's weight."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, features // 2, generator=g)
    pairs = torch.cat([latent, latent + 0.3 * torch.randn(tokens, features // 2, generator=g)], dim=1)
    return pairs * (torch.rand(features, generator=g) * 2 + 0.2)


def _stats(x: torch.Tensor) -> LayerStats:
    return LayerStats(x.t() @ x, x.shape[0])


def _error(w: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - pruned).t()).norm() / (x @ w.t()).norm())


def test_sparsity_zero_reproduces_the_layer_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 16))
    batches = [_correlated(32, 24, seed=i) for i in range(3)]
    result = one_shot(model, batches, method="sparsegpt", sparsity=0.0, include=["0"], progress=False)
    assert torch.equal(result.model[0].weight, model[0].weight)
    x = torch.cat(batches)
    torch.testing.assert_close(result.model(x), model(x), rtol=0, atol=0)
    assert result.layers[0].error == 0.0


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
def test_two_four_keeps_exactly_two_of_every_four_inputs(method: str) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 12), nn.ReLU(), nn.Linear(12, 8), nn.Linear(8, 2))
    batches = [torch.randn(16, 32) for _ in range(2)]
    result = one_shot(model, batches, method=method, pattern="2:4", progress=False)
    assert [r.name for r in result.layers] == ["0", "2"]
    for name in ("0", "2"):
        weight = dict(result.model.named_modules())[name].weight
        groups = (weight != 0).reshape(weight.shape[0], -1, 4).sum(-1)
        assert torch.equal(groups, torch.full_like(groups, 2))
    assert result.sparsity == pytest.approx(0.5)


def test_unstructured_reaches_the_exact_fraction_per_block() -> None:
    x = _correlated(200, 64)
    w = torch.randn(10, 64)
    pruned = sparsegpt(w, _stats(x), sparsity=0.5, pattern=Pattern(), blocksize=16)
    # 4 blocks of 10 x 16 weights, each pruned to exactly half.
    blocks = (pruned == 0).reshape(10, 4, 16).sum(dim=(0, 2))
    assert blocks.tolist() == [80, 80, 80, 80]


def test_lazy_batched_updates_equal_column_by_column_updates() -> None:
    # With N:M the mask does not depend on the block size, so the lazy (batched) update of the
    # later columns must give the same weights as updating after every column.
    x = _correlated(300, 32, seed=3)
    w = torch.randn(6, 32)
    lazy = sparsegpt(w, _stats(x), sparsity=0.5, pattern=Pattern.parse("2:4"), blocksize=16)
    eager = sparsegpt(w, _stats(x), sparsity=0.5, pattern=Pattern.parse("2:4"), blocksize=4)
    torch.testing.assert_close(lazy, eager, rtol=1e-4, atol=1e-5)


def test_obs_update_compensates_a_single_pruned_weight() -> None:
    # Pruning one weight of a row: the OBS update is the least-squares optimum of the rest.
    x = _correlated(400, 8, seed=4)
    w = torch.randn(1, 8)
    w[0, 0] = 1e-3  # by far the lowest saliency, so it is the one pruned
    pruned = sparsegpt(w, _stats(x), sparsity=1 / 8, pattern=Pattern(), percdamp=0.0)
    assert pruned[0, 0] == 0 and int((pruned != 0).sum()) == 7
    x64, target = x.double(), (x.double() @ w.double().t())
    best = torch.linalg.lstsq(x64[:, 1:], target).solution.t()
    torch.testing.assert_close(pruned[:, 1:].double(), best, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_reconstruction_beats_wanda_and_magnitude_on_correlated_inputs(pattern: str) -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(48, 24))
    x = _correlated(256, 48, seed=10)
    batches = list(x.split(64))
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        result = one_shot(model, batches, method=method, pattern=pattern, include=["0"], progress=False)
        errors[method] = _error(model[0].weight.detach(), result.model[0].weight.detach(), x)
        assert result.layers[0].error == pytest.approx(errors[method], rel=1e-3)
    assert errors["sparsegpt"] < 0.85 * errors["wanda"] < 0.85 * errors["magnitude"]


def test_always_zero_inputs_are_pruned_first() -> None:
    x = _correlated(100, 16, seed=6)
    x[:, :4] = 0
    w = torch.randn(3, 16)
    pruned = sparsegpt(w, _stats(x), sparsity=0.25, pattern=Pattern(), percdamp=0.01)
    assert (pruned[:, :4] == 0).all() and int((pruned[:, 4:] == 0).sum()) == 0
