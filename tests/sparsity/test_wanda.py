"""Wanda: the mask is the row-wise top-k of |W|·‖X‖, and kept weights are not changed."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.sparsity.oneshot import one_shot


def test_mask_is_the_rowwise_topk_of_weight_times_input_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 3))
    batches = [torch.randn(7, 20) * torch.linspace(0.1, 3, 20) for _ in range(3)]
    result = one_shot(model, batches, method="wanda", sparsity=0.4, include=["0"], progress=False)
    weight = model[0].weight.detach()
    norms = torch.cat(batches).pow(2).sum(0).sqrt()
    keep = torch.topk(weight.abs() * norms, k=20 - 8, dim=1).indices
    expected = torch.zeros_like(weight, dtype=torch.bool).scatter_(1, keep, True)
    pruned = result.model[0].weight.detach()
    assert torch.equal(pruned != 0, expected)
    assert torch.equal(pruned, weight * expected)  # Wanda does not update the kept weights
    # Magnitude alone would choose another mask here: the activations matter.
    by_magnitude = torch.zeros_like(expected).scatter_(1, torch.topk(weight.abs(), k=12, dim=1).indices, True)
    assert not torch.equal(by_magnitude, expected)


def test_second_layer_is_scored_on_its_own_inputs() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.Linear(8, 2))
    batches = [torch.randn(5, 8) for _ in range(2)]
    result = one_shot(model, batches, method="wanda", sparsity=0.5, progress=False)
    # Wanda calibrates every layer of a block in one pass, on the dense model's activations.
    hidden = torch.relu(model[0](torch.cat(batches))).detach()
    scores = model[2].weight.detach().abs() * hidden.norm(dim=0)
    expected = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, torch.topk(scores, 8, dim=1).indices, True)
    assert torch.equal(result.model[2].weight != 0, expected)
