"""The default path's speed-ups change nothing it produces: MACs estimated from the dense count's
terms equal counted ones, plans are the ones counting every step gives, verification runs the
masked dense model once, and the rounding table reads its layer shapes from the same count."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs, count_params
from prunekit.structured import StructuredPruner, Target, allocate, apply, search
from prunekit.structured.rounding import LayerTimings
from prunekit.structured.target import _Meter, dense_terms

target_module = importlib.import_module("prunekit.structured.target")
verify_module = importlib.import_module("prunekit.structured.verify")


class Grouped(nn.Module):
    """Grouped and depthwise convs and a layer-scale parameter, ending in a kept classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.scale = nn.Parameter(torch.ones(64, 1, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(self.grouped(self.stem(x).relu())) * self.scale
        return self.fc(y.mean((2, 3)))


def _vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (1, 3, 64, 64)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), (1, 3, 64, 64)),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (1, 3, 32, 32)),
    "grouped": (Grouped, (1, 3, 16, 16)),
    "vit": (_vit, (1, 3, 32, 32)),
}


def _setup(name: str) -> tuple[nn.Module, torch.Tensor, DependencyGraph, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    build, shape = MODELS[name]
    model, x = build().eval(), torch.randn(shape)
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    graph = DependencyGraph.trace(model, x, ignore=(last,))
    return model, x, graph, dict(score(graph, model, "l2"))


def _counting_every_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter as it was: every plan's MACs and params counted on the pruned meta twin."""
    def count(self: _Meter, plan: Any) -> dict[str, float]:
        return self._measure_twin(apply(self.twin[0], self.graph, plan, verify_result=False))
    monkeypatch.setattr(_Meter, "_count", count)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "densenet121", "grouped"])
def test_estimated_macs_and_params_equal_the_counted_ones(name: str) -> None:
    model, x, graph, scores = _setup(name)
    meter = _Meter(model, graph, x, Target(macs=0.5))
    assert meter.dense == {"macs": count_macs(model, x), "params": count_params(model)}
    for kwargs in ({"ratio": 0.5}, {"ratio": 0.3, "scope": "global"}, {"ratio": 0.9}):
        plan = allocate(graph, scores, **kwargs)
        pruned = apply(model, graph, plan, example_inputs=x)
        assert meter._estimate(plan) == {"macs": count_macs(pruned, x), "params": count_params(pruned)}
        assert meter(plan)["macs_count"] == count_macs(pruned, x)
    assert meter.exact and meter.checked == {g.id for g in graph.prunable}


def test_a_model_the_estimate_misses_is_counted_every_time() -> None:
    model, x, graph, scores = _setup("vit")
    meter = _Meter(model, graph, x, Target(macs=0.5))
    assert meter.terms is not None and meter.terms.rest_flops > 0  # attention: no weight to scale with
    for ratio in (0.5, 0.25):
        plan = allocate(graph, scores, ratio)
        pruned = apply(model, graph, plan, example_inputs=x)
        assert meter(plan)["macs_count"] == count_macs(pruned, x)
    assert not meter.exact


class _AlwaysFaster:
    """A rounding table for which every rounding pays (exercises the pinned search)."""

    def pays(self, group_id: str, exact: int, rounded: int) -> bool:
        return True


_SLOW = pytest.mark.slow  # NOTE: counting every bisection and fill step of a torchvision model: ~10 s each


