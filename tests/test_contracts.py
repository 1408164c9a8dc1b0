"""The contract battery (STYLE.md guideline 16): every pattern model and zoo model, every importance.

A model pruned 50 % by l2 is an ordinary ``nn.Module`` (no hooks, no parametrizations), exports
with ``torch.export`` and to ONNX (ONNX Runtime agrees with torch), the same seed gives the same
plan, and ``apply`` is atomic. Every registered importance is pure: the model is left
unchanged, the scores have shape ``[size]`` and repeat exactly.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunekit.graph import DependencyGraph
from prunekit.importance import IMPORTANCE, score
from prunekit.measure import export_onnx
from prunekit.models import create
from prunekit.structured import Plan, allocate, apply, verify

from _models import CONTRACT_PATTERNS as PATTERNS
from _models import example


class Case(NamedTuple):
    model: nn.Module
    x: torch.Tensor
    graph: DependencyGraph
    plan: Plan
    pruned: nn.Module


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    **PATTERNS,
    "resnet20": (lambda: create("resnet20"), (2, 1, 28, 28)),
    "mobilenet_v3_small": (lambda: create("mobilenet_v3_small"), (2, 3, 32, 32)),
    "densenet121": (lambda: create("densenet121"), (2, 3, 32, 32)),
}
HEAVY = {"densenet121"}  # slow for every check
HEAVY_ONNX = {"resnet20", "mobilenet_v3_small", "densenet121"}  # ONNX export alone takes 5-20 s


def _params(heavy: set[str], names: list[str] | None = None) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in heavy else n for n in names or list(MODELS)]


def _build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    return factory().eval(), example(shape, seed)


@functools.cache
def _case(name: str) -> Case:
    model, x = _build(name)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    return Case(model, x, graph, plan, apply(model, graph, plan, example_inputs=x).eval())


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a pure function must not change: tensors, flags, grads, hooks, plain attributes."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": [p.grad is None for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                  for m in model.modules()],
        "attributes": [{k: v for k, v in vars(m).items() if isinstance(v, (int, float, bool, tuple))}
                       for m in model.modules()],
    }


def _assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert {k: v for k, v in before.items() if k != "state"} == {k: v for k, v in after.items() if k != "state"}


@pytest.mark.parametrize("name", _params(HEAVY))
def test_pruned_model_is_plain(name: str) -> None:
    case = _case(name)
    assert type(case.pruned) is type(case.model)
    assert sum(p.numel() for p in case.pruned.parameters()) < sum(p.numel() for p in case.model.parameters())
    for module in case.pruned.modules():
        assert not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
        assert not parametrize.is_parametrized(module)
    assert not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
    verify(case.model, case.pruned, case.graph, case.plan, case.x)  # pruned == masked dense model


@pytest.mark.parametrize("name", _params(HEAVY))
def test_torch_export(name: str) -> None:
    case = _case(name)
    program = torch.export.export(case.pruned, (case.x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(case.x), case.pruned(case.x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", _params(HEAVY_ONNX))
def test_onnx_runtime_matches_torch(name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    case = _case(name)
    path = export_onnx(case.pruned, case.x, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: case.x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), case.pruned(case.x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", _params(HEAVY))
def test_same_seed_same_plan(name: str) -> None:
    plans = []
    for _ in range(2):
        model, x = _build(name, seed=3)
        graph = DependencyGraph.trace(model, x)
        scores = score(graph, model, "random", seed=7)
        plans.append((allocate(graph, scores, 0.5, scope="global").to_dict(),
                      allocate(graph, score(graph, model, "l2"), 0.3).to_dict()))
    assert plans[0] == plans[1]


@pytest.mark.parametrize("name", _params(HEAVY))
def test_apply_is_atomic(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_module = importlib.import_module("prunekit.structured.apply")  # NOTE: the package re-exports
    # a function of the same name, so ``import prunekit.structured.apply as m`` gives the function.
    case = _case(name)
    before = _snapshot(case.model)
    calls = []
    real = apply_module.refresh_for

    def fail_midway(module: nn.Module):  # type: ignore[no-untyped-def]
        calls.append(module)
        if len(calls) == 2:  # NOTE: after some tensors and one module were already changed
            raise RuntimeError("injected failure")
        return real(module)

    monkeypatch.setattr(apply_module, "refresh_for", fail_midway)
    with pytest.raises(RuntimeError, match="injected failure"):
        apply(case.model, case.graph, case.plan, example_inputs=case.x)
    assert len(calls) == 2
    _assert_unchanged(before, _snapshot(case.model))


def _batches(case: Case) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with torch.no_grad():
        out = case.model(case.x)
    return [(case.x, out.argmax(-1))]


IMPORTANCE_MODELS = [n for n in MODELS if n not in HEAVY and n != "mobilenet_v3_small"]


@pytest.mark.parametrize("importance", IMPORTANCE.names())
@pytest.mark.parametrize("name", IMPORTANCE_MODELS)
def test_importance_is_pure(importance: str, name: str) -> None:
    case = _case(name)
    entry = IMPORTANCE.get(importance)
    data = {"batches": _batches(case)} if entry.meta.get("needs_data") or entry.meta.get("needs") else {}
    before = _snapshot(case.model)
    first = score(case.graph, case.model, importance, **data)
    second = score(case.graph, case.model, importance, **data)
    _assert_unchanged(before, _snapshot(case.model))
    assert set(first) == {g.id for g in case.graph.prunable}
    for group in case.graph.prunable:
        assert first[group.id].shape == (group.size,), (importance, group.id)
        assert torch.equal(first[group.id], second[group.id]), (importance, group.id)


def _process_state() -> dict[str, Any]:
    """What no prunekit call may leave changed: GC, torch's RNG, thread count, torch's classes."""
    import gc

    return {"gc": gc.isenabled(), "rng": torch.random.get_rng_state(), "threads": torch.get_num_threads(),
            "mha": nn.MultiheadAttention.forward}


_GC_SEEN: list[bool] = []  # NOTE: gc.isenabled() each time user code (a forward) runs


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(6, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import gc

        _GC_SEEN.append(gc.isenabled())
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0] + h)


def test_trace_score_apply_measure_leave_the_process_as_it_was() -> None:
    """No process-wide side effects (DESIGN.md): the collector stays on while prunekit traces,
    scores, applies and times, the global RNG is not reseeded, thread counts are restored, and
    pruned attention is a new module of a real class, not a class swap of the user's module."""
    from prunekit.graph.handlers.attention_modules import PrunedMultiheadAttention
    from prunekit.measure import measure_latency

    torch.manual_seed(0)
    model, x = _Attention().eval(), torch.randn(2, 5, 6)
    before, classes = _process_state(), [type(m) for m in model.modules()]
    _GC_SEEN.clear()
    with torch.no_grad():
        graph = DependencyGraph.trace(model, x)
        heads = next(g for g in graph.prunable if g.size == 4)  # NOTE: only heads: inner width < embed_dim
        plan = allocate(graph, {heads.id: score(graph, model, "random", seed=1)[heads.id]}, 0.5)
        pruned = apply(model, graph, plan, example_inputs=x)  # NOTE: verify runs both models
        measure_latency(pruned, x, threads=1, repeats=2, warmup=1)
    after = _process_state()
    assert len(_GC_SEEN) >= 4 and all(_GC_SEEN), f"user code ran with the garbage collector off: {_GC_SEEN}"
    assert after["gc"]
    assert torch.equal(after["rng"], before["rng"]) and after["threads"] == before["threads"]
    assert after["mha"] is before["mha"] and [type(m) for m in model.modules()] == classes
    assert type(pruned.attn) is PrunedMultiheadAttention and pruned.attn.num_heads == 2
