"""Example inputs beyond tensors: a MACs target (and ``achieved_``) with a flag or a batch object
among the inputs, and a dict naming a keyword-only parameter, refused in one line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError
from prunekit.structured import StructuredPruner
from prunekit.structured.apply import mask


@dataclass
class Batch:
    image: torch.Tensor


class FlagNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        f = F.adaptive_avg_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 1).flatten(1)
        return (self.fc(f), f) if return_features else self.fc(f)


class BatchNet(FlagNet):
    def forward(self, batch: Batch) -> torch.Tensor:  # type: ignore[override]
        return super().forward(batch.image)


class KeywordOnly(FlagNet):
    def forward(self, x: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x) / temperature  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["flag", "batch"])
def test_a_macs_target_with_inputs_that_are_no_tensors(kind: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    model, example = (FlagNet(), (x, False)) if kind == "flag" else (BatchNet(), Batch(x))
    model.eval()
    pruner = StructuredPruner({"macs": 0.5})
    small = pruner.fit_transform(model, example)
    achieved = pruner.achieved_
    assert 0.4 < achieved["macs"] <= 0.5 and achieved["params"] < 0.7
    assert small.c1.out_channels < 8 and small.fc.out_features == 5
    args = example if isinstance(example, tuple) else (example,)
    with torch.no_grad():
        torch.testing.assert_close(small(*args), mask(model, pruner.graph_, pruner.plan_)(*args))


def test_a_keyword_only_parameter_in_a_dict_is_refused_in_one_line() -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ConfigError) as error:
        StructuredPruner({"ratio": 0.5}).fit(KeywordOnly(), {"x": x, "temperature": 2.0})
    assert str(error.value) == (
        "StructuredPruner.fit: example_inputs names 'temperature', a keyword-only parameter of KeywordOnly.forward "
        "(after *), but prunekit passes example inputs positionally. Leave it out to use its default, or wrap the "
        "model in a module whose forward passes it (self.model(x, temperature=...)).")
    assert StructuredPruner({"ratio": 0.5}).fit_transform(KeywordOnly(), {"x": x}).c1.out_channels == 4
