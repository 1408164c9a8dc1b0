"""One battery over every registered importance: pure, deterministic, one finite score per channel."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.importance import IMPORTANCE, collect, score

from _importance_models import MODELS, build

# NOTE: per-importance options for the battery (none needed today; bn_scale falls back to l1).
OPTIONS: dict[str, dict[str, Any]] = {}


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert a["requires_grad"] == b["requires_grad"] and a["training"] == b["training"]
    assert a["hooks"] == b["hooks"]
    for n, g in a["grad"].items():
        assert (g is None) == (b["grad"][n] is None) and (g is None or torch.equal(g, b["grad"][n]))


def _unusual_state(model: nn.Module) -> None:
    """Mixed training flags, a frozen parameter and a stale .grad: collect must keep all of them."""
    model.train()
    first = next(iter(model.children()))
    first.eval()
    params = list(model.parameters())
    params[-1].requires_grad_(False)
    params[0].grad = torch.full_like(params[0], 0.25)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("importance", IMPORTANCE.names())
def test_importance_is_pure_deterministic_and_shaped(importance: str, model_name: str) -> None:
    model, graph, batches = build(model_name)
    _unusual_state(model)
    before = _snapshot(model)
    first = score(graph, model, importance, batches=batches, **OPTIONS.get(importance, {}))
    second = score(graph, model, importance, batches=batches, **OPTIONS.get(importance, {}))
    _same(before, _snapshot(model))
    assert first.keys() == {g.id for g in graph.prunable}
    for group in graph.prunable:
        s = first[group.id]
        assert s.shape == (group.size,) and s.dtype == torch.float32
        assert torch.isfinite(s).all()
        assert torch.equal(s, second[group.id])


@pytest.fixture(scope="module")
def residual() -> tuple[nn.Module, Any, Any]:
    model, graph, batches = build("residual")
    return model, graph, collect(model, batches, graph.prunable)


@pytest.mark.parametrize("importance", IMPORTANCE.names())
def test_aggregate_and_normalize_options_are_accepted(importance: str, residual: tuple[nn.Module, Any, Any]) -> None:
    model, graph, stats = residual
    combos = [(a, n) for a in ("sum", "mean", "max") for n in (None, "mean", "max", "sum", "standardize")]
    for (aggregate, normalize), group in ((c, g) for c in combos for g in graph.prunable):
        options = {**OPTIONS.get(importance, {}), "aggregate": aggregate, "normalize": normalize}
        s = IMPORTANCE.get(importance).factory(group, model, stats, **options)
        assert s.shape == (group.size,) and torch.isfinite(s).all()
        if normalize == "max" and s.max() > 0:
            assert s.max().item() == pytest.approx(1.0, rel=1e-5)
        if normalize == "standardize" and s.std() > 0:
            assert s.mean().item() == pytest.approx(0.0, abs=1e-5)


def test_every_importance_declares_whether_it_needs_data() -> None:
    for name in IMPORTANCE.names():
        meta = IMPORTANCE.get(name).meta
        assert isinstance(meta["needs_data"], bool) and meta["description"]
        assert bool(meta.get("needs")) == meta["needs_data"]
