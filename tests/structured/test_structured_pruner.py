"""StructuredPruner: scikit-learn's shape, pure fit, atomic transform, params as the recipe stage."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from prunekit import models
from prunekit.errors import ConfigError, NotFittedError, UnknownNameError
from prunekit.measure import count_macs
from prunekit.structured import StructuredPruner, Target


def _cnn() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return models.create("simple_cnn"), models.example_input("simple_cnn")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_init_stores_only_and_fit_does_not_change_the_model() -> None:
    model, x = _cnn()
    pruner = StructuredPruner({"ratio": 5.0}, importance="nope")  # nothing is checked yet
    assert pruner.target == {"ratio": 5.0} and pruner.importance == "nope"
    before, training = _state(model), model.training
    pruner = StructuredPruner(Target(macs=0.5), importance="l1").fit(model, x)
    assert model.training == training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(pruner.scores_) == {g.id for g in pruner.graph_.prunable}
    assert pruner.achieved_["macs"] <= 0.5 and pruner.plan_.ratio > 0


def test_transform_gives_a_smaller_verified_model() -> None:
    model, x = _cnn()
    pruner = StructuredPruner({"ratio": 0.5})
    pruned = pruner.fit_transform(model, x)
    assert pruned is not model and pruned.conv1.out_channels == 2 and model.conv1.out_channels == 4
    assert count_macs(pruned, x) == pruner.achieved_["macs_count"]
    assert pruned(x).shape == model(x).shape


def test_transform_of_another_model_is_refused_in_one_line() -> None:
    """The plan indexes the fitted model's tensors: another model gets a message, not an IndexError."""
    model, x = _cnn()
    pruner = StructuredPruner({"ratio": 0.5}).fit(model, x)
    other = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match=r"not the model the pruner was fitted on \('conv1.bias' is missing\)"):
        pruner.transform(other)
    wider = models.create("simple_cnn", num_classes=5)
    with pytest.raises(ConfigError, match=r"has shape \(5,\), not \(10,\)"):
        pruner.transform(wider)
    assert pruner.transform(model)(x).shape == model(x).shape


def test_transform_is_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _cnn()
    pruner = StructuredPruner({"ratio": 0.5}).fit(model, x)
    before = _state(model)

    def broken(module: torch.nn.Module) -> None:
        raise RuntimeError("simulated failure half-way through apply")

    # NOTE: the package re-exports the function `apply`, which shadows the module of that name.
    monkeypatch.setattr(sys.modules["prunekit.structured.apply"], "refresh_for", lambda module: broken)
    with pytest.raises(RuntimeError, match="simulated"):
        pruner.transform(model)
    assert model.conv1.out_channels == 4 and model.conv1.weight.shape == (4, 1, 3, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_get_params_round_trips_through_yaml() -> None:
    pruner = StructuredPruner(Target(macs=0.5), importance="l1", scope="global", round_to=4,
                              ignore=("conv1",), steps=2, seed=3,
                              options={"layer_ratios": {"fc1": 0.5}})
    params = pruner.get_params()
    assert set(params) == {"target", "importance", "scope", "round_to", "ignore", "steps", "seed",
                           "options", "freeze"}
    again = StructuredPruner(**yaml.safe_load(yaml.safe_dump(params)))
    assert again == pruner and again.get_params() == params
    assert StructuredPruner({"ratio": 0.1}).get_params()["options"] is None


def test_learned_attributes_before_fit_raise_not_fitted() -> None:
    pruner = StructuredPruner({"ratio": 0.5})
    for name in ("plan_", "graph_", "scores_", "achieved_"):
        with pytest.raises(NotFittedError, match=f"'{name}'.*not fitted.*fit\\(model"):
            getattr(pruner, name)
    with pytest.raises(NotFittedError):
        pruner.transform(models.create("simple_cnn"))


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"target": {"ratio": 1.5}}, ConfigError, "ratio"),
    ({"target": {"ratio": 0.2, "macs": 0.5}}, ConfigError, "exactly one"),
    ({"target": 0.5}, ConfigError, "mapping"),
    ({"target": {"ratio": 0.2}, "importance": "l3"}, UnknownNameError, "Unknown importance 'l3'"),
    ({"target": {"ratio": 0.2}, "scope": "globl"}, ConfigError, "'scope' must be"),
    ({"target": {"ratio": 0.2}, "round_to": 0}, ConfigError, "'round_to' must be 'auto' or an int >= 1; got 0"),
    ({"target": {"ratio": 0.2}, "ignore": "conv1"}, ConfigError, "not a bare string"),
    ({"target": {"ratio": 0.2}, "options": {"max_ratio": 2}}, ConfigError, "max_ratio"),
])
def test_fit_validates_every_parameter(kwargs: dict, error: type, words: str) -> None:
    model, x = _cnn()
    with pytest.raises(error, match=words):
        StructuredPruner(**kwargs).fit(model, x)


