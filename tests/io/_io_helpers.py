"""Shared by the io tests: a pruned copy of a model, and the check that two modules are equal."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import Plan, allocate, apply


def pruned(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> tuple[nn.Module, Plan]:
    """``model`` with ``ratio`` of its channels removed by L2 norm, and the plan."""
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), ratio)
    return apply(model, graph, plan, verify_result=False).eval(), plan


def outputs(model: nn.Module, *inputs: Any) -> Any:
    with torch.no_grad():
        return model.eval()(*inputs)


def assert_same(loaded: nn.Module, saved: nn.Module, *inputs: Any, exact_state: bool = True) -> None:
    """Equal state dicts (keys in order, dtypes, values) and equal outputs on ``inputs``."""
    if exact_state:
        got, want = loaded.state_dict(), saved.state_dict()
        assert list(got) == list(want)
        for key in got:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    torch.testing.assert_close(outputs(loaded, *inputs), outputs(saved, *inputs), rtol=0, atol=0)
