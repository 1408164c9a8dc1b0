"""Verification sees a wrong cut that the model hides at initialisation: a residual branch closed by a
zero norm scale or a layer scale of 1e-6, and outputs too small for an absolute tolerance.

Each wrong cut is built as a missed dependency would be: one group split in two, the producers
keeping other channels than the consumers read (every shape valid, the function wrong).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import Plan, allocate, apply
from prunekit.structured.apply import VerificationError


class _SilentBranches(nn.Module):
    """Two residual blocks whose branches add nothing at initialisation: one ends in a batch norm with
    a zero scale (torchvision's zero_init_residual), one in a layer scale of 1e-6 (ConvNeXt)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2, self.a_bn = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8)
        nn.init.zeros_(self.a_bn.weight)
        self.b1, self.b2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 8, 1)
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 1e-6))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.a_bn(self.a2(torch.relu(self.a1(x))))
        x = x + self.gamma * self.b2(torch.relu(self.b1(x)))
        return self.head(x.mean((2, 3)))


class _Quiet(nn.Module):
    """An MLP without biases whose outputs are about 1e-6 on a small input (random-init logits are small)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32, bias=False), nn.Linear(32, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _split(graph: DependencyGraph, group_id: str) -> tuple[DependencyGraph, Plan]:
    """The graph with ``group_id`` split into its producers and its consumers, and a plan keeping the
    first half of the channels in the producers and the second half in the consumers."""
    group = graph.group(group_id)
    producers = dataclasses.replace(group, members=tuple(m for m in group.members if m.role != "consumer"))
    consumers = dataclasses.replace(
        group, id=f"{group_id}__b", attrs=(), members=tuple(m for m in group.members if m.role == "consumer")
    )
    groups = tuple(g for g in graph.groups if g.id != group_id) + (producers, consumers)
    half = group.size // 2
    plan = Plan(
        keep={producers.id: tuple(range(half)), consumers.id: tuple(range(half, group.size))},
        sizes={producers.id: group.size, consumers.id: group.size},
    )
    return dataclasses.replace(graph, groups=groups), plan


@pytest.mark.parametrize("group_id", ["a1.weight:0", "b1.weight:0"])
def test_a_wrong_cut_inside_a_silenced_branch_is_refused_and_the_model_restored(group_id: str) -> None:
    torch.manual_seed(0)
    model, x = _SilentBranches().eval(), torch.randn(2, 3, 6, 6)
    before = {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}
    graph, plan = _split(DependencyGraph.trace(model, x), group_id)
    with pytest.raises(VerificationError, match="differs from the masked dense model"):
        apply(model, graph, plan, example_inputs=x)
    after = model.state_dict()
    assert all(
        after[k].dtype == dtype and torch.equal(after[k], value) for k, (dtype, value) in before.items()
    )
    assert not model.a_bn.weight.any() and torch.all(model.gamma == 1e-6)


def test_a_correct_prune_of_silenced_branches_passes_and_both_models_keep_their_values() -> None:
    torch.manual_seed(0)
    model, x = _SilentBranches().eval(), torch.randn(2, 3, 6, 6)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    assert {"a1.weight:0", "b1.weight:0"} <= {g for g in plan.sizes if plan.removed(g)}
    pruned = apply(model, graph, plan, example_inputs=x)  # verified: no error
    assert pruned.a1.out_channels < 16 and pruned.b1.out_channels < 16
    assert not model.a_bn.weight.any() and not pruned.a_bn.weight.any()
    assert torch.all(model.gamma == 1e-6) and torch.all(pruned.gamma == 1e-6)


def test_a_wrong_cut_is_refused_when_the_outputs_are_far_below_one() -> None:
    torch.manual_seed(0)
    model, x = _Quiet().eval(), torch.randn(4, 16) * 1e-5
    graph, plan = _split(DependencyGraph.trace(model, x), "fc1.weight:0")
    with torch.no_grad():
        assert float(model(x).abs().max()) < 1e-5  # the old absolute tolerance: any difference passed
    with pytest.raises(VerificationError, match="differs from the masked dense model"):
        apply(model, graph, plan, example_inputs=x)
    correct = allocate(DependencyGraph.trace(model, x), score(graph, model, "l2"), 0.5, round_to=1)
    apply(model, DependencyGraph.trace(model, x), correct, example_inputs=x)  # a correct cut still passes
