"""Masks held as parametrizations: they survive optimizer steps, state_dict round trips, finalize."""

from __future__ import annotations

import copy

import pytest
import torch
from _sparsity_models import batch, conv_mlp
from torch import nn
from torch.nn.utils import parametrize

from prunekit.errors import ConfigError
from prunekit.sparsity import Sparsifier, attach, finalize
from prunekit.sparsity.masks import masks


def _pruned(sparsity: float = 0.5, **kwargs: object) -> tuple[nn.Module, Sparsifier]:
    model = conv_mlp()
    sparsifier = Sparsifier(sparsity, **kwargs).prepare(model).apply()
    return model, sparsifier


def _train(model: nn.Module, steps: int, *, weight_decay: float = 0.1) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=weight_decay)
    for seed in range(steps):
        x, y = batch(seed)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_masks_survive_optimizer_steps_and_unmasked_weights_train() -> None:
    model, _ = _pruned(0.5)
    keep = {name: mask.mask.clone() for name, mask in masks(model).items()}
    before = {name: model.get_submodule(name.rpartition(".")[0]).weight.detach().clone() for name in keep}
    _train(model, 5)
    for name, mask in keep.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight.detach()
        assert torch.count_nonzero(weight[~mask]) == 0
        assert not torch.equal(weight[mask], before[name][mask])  # the kept weights did train
        assert torch.equal(masks(model)[name].mask, mask)


def test_state_dict_round_trip_restores_masks_and_outputs() -> None:
    model, _ = _pruned(0.75)
    _train(model, 2)
    state = copy.deepcopy(model.state_dict())
    assert any(key.endswith("weight.0.mask") for key in state)
    fresh = conv_mlp(seed=5)
    Sparsifier(0.75).prepare(fresh)  # all-ones masks: the shapes the state dict needs
    fresh.load_state_dict(state)
    x, _ = batch(9)
    assert torch.equal(fresh(x), model(x))
    for name, mask in masks(model).items():
        assert torch.equal(masks(fresh)[name].mask, mask.mask)


def test_finalize_leaves_plain_modules_with_the_same_outputs_and_zeros() -> None:
    model, sparsifier = _pruned(0.5)
    _train(model, 2)
    x, _ = batch(3)
    expected = model(x)
    optimizer_param = model.fc1.parametrizations.weight.original
    plain = sparsifier.finalize()
    assert plain is model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == set(conv_mlp().state_dict())
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert model.fc1.weight is optimizer_param  # the optimizer's Parameter object is kept
    assert int((model.fc1.weight == 0).sum()) == 16 * 32 // 2
    torch.export.export(model, (x,))  # an ordinary module: export works


def test_attach_checks_every_entry_before_touching_the_model() -> None:
    model = conv_mlp()
    good = torch.ones(16, 32, dtype=torch.bool)
    with pytest.raises(ConfigError, match=r"mask for 'fc2.weight' has shape \(3, 3\)"):
        attach(model, {"fc1.weight": good, "fc2.weight": torch.ones(3, 3, dtype=torch.bool)})
    assert not parametrize.is_parametrized(model.fc1)
    with pytest.raises(ConfigError, match="'fc9.weight' is not a parameter of ConvMLP"):
        attach(model, {"fc9.weight": good})


def test_attach_zeroes_pruned_originals_and_updates_existing_masks() -> None:
    model = conv_mlp()
    first = torch.ones(16, 32, dtype=torch.bool)
    first[0] = False
    attach(model, {"fc1.weight": first})
    assert torch.count_nonzero(model.fc1.parametrizations.weight.original[0]) == 0
    second = first.clone()
    second[1] = False
    mask = masks(model)["fc1.weight"]
    attach(model, {"fc1.weight": second})
    assert masks(model)["fc1.weight"] is mask and torch.equal(mask.mask, second)
    assert len(model.fc1.parametrizations.weight) == 1


def test_deepcopy_of_a_masked_model_keeps_its_masks() -> None:
    model, _ = _pruned(0.5)
    clone = copy.deepcopy(model)
    x, _ = batch(4)
    assert torch.equal(clone(x), model(x))
    assert set(masks(clone)) == {"conv.weight", "fc1.weight"}
    finalize(clone)
    assert parametrize.is_parametrized(model.fc1) and not parametrize.is_parametrized(clone.fc1)


def test_a_second_sparsifier_continues_from_the_masks_already_there() -> None:
    model, _ = _pruned(0.5)
    first = {name: mask.mask.clone() for name, mask in masks(model).items()}
    Sparsifier(0.75).prepare(model)
    assert all(torch.equal(masks(model)[n].mask, m) for n, m in first.items())
    Sparsifier(0.75).prepare(model).apply()
    for name, mask in masks(model).items():
        assert not torch.any(mask.mask & ~first[name])
        assert float((~mask.mask).float().mean()) == 0.75
