"""latency_by_module: per-leaf-module milliseconds from forward hooks, leaving the model as it was."""

from __future__ import annotations

import pytest
import torch

from prunekit import models
from prunekit.errors import ConfigError
from prunekit.measure.layers import latency_by_module


def test_every_leaf_module_that_runs_gets_a_positive_time_and_the_model_is_left_alone() -> None:
    model = models.create("simple_cnn").train()
    x = models.example_input("simple_cnn")
    times = latency_by_module(model, x, batch_size=4, repeats=2)
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    assert list(times) == leaves and all(t > 0 for t in times.values())
    assert model.training, "the mode must be restored"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), "hooks left behind"


def test_a_costlier_layer_reads_slower() -> None:
    # a 3->256 5x5 conv at 64x64 (79 M MACs) against a ReLU over its 1 M outputs: no timer noise
    # on a shared machine hides a gap that size
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 256, 5, padding=2), torch.nn.ReLU())
    times = latency_by_module(model, torch.randn(1, 3, 64, 64), repeats=3)
    assert times["0"] > times["1"]


@pytest.mark.parametrize("bad", [{"repeats": 0}, {"batch_size": 0}])
def test_bad_arguments_are_named(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        latency_by_module(models.create("simple_cnn"), models.example_input("simple_cnn"), **bad)
