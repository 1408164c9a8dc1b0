"""A cut that verification refuses: the groups to blame are found by bisection, kept whole with the
reason, and the target is met with the others; the result is verified, the user warned."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner, VerificationError, allocate, apply
from prunekit.structured.apply import mask
from prunekit.structured.fallback import blame
from prunekit.importance import score


class Misleading(nn.Module):
    """``self.heads`` is 4 but the view uses a literal 4 too: the trace takes the attribute for the
    head count and rewrites it, the literal stays, so cutting heads breaks the view."""

    def __init__(self) -> None:
        super().__init__()
        self.heads, self.head_dim = 4, 4
        self.embed = nn.Linear(5, 16)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        b, n, _ = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, 4, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))
        return self.head((h + self.mlp(h)).mean(1))


def _inputs() -> torch.Tensor:
    return torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(0))


def test_blame_finds_the_one_group_whose_cut_fails() -> None:
    torch.manual_seed(0)
    model, x = Misleading().eval(), _inputs()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    with pytest.raises(VerificationError):
        apply(model, graph, plan, example_inputs=x)
    assert len([g for g in plan.keep if plan.removed(g)]) == 3  # the width, the heads, the MLP
    assert blame(model, graph, plan, x) == ["qkv.weight:0"]


def test_pruner_keeps_the_blamed_group_whole_and_meets_the_target_with_the_others() -> None:
    torch.manual_seed(0)
    model, x = Misleading().eval(), _inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = StructuredPruner({"ratio": 0.5}, round_to=1)
    with pytest.warns(UserWarning, match=r"cutting qkv\.weight:0 failed verification .*kept whole"):
        pruned = pruner.fit_transform(model, x)
    heads = pruner.graph_.group("qkv.weight:0")
    assert not heads.prunable and any("failed verification" in r for r in heads.reasons)
    assert pruned.qkv.out_features == 48 and pruned.heads == 4  # the heads are whole
    assert pruned.embed.out_features < 16 and pruned.mlp[0].out_features < 32  # the others are cut
    assert pruner.achieved_["ratio"] == pytest.approx(0.5, abs=0.05)
    torch.testing.assert_close(pruned(x), mask(model, pruner.graph_, pruner.plan_)(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the user's model is untouched


def test_iterative_pruning_falls_back_in_its_steps_too() -> None:
    with pytest.warns(UserWarning, match="failed verification"):
        pruned = StructuredPruner({"ratio": 0.5}, round_to=1, steps=2).fit_transform(Misleading().eval(), _inputs())
    assert pruned.qkv.out_features == 48 and pruned.embed.out_features < 16


def test_a_model_with_nothing_to_cut_warns_with_the_reason() -> None:
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.warns(UserWarning, match=r"nothing in Sequential can be cut \(model output"):
        pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, torch.randn(1, 4))
    assert pruned[0].out_features == 3
