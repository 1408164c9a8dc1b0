"""The Sparsifier: targets, importance, scopes, steps along a schedule, state, and clear refusals."""

from __future__ import annotations

import math

import pytest
import torch
from _sparsity_models import HeadFirst, batch, conv_mlp
from torch import nn

from prunekit.errors import ConfigError, NotFittedError, UnknownNameError
from prunekit.sparsity import IMPORTANCE, Evidence, Sparsifier, select_targets
from prunekit.sparsity.masks import masks


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x, y = batch(seed)
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_default_targets_are_conv_and_linear_weights_except_the_classifier() -> None:
    model = conv_mlp()
    assert select_targets(model) == ["conv.weight", "fc1.weight"]
    assert select_targets(model, include=[nn.Linear]) == ["fc1.weight", "fc2.weight"]
    assert select_targets(model, include=["fc*"], ignore=["fc2"]) == ["fc1.weight"]
    with pytest.raises(ConfigError, match="'ignore' entry 'fc3' matches no module.*Did you mean"):
        select_targets(model, ignore=["fc3"])


def test_magnitude_layer_scope_zeroes_the_smallest_weights_of_each_layer() -> None:
    model = conv_mlp()
    original = {n: model.get_parameter(n).detach().clone() for n in ("conv.weight", "fc1.weight")}
    Sparsifier(0.75).prepare(model).apply()
    for name, weight in original.items():
        module = model.get_submodule(name.rpartition(".")[0])
        kept = module.weight != 0
        assert int(kept.sum()) == weight.numel() // 4
        assert weight.abs()[kept].min() >= weight.abs()[~kept].max()
        assert torch.equal(module.weight[kept], weight[kept])


def test_global_scope_ranks_all_layers_together() -> None:
    model = conv_mlp()
    with torch.no_grad():
        model.conv.weight.mul_(100.0)  # conv weights now dominate the global ranking
    sparsifier = Sparsifier(0.5, scope="global").prepare(model).apply()
    report = {r.name: r for r in sparsifier.sparsity_report()}
    total = sum(r.numel for r in report.values())
    assert sum(r.zeros for r in report.values()) == round(0.5 * total)
    assert report["conv.weight"].zeros == 0 and report["fc1.weight"].sparsity > 0.5
    blocks = Sparsifier(0.5, scope="global", pattern="1x4").prepare(conv_mlp()).apply()
    rows = blocks.sparsity_report()
    assert sum(r.zeros for r in rows) == round(0.5 * total)


def test_step_follows_the_schedule_and_pruning_is_monotone() -> None:
    model = conv_mlp()
    sparsifier = Sparsifier(0.75, schedule={"name": "gradual", "end": 8, "frequency": 2}).prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    previous = {n: m.mask.clone() for n, m in masks(model).items()}
    for t in range(10):
        _train_step(model, optimizer, t)
        assert sparsifier.step() == (t in (0, 2, 4, 6, 8))
        expected = sparsifier.schedule_.sparsity_at(t)
        for row in sparsifier.sparsity_report():
            assert row.zeros == round(expected * row.numel)
        for name, mask in masks(model).items():
            assert not torch.any(mask.mask & ~previous[name])  # nothing pruned ever comes back
            previous[name] = mask.mask.clone()
    assert sparsifier.step_ == 9


def test_random_importance_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first = Sparsifier(0.5, importance="random", seed=3).prepare(conv_mlp()).apply()
    again = Sparsifier(0.5, importance="random", seed=3).prepare(conv_mlp()).apply()
    other = Sparsifier(0.5, importance="random", seed=4).prepare(conv_mlp()).apply()
    assert torch.equal(torch.random.get_rng_state(), state)
    mask = masks(first.model_)["fc1.weight"].mask
    assert torch.equal(mask, masks(again.model_)["fc1.weight"].mask)
    assert not torch.equal(mask, masks(other.model_)["fc1.weight"].mask)


