"""The default path (``StructuredPruner(...).fit_transform``) is cheap: two real forward passes in
all (the verification's), MACs counted on a meta-device twin that agrees with the real count."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.measure import count_macs
from prunekit.structured import StructuredPruner


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(y)).mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("target", [{"ratio": 0.5}, {"macs": 0.5}])
def test_fit_transform_runs_two_real_forwards(target: dict[str, float]) -> None:
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), _x()
    real: list[str] = []

    def count(module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type != "meta":
            real.append(type(module).__name__)

    model.register_forward_pre_hook(count)  # NOTE: copied into every clone, the pruned model too
    StructuredPruner(target, round_to=1).fit_transform(model, x)
    assert len(real) == 2, real  # the pruned model and the masked dense model; on main 6 (ratio), 14 (macs)


def test_meta_counted_macs_match_the_real_models() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), _x()
    pruner = StructuredPruner({"macs": 0.5}, round_to=1).fit(model, x)
    pruned = pruner.transform(model)
    assert pruner.achieved_["macs"] == pytest.approx(count_macs(pruned, x) / count_macs(model, x))
    assert pruner.achieved_["macs_count"] == count_macs(pruned, x)