def test_several_steps_give_one_plan_against_the_dense_model() -> None:
    torch.manual_seed(0)
    model, x = models.create("lenet5"), models.example_input("lenet5")
    pruner = StructuredPruner({"macs": 0.5}, steps=2).fit(model, x)
    pruned = pruner.transform(model)
    assert pruner.plan_.meta["steps"] == 2
    assert count_macs(pruned, x) / count_macs(model, x) == pytest.approx(pruner.achieved_["macs"])
    assert pruner.achieved_["macs"] <= 0.5


def test_a_submodule_the_user_froze_in_eval_stays_so() -> None:
    """Fine-tuning with a BatchNorm frozen in eval (model.train(), bn.eval()): pruning ran eval-mode
    passes and ended with model.train(True), which switched the frozen BatchNorm back to training."""
    model, x = _cnn()
    model.train()
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] or [model.conv1]
    for m in frozen:
        m.eval()
    pruner = StructuredPruner({"ratio": 0.5})
    small = pruner.fit_transform(model, x)
    assert model.training and all(not m.training for m in frozen)
    assert small is not model


class _Stateful(torch.nn.Module):
    """A forward that writes state in eval mode too: a call counter, an average of its activations
    (written in place), a last-input record (a buffer rebound to a new tensor) and a quantisation
    observer (its min/max buffers resized in place on the first call)."""

    def __init__(self) -> None:
        from torch.ao.quantization import MinMaxObserver

        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc, self.observer = torch.nn.Linear(16, 4), MinMaxObserver()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("average", torch.zeros(()))
        self.register_buffer("last", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        self.calls += 1
        self.average.mul_(0.9).add_(0.1 * h.detach().mean())
        self.last = x.detach().flatten()[:1].clone()
        return self.observer(self.fc(torch.relu(self.head(h)).mean((2, 3))))


@pytest.mark.parametrize("target", [{"ratio": 0.5}, {"macs": 0.5}])
def test_the_users_model_keeps_the_state_its_forward_writes(target: dict) -> None:
    """Tracing, counting and verification run the user's own model: its buffers (written in place,
    rebound, or resized in place) are as they were afterwards."""
    torch.manual_seed(0)
    model, x = _Stateful().eval(), torch.randn(2, 3, 8, 8)
    before = {k: (v.clone(), v) for k, v in model.state_dict(keep_vars=True).items()}
    small = StructuredPruner(target, ignore=["fc"]).fit_transform(model, x)
    assert small.conv.out_channels < 16
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for key, (values, tensor) in before.items():
        assert after[key] is tensor and after[key].shape == values.shape and torch.equal(after[key], values), key


def test_weights_in_channels_last_stay_so_and_compute_the_same() -> None:
    """A user who put the model in channels_last for its kernels keeps that layout in the pruned weights."""
    model, x = _cnn()
    plain = StructuredPruner({"ratio": 0.5}).fit_transform(model.eval(), x)
    fast = StructuredPruner({"ratio": 0.5}).fit_transform(model.to(memory_format=torch.channels_last), x)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-5)
