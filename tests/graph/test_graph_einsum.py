"""``torch.einsum`` and ``repeat_interleave`` carry channels: letters kept in the output keep them,
contracted letters tie the operands (a parameter reading them is a consumer), a count-times repeat
of a channel dim is that channel in blocks. Attention written with einsum is cut by head, and the
pruned model equals the masked dense one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.graph.handlers.einsum import parse
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


def _prune(model: nn.Module, x: torch.Tensor) -> tuple[DependencyGraph, nn.Module]:
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return graph, pruned


def _group(graph: DependencyGraph, tensor: str, axis: int = 0):  # type: ignore[no-untyped-def]
    return next(g for g in graph.groups if (tensor, axis) in {(m.tensor, m.axis) for m in g.members})


class EinsumAttention(nn.Module):
    """Attention written with einsum in three calling forms (equation and operands, a list of
    operands, sublists), a linear layer as ``einsum(x, W)``, and an implicit output."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.inp, self.q, self.kv = nn.Linear(6, dim), nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.head_dim = dim // heads
        self.proj = nn.Parameter(torch.randn(dim, dim) / 4)  # [out, in], applied by einsum
        self.fc = nn.Linear(dim, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        B, N, _ = h.shape
        q = self.q(h).view(B, N, -1, self.head_dim)
        k, v = self.kv(h).view(B, N, 2, -1, self.head_dim).unbind(2)
        scores = torch.einsum("bnhd,bmhd->bhnm", q, k).softmax(-1)
        y = torch.einsum("bhnm,bmhd->bnhd", [scores, v]).reshape(B, N, -1)
        y = torch.einsum(y, [0, 1, 2], self.proj, [3, 2], [0, 1, 3])  # y @ proj.T
        g = torch.einsum("bnc,bnc->bnc", h + y, torch.sigmoid(h))  # an elementwise product
        return self.out(torch.relu(self.fc(torch.einsum("ij...->ij...", g))))


def test_attention_written_with_einsum_is_cut_by_head() -> None:
    torch.manual_seed(0)
    model, x = EinsumAttention().eval(), torch.randn(2, 5, 6)
    graph, pruned = _prune(model, x)
    heads = _group(graph, "q.weight")
    assert heads.prunable and heads.size == 4 and heads.reasons == (), heads.reasons
    assert {("proj", 1), ("proj", 0)} <= {(m.tensor, m.axis) for m in _group(graph, "inp.weight").members} | \
        {(m.tensor, m.axis) for m in _group(graph, "proj", 1).members}
    assert pruned.q.out_features == 8 and pruned.kv.out_features == 16
    assert _group(graph, "fc.weight").prunable and pruned.fc.out_features == 6


class EinsumLinear(nn.Module):
    """A weight applied by einsum produces channels (``"bnc,oc->bno"``): its rows are cut."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.w = nn.Parameter(torch.randn(12, 16) / 4)
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(torch.einsum("bnc,oc->bno", self.inp(x), self.w)))


def test_a_weight_applied_by_einsum_produces_and_consumes_channels() -> None:
    torch.manual_seed(0)
    graph, pruned = _prune(EinsumLinear().eval(), torch.randn(2, 5, 6))
    produced = _group(graph, "w", 0)
    assert produced.prunable and produced.exact and produced.size == 12
    assert ("w", 1, "consumer") in {(m.tensor, m.axis, m.role) for m in _group(graph, "inp.weight").members}
    assert pruned.w.shape == (6, 8) and pruned.out.in_features == 6


class SumOverChannels(nn.Module):
    """``einsum("bc->b")`` sums over channels (exact on zeroed channels), a fixed tensor freezes them."""

    def __init__(self, fixed: bool) -> None:
        super().__init__()
        self.fixed = fixed
        self.inp, self.out = nn.Linear(6, 8), nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        s = torch.einsum("bc,c->b", h, torch.ones(8)) if self.fixed else torch.einsum("bc->b", h)
        return self.out(s.unsqueeze(1))


def test_a_sum_by_einsum_is_zero_safe_and_a_fixed_operand_freezes() -> None:
    model, x = SumOverChannels(fixed=False).eval(), torch.randn(3, 6)
    graph = DependencyGraph.trace(model, x)
    summed = _group(graph, "inp.weight")
    assert summed.prunable and not summed.exact and summed.zero_exact
    plan = allocate(graph, {g.id: random(g, model, seed=0) for g in graph.prunable}, 0.5)
    assert apply(model, graph, plan, example_inputs=x).inp.out_features == 4  # verified on zeroed channels
    graph = DependencyGraph.trace(SumOverChannels(fixed=True).eval(), x)
    frozen = _group(graph, "inp.weight")
    assert not frozen.prunable and any("fixed-size" in r for r in frozen.reasons), frozen.reasons


class RepeatedChannels(nn.Module):
    """Channels repeated in place (``repeat_interleave(2, dim=-1)``): channel ``c`` becomes columns
    ``2c, 2c+1`` of the next layer; a repeat along tokens leaves them alone."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(6, 8), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x)).repeat_interleave(2, dim=1)
        return self.out(torch.repeat_interleave(h, 2, dim=-1)).mean(1)


def test_repeat_interleave_keeps_channels_in_blocks() -> None:
    torch.manual_seed(0)
    graph, pruned = _prune(RepeatedChannels().eval(), torch.randn(2, 5, 6))
    group = _group(graph, "inp.weight")
    assert group.prunable and ("out.weight", 1, 2) in {(m.tensor, m.axis, m.inner) for m in group.members}
    assert pruned.inp.out_features == 4 and pruned.out.in_features == 8


def test_repeat_interleave_by_per_position_counts_freezes_the_channels() -> None:
    class PerPosition(RepeatedChannels):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            counts = torch.tensor([2] * 8)
            return self.out(torch.relu(self.inp(x)).repeat_interleave(counts, dim=-1)).mean(1)

    graph = DependencyGraph.trace(PerPosition().eval(), torch.randn(2, 5, 6))
    assert not _group(graph, "inp.weight").prunable


@pytest.mark.parametrize(("equation", "shapes", "labels", "output"), [
    ("bhwc,hkc->bhwk", [(2, 3, 4, 5), (3, 6, 5)], [list("bhwc"), list("hkc")], list("bhwk")),
    ("ij,jk", [(2, 3), (3, 4)], [list("ij"), list("jk")], list("ik")),  # implicit: letters used once, sorted
    ("...c, c -> ...", [(2, 3, 4), (4,)], [[("...", 0), ("...", 1), "c"], ["c"]], [("...", 0), ("...", 1)]),
    ("b...c,...c->b...", [(2, 3, 4), (4,)], [["b", ("...", 0), "c"], ["c"]], ["b", ("...", 0)]),
])
def test_parse_labels_every_dim(equation: str, shapes: list[tuple[int, ...]], labels: list, output: list) -> None:
    assert parse(equation, shapes) == (labels, output)


def test_parse_refuses_what_it_does_not_understand() -> None:
    assert parse("ij,jk->ik", [(2, 3)]) is None  # one operand for two subscripts
    assert parse("ijk->i", [(2, 3)]) is None  # three letters for two dims
