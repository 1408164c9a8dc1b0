"""Constructions that used to lose a slicing dimension, keep stale sizes or go silently wrong.

Each model is the smallest that shows one class of issue 19: parameters that meet before any
activation, views to sizes stored at ``__init__``, a shared embedding read by two streams, in-place
writes at a channel index, Python branches on a channel count or on data.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import StructuredPruner, allocate, apply
from prunekit.structured.apply import mask


def _prune_and_check(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> nn.Module:
    model.eval()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), ratio, round_to=1)
    assert plan.ratio > 0, graph.summary()
    pruned = apply(model, graph, plan, example_inputs=x)  # verified against the masked model
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return pruned


class ResponseNorm(nn.Module):
    """ConvNeXt-V2's GlobalResponseNorm: bias and weight meet in ``addcmul`` before touching x."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, c, 1)
        self.weight = nn.Parameter(torch.randn(c))
        self.bias = nn.Parameter(torch.randn(c))
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        g = h.norm(p=2, dim=(2, 3), keepdim=True)
        y = torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1), h * g)
        return self.out(torch.relu(y))


class Tokens(nn.Module):
    """DeiT's ``cat(cls_token, dist_token, x)``: two parameters share the channel dim with x."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.dist_token = nn.Parameter(torch.randn(1, 1, d))
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        b = h.shape[0]
        h = torch.cat((self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), h), dim=1)
        return self.head(torch.relu(h))


def test_two_parameters_meeting_first_are_both_sliced() -> None:
    pruned = _prune_and_check(ResponseNorm(), torch.randn(2, 3, 5, 5))
    assert pruned.weight.shape == pruned.bias.shape == (4,)


def test_cls_and_dist_tokens_are_both_sliced() -> None:
    pruned = _prune_and_check(Tokens(), torch.randn(2, 5, 4))
    assert pruned.cls_token.shape == pruned.dist_token.shape == (1, 1, 4)


class StoredShape(nn.Module):
    """A scale viewed to a shape stored at ``__init__`` (``self.scale.view(self.shape)``)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, c, 1)
        self.shape = (1, c, 1, 1)
        self.scale = nn.Parameter(torch.rand(c) + 0.5)
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x) * self.scale.view(self.shape)))


class StoredWidth(nn.Module):
    """A linear layer that views its output with a stored width, as transformers' ``Conv1D``."""

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class TwoStoredWidths(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down, self.head = StoredWidth(4, 12), StoredWidth(12, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(torch.relu(self.up(x))))


def test_parameter_viewed_to_a_stored_shape_refreshes_it() -> None:
    pruned = _prune_and_check(StoredShape(), torch.randn(2, 3, 4, 4))
    assert pruned.scale.shape == (4,) and pruned.shape == (1, 4, 1, 1)


def test_output_viewed_with_a_stored_width_refreshes_it() -> None:
    pruned = _prune_and_check(TwoStoredWidths(), torch.randn(2, 5, 4))
    assert pruned.up.nf == 6 and pruned.up.weight.shape == (4, 6)
    assert pruned.down.nf == 2 and pruned.down.weight.shape == (6, 2)


class Ambiguous(nn.Module):
    """Two attributes hold the viewed size, and the view reads it through a local name: which one
    it read cannot be proved; frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.width, self.other = 8, 8
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.width
        return self.out(self.inp(x).view(-1, size))


class WrittenOut(Ambiguous):
    """The same two attributes, but the view writes ``self.width``: the source says which."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x).view(-1, self.width))


def test_ambiguous_stored_width_freezes_with_a_reason() -> None:
    graph = DependencyGraph.trace(Ambiguous().eval(), torch.randn(2, 4))
    (group,) = [g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members)]
    assert not group.prunable and any("width" in r and "other" in r for r in group.reasons), group.reasons


def test_a_stored_width_the_view_writes_out_is_told_apart_by_the_source() -> None:
    pruned = _prune_and_check(WrittenOut(), torch.randn(2, 4))
    assert pruned.width == 4 and pruned.other == 8 and pruned.inp.weight.shape == (4, 4)