@pytest.mark.parametrize("importance", ["taylor", "movement"])
def test_gradient_importance_score_from_accumulated_w_times_grad(importance: str) -> None:
    model = conv_mlp()
    sparsifier = Sparsifier(0.5, importance=importance, include=["fc1"]).prepare(model)
    weight = model.fc1.parametrizations.weight.original
    expected = torch.zeros_like(weight)
    data = [batch(seed) for seed in range(3)]
    for x, y in data:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        product = weight.detach() * weight.grad
        expected += product.square() if importance == "taylor" else -product
    before = weight.detach().clone()
    model.zero_grad()
    sparsifier.accumulate(data, progress=False).apply()
    assert weight.grad is None  # restored to what it was before accumulate()
    assert torch.allclose(sparsifier.state_dict()[importance]["fc1.weight"], expected, atol=1e-6)
    kept = masks(model)["fc1.weight"].mask
    assert expected[kept].min() >= expected[~kept].max()
    assert torch.equal(weight.detach()[kept], before[kept])


def test_gradient_importance_without_gradients_say_how_to_get_them() -> None:
    sparsifier = Sparsifier(0.5, importance="movement").prepare(conv_mlp())
    with pytest.raises(ConfigError, match="needs gradients of 'conv.weight'.*sparsifier.accumulate"):
        sparsifier.apply()


def test_a_registered_importance_is_used_by_name() -> None:
    def last_columns(evidence: Evidence) -> torch.Tensor:
        matrix = evidence.weight.reshape(evidence.weight.shape[0], -1)
        return torch.arange(matrix.shape[1], dtype=torch.float32).expand_as(matrix).reshape(evidence.weight.shape)

    IMPORTANCE.add("test_last_columns", last_columns, needs_gradients=False)
    try:
        model = conv_mlp()
        Sparsifier(0.5, importance="test_last_columns", include=["fc1"]).prepare(model).apply()
        assert torch.count_nonzero(model.fc1.weight[:, :16]) == 0
        assert torch.all(model.fc1.weight[:, 16:] != 0)
    finally:
        IMPORTANCE.remove("test_last_columns")


def test_state_dict_lets_a_fresh_sparsifier_continue_identically() -> None:
    def run(split: int | None) -> dict[str, torch.Tensor]:
        model = conv_mlp()
        options = dict(importance="movement", schedule={"name": "gradual", "end": 6, "frequency": 2})
        sparsifier = Sparsifier(0.5, **options).prepare(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for t in range(8):
            if t == split:
                saved = (model.state_dict(), optimizer.state_dict(), sparsifier.state_dict())
                model = conv_mlp(seed=9)
                sparsifier = Sparsifier(0.5, **options).prepare(model)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
                model.load_state_dict(saved[0])
                optimizer.load_state_dict(saved[1])
                sparsifier.load_state_dict(saved[2])
            _train_step(model, optimizer, t)
            sparsifier.step(t)
        return {k: v.clone() for k, v in model.state_dict().items()}

    straight, resumed = run(None), run(3)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_finalize_returns_zeros_and_further_use_is_refused() -> None:
    sparsifier = Sparsifier(0.5).prepare(conv_mlp()).apply()
    model = sparsifier.finalize()
    assert math.isclose(float((model.fc1.weight == 0).float().mean()), 0.5)
    with pytest.raises(NotFittedError, match="finalize\\(\\) already removed the masks"):
        sparsifier.step()
    with pytest.raises(NotFittedError, match="call prepare\\(model\\)"):
        Sparsifier(0.5).step()


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    (dict(sparsity=1.5), ConfigError, "'sparsity' must be a fraction in \\[0, 1\\].*got 1.5"),
    (dict(sparsity=0.9, pattern="2:4"), ConfigError, "2:4 pattern zeroes exactly 0.5.*sparsity=0.9"),
    (dict(sparsity=None, pattern="2:4", scope="global"), ConfigError, "scope 'global' has no meaning"),
    (dict(sparsity=None, pattern="2:4", schedule={"name": "gradual", "end": 9}), ConfigError,
     "cannot ramp it. Use schedule 'one_shot' or 'constant'"),
    (dict(scope="local"), ConfigError, "'scope' must be 'layer' or 'global'"),
    (dict(importance="magnitud"), UnknownNameError, "Did you mean 'magnitude'"),
    (dict(include=["nothing*"]), ConfigError, "'include' entry 'nothing\\*' matches no module"),
])
def test_bad_arguments_are_refused_before_the_model_changes(kwargs: dict, error: type, words: str) -> None:
    model = conv_mlp()
    with pytest.raises(error, match=words):
        Sparsifier(**kwargs).prepare(model)
    assert masks(model) == {}
    assert Sparsifier(**kwargs).get_params()["sparsity"] == kwargs.get("sparsity", 0.5)


