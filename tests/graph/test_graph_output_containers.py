"""Model outputs held in a ``@dataclass``, a plain object or a ``SimpleNamespace`` keep their widths.

``torch.utils._pytree`` does not enter those containers: the widths inside (the classes, the
returned feature maps) were cut, and verification compared nothing. Here every tensor the
output holds is an output whose width stays, as for tuples and dicts.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner
from prunekit.structured.apply import mask


@dataclass
class Out:
    logits: torch.Tensor
    feats: list[torch.Tensor]


class Plain:
    def __init__(self, logits: torch.Tensor, feats: list[torch.Tensor]) -> None:
        self.logits, self.feats = logits, feats


class Slotted:
    __slots__ = ("logits", "feats")

    def __init__(self, logits: torch.Tensor, feats: list[torch.Tensor]) -> None:
        self.logits, self.feats = logits, feats


class Net(nn.Module):
    """c1 -> c2 -> c3 -> fc; returns the logits and c1's features in ``wrap``: c2's channels are cuttable."""

    def __init__(self, wrap: Callable[[torch.Tensor, list[torch.Tensor]], Any]) -> None:
        super().__init__()
        self.wrap = wrap
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.c3, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> Any:
        f1 = F.relu(self.c1(x))
        return self.wrap(self.fc(F.adaptive_avg_pool2d(F.relu(self.c3(F.relu(self.c2(f1)))), 1).flatten(1)), [f1])


WRAPS = {"dataclass": Out, "plain object": Plain, "slots": Slotted,
         "SimpleNamespace": lambda logits, feats: types.SimpleNamespace(logits=logits, feats=feats)}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_widths_inside_an_output_object_are_kept(wrap: str) -> None:
    torch.manual_seed(0)
    model, x = Net(WRAPS[wrap]).eval(), torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = StructuredPruner({"ratio": 0.5})
    small = pruner.fit_transform(model, x)
    assert (small.c1.out_channels, small.c2.out_channels, small.fc.out_features) == (8, 8, 5)
    assert small.c3.out_channels == 4  # NOTE: what is not an output is still cut
    with torch.no_grad():
        got, want = small(x), mask(model, pruner.graph_, pruner.plan_)(x)
    assert got.logits.shape == (2, 5) and got.feats[0].shape == (2, 8, 8, 8)
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(got.feats[0], want.feats[0])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_iterator_in_the_output_is_refused_in_one_line() -> None:
    model = Net(lambda logits, feats: (logits, iter(feats))).eval()
    with pytest.raises(ConfigError) as error:
        DependencyGraph.trace(model, torch.randn(2, 3, 8, 8))
    assert str(error.value) == (
        "DependencyGraph.trace: Net's output holds a list_iterator (an iterator), which prunekit cannot look into "
        "for tensors (whose widths it must know) without using it up. Hold them in a tuple, list, dict or "
        "dataclass instead.")
