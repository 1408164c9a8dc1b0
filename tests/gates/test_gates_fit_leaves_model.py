"""ChannelGates.fit only looks at the model: it runs it in eval mode, so a model in train mode keeps
its BatchNorm statistics and every module its own train/eval mode, and a batch-1 example works where
a BatchNorm sees one value per channel (torch refuses that in train mode)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunekit.gates import ChannelGates
from prunekit.structured import Target


class Squeezed(nn.Module):
    """conv -> BN -> relu -> pool to 1x1 -> conv -> BN (one value per channel at batch 1) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x))).mean(dim=(2, 3), keepdim=True)
        return self.fc(torch.relu(self.b2(self.c2(h))).flatten(1))


def test_fit_changes_no_buffer_and_no_mode() -> None:
    torch.manual_seed(0)
    model = Squeezed().train()
    model.b1.eval()  # NOTE: a frozen BatchNorm inside a model in train mode stays frozen
    before, modes = copy.deepcopy(model.state_dict()), {n: m.training for n, m in model.named_modules()}
    gates = ChannelGates(Target(macs=0.5)).fit(model, torch.randn(4, 3, 8, 8))
    gates.detach()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == []
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_fit_takes_a_batch_of_one_on_a_model_in_train_mode() -> None:
    torch.manual_seed(0)
    model = Squeezed().train()
    gates = ChannelGates(Target(macs=0.5)).fit(model, torch.randn(1, 3, 8, 8))
    assert gates.groups_ and model.training
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)  # NOTE: gated, still trainable


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_fitting_again_replaces_the_earlier_hooks() -> None:
    torch.manual_seed(0)
    model, x = Squeezed().eval(), torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        plain = model(x)
    gates = ChannelGates(Target(macs=0.5)).fit(model, x)
    once = _hooks(model)
    gates.fit(model, x)  # NOTE: the earlier fit's hooks must neither be traced nor stay behind
    assert _hooks(model) == once
    assert [g.id for g in gates.groups_] and gates.graph_ is not None
    gates.detach()
    assert _hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(x), plain)
