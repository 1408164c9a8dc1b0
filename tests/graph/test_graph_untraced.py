"""Modules holding weights that never ran in the trace are named in one warning and in ``graph.untraced``.

A route chosen by a forward argument (a ``ModuleDict`` of heads) or a head run only in training
(traced in eval mode) is never seen: the channels it reads are not known, so its producer may be
cut under it. The trace cannot tell which producer it reads, so it guesses none and says so.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.graph import DependencyGraph


class MultiTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleDict({"cls": nn.Conv2d(8, 5, 1), "seg": nn.Conv2d(8, 2, 1)})

    def forward(self, x: torch.Tensor, task: str = "cls") -> torch.Tensor:
        return self.heads[task](F.relu(self.stem(x)))


class AuxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 5)
        self.aux = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = F.adaptive_avg_pool2d(F.relu(self.c1(x)), 1).flatten(1)
        return (self.fc(h), self.aux(h)) if self.training else self.fc(h)


class Attention(nn.Module):
    """nn.MultiheadAttention reads ``out_proj.weight`` without calling ``out_proj``: that is no gap."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.attn = nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.attn(h, h, h, need_weights=False)[0]


class ManyUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 4)
        for i in range(7):
            setattr(self, f"spare{i}", nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def _trace(model: nn.Module, x: torch.Tensor, **kwargs: object) -> tuple[DependencyGraph, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = DependencyGraph.trace(model, x, **kwargs)  # type: ignore[arg-type]
    return graph, [str(w.message) for w in caught]


def test_a_route_chosen_by_an_argument_is_named() -> None:
    graph, messages = _trace(MultiTask(), torch.randn(2, 3, 8, 8))
    assert graph.untraced == ("heads.seg",)
    assert messages == [
        "MultiTask's forward never ran 'heads.seg' on the example inputs (a route chosen by an argument, or code "
        "run only in training): the channels they read may be cut under them, and the pruned model then fails "
        "there. Pass example inputs that run them, or freeze=[...] the layers that feed them (ignore=[...] naming "
        "them silences this; graph.untraced lists them)."]


def test_a_head_run_only_in_training_is_named_once_by_its_container() -> None:
    model = AuxNet().train()
    graph, messages = _trace(model, torch.randn(2, 3, 8, 8))
    assert graph.untraced == ("aux",) and len(messages) == 1 and "never ran 'aux' on" in messages[0]
    assert model.training and model.aux[0].training  # NOTE: traced in eval mode, the modes are put back


def test_ignore_silences_it_and_weights_read_by_the_callers_code_are_no_gap() -> None:
    graph, messages = _trace(MultiTask(), torch.randn(2, 3, 8, 8), ignore=["heads.seg"])
    assert graph.untraced == () and messages == []
    graph, messages = _trace(Attention(), torch.randn(2, 3, 4))
    assert graph.untraced == () and messages == []


def test_many_are_named_up_to_five() -> None:
    graph, messages = _trace(ManyUnused(), torch.randn(2, 4))
    assert graph.untraced == tuple(f"spare{i}" for i in range(7))
    assert messages[0].startswith("ManyUnused's forward never ran 'spare0', 'spare1', 'spare2', 'spare3', "
                                  "'spare4' and 2 more on the example inputs")
