"""A TorchScript submodule inside an eager model: the trace cannot see its code, so the channels it
reads are kept whole with the reason; the rest of the model is still cut, and verified."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner


class WithScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # NOTE: torch.jit.script is deprecated, still used
            self.b = torch.jit.script(nn.Sequential(nn.Conv2d(32, 24, 3, padding=1), nn.ReLU()))
        self.c = nn.Sequential(nn.Conv2d(24, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c(self.b(self.a(x))).mean((2, 3)))


def test_a_scripted_submodule_keeps_what_it_reads_and_the_rest_is_cut() -> None:
    torch.manual_seed(0)
    model, x = WithScripted().eval(), torch.randn(2, 3, 8, 8)
    graph = DependencyGraph.trace(model, x)
    read = next(g for g in graph.groups if "a.0.weight" in {m.tensor for m in g.members})
    assert not read.prunable and any("'b' is a TorchScript module" in r for r in read.reasons)
    pruned = StructuredPruner({"ratio": 0.5}).fit_transform(model, x)  # verified
    assert pruned.a[0].out_channels == 32 and pruned.c[0].out_channels == 8
    assert pruned(torch.randn(3, 3, 6, 10)).shape == (3, 10)