@pytest.mark.parametrize(("name", "target"), [
    *[(n, t) for n in ("grouped", "vit") for t in (Target(ratio=0.5), Target(macs=0.4), Target(params=0.5))],
    ("mobilenet_v3_small", Target(ratio=0.5)),
    *[pytest.param(n, t, marks=_SLOW) for n in ("resnet18", "mobilenet_v3_small") for t in (Target(macs=0.4),
                                                                                        Target(params=0.5))],
    pytest.param("resnet18", Target(ratio=0.5), marks=_SLOW),
])
def test_plans_are_those_counting_every_step_gives(name: str, target: Target,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, graph, scores = _setup(name)

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        plan, achieved = search(model, graph, scores, target, example_inputs=x, verify_result=False,
                                allocate_kwargs={"round_to": "auto", "timings": _AlwaysFaster()})
        return plan.to_dict(), achieved

    fast = run()
    _counting_every_plan(monkeypatch)
    assert fast == run()


def test_the_default_path_keeps_the_same_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, *_ = _setup("mobilenet_v3_small")
    pruner = StructuredPruner({"ratio": 0.5}, ignore=["classifier.3"], round_to=8)
    pruned = pruner.fit_transform(model, x)
    _counting_every_plan(monkeypatch)
    again = StructuredPruner({"ratio": 0.5}, ignore=["classifier.3"], round_to=8)
    assert torch.equal(again.fit_transform(model, x)(x), pruned(x))
    assert again.plan_.to_dict() == pruner.plan_.to_dict() and again.achieved_ == pruner.achieved_


def test_verification_runs_the_masked_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: nn.MultiheadAttention reads out_proj's weight without calling out_proj: its input
    # cannot be zeroed, its weight is; the pruned run shows that, so the dense run is not repeated.
    model, x, graph, scores = _setup("vit")
    plan = allocate(graph, scores, 0.5)
    calls = []
    run = verify_module._run
    monkeypatch.setattr(verify_module, "_run", lambda *a, **k: calls.append(k["zero"]) or run(*a, **k))
    apply(model, graph, plan, example_inputs=x)
    assert calls == [False, True]


def test_the_rounding_table_reads_the_layer_shapes_of_the_dense_count() -> None:
    model, x, graph, _ = _setup("mobilenet_v3_small")
    _, _, terms = dense_terms(model, x)
    assert LayerTimings(model, graph, x, cache=False, shapes=terms.inputs)._layers == \
        LayerTimings(model, graph, x, cache=False)._layers


pruner_module = importlib.import_module("prunekit.structured.pruner")


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every MACs count of the search (the dense twin's and each pruned twin's), recorded."""
    calls: list[int] = []
    real = target_module.macs_terms
    monkeypatch.setattr(target_module, "macs_terms", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_ratio_target_counts_nothing_until_achieved_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, graph, scores = _setup("resnet18")
    _, eager = search(model, graph, scores, Target(ratio=0.5), example_inputs=x, verify_result=False,
                      allocate_kwargs={"round_to": 8})
    calls = _count_passes(monkeypatch)
    pruner = StructuredPruner({"ratio": 0.5}, ignore=["fc"], round_to=8).fit(model, x)
    assert calls == []  # NOTE: a ratio plan is allocated, not searched: nothing to count
    assert list(pruner.achieved_.items()) == list(eager.items())  # same values, same order
    assert len(calls) == 2 and pruner.achieved_ is pruner.achieved_  # dense and pruned twin, once


def test_a_failed_refit_keeps_the_counts_of_the_last_fit() -> None:
    model, x, *_ = _setup("grouped")
    pruner = StructuredPruner({"ratio": 0.5}, ignore=["fc"], round_to=8).fit(model, x)
    pruner.target = {"ratio": 0.5, "macs": 0.5}
    with pytest.raises(ConfigError, match="exactly one"):
        pruner.fit(model, x)
    assert pruner.achieved_["macs"] == pytest.approx(count_macs(pruner.transform(model), x) / count_macs(model, x))


def test_the_default_ratio_path_is_the_counted_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: round_to="auto" with a table where every rounding pays: the pinned search runs and the
    # layer shapes are read, as on MobileNetV3 with real timings, but nothing depends on this machine
    model, x, *_ = _setup("mobilenet_v3_small")
    monkeypatch.setattr(pruner_module, "LayerTimings", lambda *a, **k: _AlwaysFaster())
    lazy = StructuredPruner({"ratio": 0.5}, ignore=["classifier.3"])
    pruned = lazy.fit_transform(model, x)
    real = pruner_module.search
    monkeypatch.setattr(pruner_module, "search", lambda *a, **k: real(*a, **{**k, "counted": True}))
    eager = StructuredPruner({"ratio": 0.5}, ignore=["classifier.3"])
    again = eager.fit_transform(model, x)
    assert "rounded" in eager.plan_.meta
    assert eager.plan_.to_dict() == lazy.plan_.to_dict()
    assert list(eager.achieved_.items()) == list(lazy.achieved_.items())
    assert torch.equal(again(x), pruned(x))


def test_outputs_are_zeroed_in_place_only_when_they_own_their_memory() -> None:
    conv, x = nn.Conv2d(3, 4, 1), torch.randn(1, 3, 2, 2)

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.weight

    assert verify_module._fresh(conv(x), conv, (x,))
    assert not verify_module._fresh(x, conv, (x,))  # the input itself
    assert not verify_module._fresh(x[:, :2], conv, (x,))  # a view of it
    scale = Scale()
    assert not verify_module._fresh(scale(x), scale, (x,))  # the layer's own parameter