def test_the_classifier_left_dense_is_the_layer_the_forward_ends_with() -> None:
    model, (x, _) = HeadFirst(), batch()
    assert select_targets(model, example_inputs=x) == ["conv.weight", "fc.weight"]
    assert select_targets(model, example_inputs=(x,)) == ["conv.weight", "fc.weight"]
    assert select_targets(model) == ["head.weight", "conv.weight"]  # no forward: the last declared
    model.train()
    sparsifier = Sparsifier(0.75).prepare(model, x).apply()
    assert model.training and sparsifier.targets_ == ["conv.weight", "fc.weight"]
    assert float((model.head.weight == 0).float().mean()) == 0.0
    assert float((model.fc.weight == 0).float().mean()) == 0.75
    with pytest.raises(ConfigError, match="Sparsifier: HeadFirst failed on example_inputs \\(RuntimeError: "):
        select_targets(HeadFirst(), example_inputs=torch.randn(2, 5))


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 8)
        self.mha = nn.MultiheadAttention(8, 2)
        self.body = nn.Sequential(nn.Linear(8, 8))
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)


def test_included_layers_without_a_weight_are_reported_or_refused() -> None:
    with pytest.warns(UserWarning, match="Sparsifier: 2 selected weight"):
        sparsifier = Sparsifier(0.5, include=["*"], ignore=["mha.out_proj"]).prepare(_Recurrent())
    assert sparsifier.targets_ == ["body.0.weight", "fc.weight", "head.weight"]
    assert sparsifier.skipped_ == (
        "rnn: LSTM has no 'weight' to mask (its own weights are weight_ih_l0, weight_hh_l0, bias_ih_l0, "
        "bias_hh_l0); the Sparsifier sparsifies a layer's 'weight' (Linear, Conv and other layers that have one)",
        "mha: MultiheadAttention has no 'weight' to mask (its own weights are in_proj_weight, in_proj_bias); the "
        "Sparsifier sparsifies a layer's 'weight' (Linear, Conv and other layers that have one); name "
        "'mha.out_proj' to sparsify its output projection")
    with pytest.raises(ConfigError, match="include entry 'rnn' selects 'rnn', which cannot be sparsified: LSTM has "
                                          "no 'weight' to mask .*Drop it from include.$"):
        Sparsifier(0.5, include=["rnn", "fc"]).prepare(_Recurrent())
    with pytest.raises(ConfigError, match="include entry 'mha' .*name 'mha.out_proj' to sparsify its output"):
        Sparsifier(0.5, include=["mha"]).prepare(_Recurrent())
    with pytest.raises(ConfigError, match="include entry LSTM selects 'rnn'"):
        Sparsifier(0.5, include=[nn.LSTM, nn.Linear]).prepare(_Recurrent())
    with pytest.raises(ConfigError, match="'body', a Sequential with no 'weight' of its own.*Pass 'body.\\*'"):
        Sparsifier(0.5, include=["body", "fc"]).prepare(_Recurrent())
    model = _Recurrent()
    Sparsifier(0.5, include=["mha.out_proj", "fc"]).prepare(model).apply()
    assert float((model.mha.out_proj.weight == 0).float().mean()) == 0.5