class SharedEmbedding(nn.Module):
    """An encoder and a decoder reading one embedding table (T5/BART's ``shared``)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Embedding(20, 8)
        self.enc = nn.Linear(8, 8)
        self.dec = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        e = self.shared(src) + self.enc(self.shared(src))
        d = self.shared(src.flip(1))
        return self.head(torch.relu(self.dec(d + e.mean(1, keepdim=True) * 0)))


def test_shared_embedding_read_by_two_streams_is_one_group() -> None:
    model, ids = SharedEmbedding().eval(), torch.randint(0, 20, (2, 5))
    graph = DependencyGraph.trace(model, ids)
    holders = [g for g in graph.groups if ("shared.weight", 1) in {(m.tensor, m.axis) for m in g.members}]
    assert len(holders) == 1, graph.summary()
    assert len({g.id for g in graph.groups}) == len(graph.groups)
    assert {"enc.weight", "dec.weight"} <= {m.tensor for m in holders[0].members}


class WriteAtChannel(nn.Module):
    """``y[:, 0] = 0`` then a reduction over channels: cutting would zero another channel."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x))
        y[:, 0] = 0
        return self.out(y.sum(1).mean((1, 2)).unsqueeze(1))


class CopyIntoChannels(nn.Module):
    """``index_fill_`` / ``masked_fill_`` at literal channel positions."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x))
        y.index_fill_(1, torch.tensor([1, 2]), 0.0)
        return self.out(y)


class OtherWrites(nn.Module):
    """``masked_fill_`` with a constant channel mask, ``index_put_`` and ``copy_`` into channels; a
    mask kept in a buffer is sliced with the channels instead (the write follows them exactly)."""

    def __init__(self, kind: str = "masked_fill_") -> None:
        super().__init__()
        self.kind = kind
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)
        self.register_buffer("keep", torch.arange(8).view(1, 8, 1, 1) % 2 == 0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x))
        if self.kind == "masked_fill_":
            y.masked_fill_(torch.arange(8).view(1, 8, 1, 1) % 2 == 0, 0.0)
        elif self.kind == "masked_fill_buffer":
            y.masked_fill_(self.keep, 0.0)
        elif self.kind == "index_put_":
            y.index_put_((torch.tensor([0]), torch.tensor([3])), torch.tensor(0.0))
        else:
            y[:, :2].copy_(torch.zeros_like(y[:, :2]))
        return self.out(y)


@pytest.mark.parametrize("kind", ["masked_fill_", "index_put_", "copy_"])
def test_other_in_place_writes_at_channels_freeze_the_group(kind: str) -> None:
    graph = DependencyGraph.trace(OtherWrites(kind).eval(), torch.randn(2, 3, 4, 4))
    (group,) = [g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members)]
    assert not group.prunable, graph.summary()


def test_a_channel_mask_in_a_buffer_is_sliced_with_the_channels() -> None:
    model = OtherWrites("masked_fill_buffer")
    pruned = _prune_and_check(model, torch.randn(2, 3, 4, 4))
    assert pruned.keep.shape == (1, 4, 1, 1)


class BranchOnWidth(nn.Module):
    """A Python branch on the channel count: the pruned model would take the other branch."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x))
        if y.shape[1] == 8:
            y = y * 2
        return self.out(y.sum(1).mean((1, 2)).unsqueeze(1))


@pytest.mark.parametrize("cls", [WriteAtChannel, CopyIntoChannels, BranchOnWidth])
def test_writes_and_branches_on_channels_freeze_the_group(cls: type[nn.Module]) -> None:
    model, x = cls().eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.trace(model, x)
    (group,) = [g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members)]
    assert not group.prunable, graph.summary()
    assert graph.blocked, "the reason is reported in graph.blocked"
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, x)
    torch.testing.assert_close(pruned(x), model(x))  # nothing was cut, so nothing went wrong


class DataBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x) if x.sum() > 0 else self.b(x)
        return self.head(torch.relu(h))


def test_branch_on_data_warns_and_is_reported() -> None:
    model, x = DataBranch().eval(), torch.ones(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = DependencyGraph.trace(model, x)
    assert graph.branches and "Tensor.__bool__" in graph.branches[0], graph.branches
    assert any("one branch" in str(w.message) for w in caught), [str(w.message) for w in caught]
