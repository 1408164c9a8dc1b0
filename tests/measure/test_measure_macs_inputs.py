"""MACs are counted on whatever ``forward`` accepts, as the tracer runs it: a batch object (a
dataclass) as the one argument, and positional arguments that are no tensor (a flag, a route key)
passed through unchanged. Before, these failed with a raw ``TypeError`` or were refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError
from prunekit.measure.macs import as_inputs, count_macs, macs_terms

# NOTE: a 3x3 conv 3 -> 8 over 8x8 positions and a linear 8 -> 5, for a batch of 2
MACS = 2 * (8 * 8 * 8 * 3 * 9 + 8 * 5)


@dataclass
class Batch:
    image: torch.Tensor


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)


class BatchNet(Net):
    def forward(self, batch: Batch) -> torch.Tensor:
        return self.fc(self.features(batch.image))


class FlagNet(Net):
    def forward(self, x: torch.Tensor, mode: str | bool = "logits") -> torch.Tensor:
        h = self.features(x)
        return self.fc(h) if mode in ("logits", True) else h


def test_a_batch_object_is_the_one_argument() -> None:
    batch = Batch(torch.randn(2, 3, 8, 8))
    assert count_macs(BatchNet(), batch) == MACS
    assert macs_terms(BatchNet(), batch).macs == MACS


def test_arguments_that_are_no_tensor_pass_through() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert count_macs(FlagNet(), (x, "logits")) == count_macs(FlagNet(), (x, True)) == MACS
    assert count_macs(FlagNet(), (x, False)) == MACS - 2 * 8 * 5  # NOTE: the flag reached forward


def test_inputs_holding_no_tensor_are_still_refused() -> None:
    with pytest.raises(ConfigError, match=r"^example_inputs must be a tensor or a non-empty tuple of tensors "
                                          r"\(beside which flags and other arguments may sit\); got Batch holding "
                                          r"\['Batch'\]\. Pass e\.g\."):
        count_macs(BatchNet(), Batch(None))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="take tensors only.*holds \\['Batch'\\]. Wrap the model"):
        as_inputs(Batch(torch.randn(1, 3, 8, 8)))  # type: ignore[arg-type]
