"""latency_by_call/_by_module: per-leaf milliseconds from forward hooks; input_producers: who feeds each\nparameter-free call. All leave the model as they found it."""

from __future__ import annotations

import pytest
import torch

from prunekit import models
from prunekit.errors import ConfigError
import torchvision

from prunekit.measure.layers import input_producers, latency_by_call, latency_by_module


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


def test_a_shared_module_is_timed_per_call_and_each_call_knows_what_it_reads() -> None:
    model = torchvision.models.resnet18(num_classes=10).train()
    x = torch.randn(1, 3, 64, 64)
    by_call = latency_by_call(model, x, repeats=2)
    assert ("layer1.0.relu", 0) in by_call and ("layer1.0.relu", 1) in by_call  # called twice per block
    modules = latency_by_module(model, x, repeats=2)
    assert set(modules) == {name for name, _ in by_call}
    sources = input_producers(model, x)
    # the stem's relu and max-pool carry bn1's channels; a block's relu reads bn1, then, after the
    # in-place residual add, bn2's output; avgpool reads the last block's output the same way
    assert sources[("relu", 0)] == sources[("maxpool", 0)] == "bn1"
    assert sources[("layer1.0.relu", 0)] == "layer1.0.bn1" and sources[("layer1.0.relu", 1)] == "layer1.0.bn2"
    assert sources[("avgpool", 0)] == "layer4.1.bn2"
    assert not any(name.endswith(("conv1", "bn1", "fc")) for name, _ in sources)  # only parameter-free leaves
    assert model.training and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_call_on_a_functional_result_has_no_producer() -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.act = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(x) * 2)  # a new tensor no module produced

    assert input_producers(Model(), torch.randn(1, 3, 8, 8)) == {}


def test_functional_calls_outside_modules_are_timed_and_pass_their_producer_on() -> None:
    # ResNet-20's block ends in relu2(out + shortcut(x)): the add is a torch function outside every
    # module, and without following it relu2 reads a tensor no module produced
    model = models.create("resnet20").train()
    x = models.example_input("resnet20")
    plain = input_producers(model, x)
    assert ("layer1.0.relu2", 0) not in plain and not any(name.startswith("<") for name, _ in plain)
    sources = input_producers(model, x, functional=True)
    assert sources[("<add>", 0)] == sources[("layer1.0.relu2", 0)] == "layer1.0.bn2"  # the add's left operand
    assert sources[("<add>", 8)] == "layer3.2.bn2" and ("<add>", 9) not in sources  # one per block
    assert ("layer1.0.conv1", 0) not in sources  # leaves with parameters are still no calls to charge
    by_call = latency_by_call(model, x, repeats=2, functional=True)
    assert set(sources) <= set(by_call) and all(by_call[("<add>", i)] > 0 for i in range(9))
    assert not any(name.startswith("<") for name, _ in latency_by_call(model, x, repeats=1))
    # functions inside a module (Conv2d's conv2d) stay the module's: no "<conv2d>" entries
    assert not any(name in ("<conv2d>", "<batch_norm>", "<relu>") for name, _ in by_call)
    assert model.training and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not torch.overrides._get_current_function_mode_stack()  # the mode is gone after the pass
