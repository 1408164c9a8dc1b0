"""Verification compares every tensor of the output, also inside a ``@dataclass`` or a plain object.

Before, ``verify`` flattened the output with ``torch.utils._pytree``, which does not enter those
containers: it compared nothing, and a cut output width passed. Here the graph is traced on the
model returning its logits alone (so c1's channels are cuttable), then the same weights return
c1's features too, inside an object: the cut width must fail verification.
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

from prunekit.structured import StructuredPruner, apply
from prunekit.structured.verify import VerificationError


@dataclass
class Out:
    logits: torch.Tensor
    feats: torch.Tensor


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wrap: Callable[[torch.Tensor, torch.Tensor], Any] = lambda logits, feats: logits
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> Any:
        f1 = F.relu(self.c1(x))
        return self.wrap(self.fc(F.adaptive_avg_pool2d(F.relu(self.c2(f1)), 1).flatten(1)), f1)


@pytest.mark.parametrize("wrap", [Out, lambda logits, feats: types.SimpleNamespace(logits=logits, feats=feats)],
                         ids=["dataclass", "SimpleNamespace"])
def test_a_cut_width_inside_an_output_object_fails_verification(wrap: Callable[..., Any]) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 8, 8)
    pruner = StructuredPruner({"ratio": 0.5}).fit(model, x)
    assert apply(model, pruner.graph_, pruner.plan_).c1.out_channels == 4
    model.wrap = wrap
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(VerificationError) as error:
        apply(model, pruner.graph_, pruner.plan_, example_inputs=x)
    assert str(error.value) == ("Output 1 of the pruned model has shape (2, 4, 8, 8), the original (2, 8, 8, 8). "
                                "The original model is unchanged.")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
