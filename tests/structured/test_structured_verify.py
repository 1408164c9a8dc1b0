"""Verification compares values for every group, inexact ones included, without copying the model.

The two silent-wrong constructions of issue 19 (``y[:, 0] = 0`` and a branch on the channel count,
each followed by a sum over channels) are now frozen by the tracer; here the graph is forced to
cut them anyway, and verification must refuse the result.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import replace

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import Plan, allocate, apply
from prunekit.structured.apply import VerificationError, verify

verify_module = importlib.import_module("prunekit.structured.verify")


class WriteAtChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inp(x)
        y[:, 0] = 0
        return self.out(y.sum(1).mean((1, 2)).unsqueeze(1))


class BranchOnWidth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.out = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x))
        if y.shape[1] == 8:
            y = y * 2
        return self.out(y.sum(1).mean((1, 2)).unsqueeze(1))


def _forced(graph: DependencyGraph) -> DependencyGraph:
    """The graph as it was before the tracer froze these constructions."""
    groups = tuple(replace(g, prunable=True, reasons=()) if g.id == "inp.weight:0" else g for g in graph.groups)
    return replace(graph, groups=groups)


@pytest.mark.parametrize("cls", [WriteAtChannel, BranchOnWidth])
def test_a_wrong_cut_through_a_channel_sum_is_refused(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model, x = cls().eval(), torch.rand(2, 3, 4, 4) + 0.5
    graph = _forced(DependencyGraph.trace(model, x))
    assert not graph.group("inp.weight:0").exact  # only a shape check before
    plan = Plan(keep={"inp.weight:0": (4, 5, 6, 7)}, sizes={"inp.weight:0": 8})  # channel 0 is cut
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(VerificationError, match="differs from the masked dense model"):
        apply(model, graph, plan, example_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class NormedStream(nn.Module):
    """A LayerNorm over the cut channels (inexact) after an exact stem and before an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = self.norm(h)
        return self.head(h + self.down(torch.relu(self.up(h))))


def test_inexact_plan_checks_each_layer_by_value() -> None:
    model, x = NormedStream().eval(), torch.randn(2, 5, 4)
    graph = DependencyGraph.trace(model, x)
    assert "norm" in graph.mixing
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    (stream,) = [g for g in graph.groups if ("inp.weight", 0) in {(m.tensor, m.axis) for m in g.members}]
    assert not stream.exact and plan.removed(stream.id)
    pruned = apply(model, graph, plan, example_inputs=x)  # passes: only the norm's output differs
    with torch.no_grad():
        pruned.inp.weight[0, 0] += 1.0  # a wrong value in a layer fed the same input
    with pytest.raises(VerificationError, match="pruned 'inp' computes other values"):
        verify(model, pruned, graph, plan, x)


def test_verification_copies_nothing_and_restores_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = NormedStream().eval(), torch.randn(2, 5, 4)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def no_copy(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("verification copied the model")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    verify(model, pruned, graph, plan, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Deep(nn.Module):
    """A deep float32 MLP: the pruned model sums over fewer channels, so it rounds differently."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(m for _ in range(6) for m in (nn.Linear(64, 64), nn.Tanh())))
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))


def test_a_difference_that_is_only_float32_rounding_passes_and_the_model_is_restored() -> None:
    torch.manual_seed(0)
    model, x = _Deep().eval(), torch.randn(4, 64)
    model.register_buffer("table", torch.randn(5).half())  # NOTE: mixed dtypes come back as they were
    before = {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, verify_result=False)
    with pytest.raises(VerificationError):  # float32 alone cannot meet a tolerance below its rounding
        verify_module._verify(model, pruned, graph, plan, (x,), 1e-12, 1e-12)
    verify(model, pruned, graph, plan, x, rtol=1e-9, atol=1e-12)  # float64 can: no error
    after = model.state_dict()
    assert all(after[k].dtype == dtype and torch.equal(after[k], value) for k, (dtype, value) in before.items())
    assert all(p.dtype == torch.float32 for p in pruned.head.parameters())


def test_a_wrong_cut_still_fails_in_float64() -> None:
    torch.manual_seed(0)
    model, x = _Deep().eval(), torch.randn(4, 64)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, verify_result=False)
    with torch.no_grad():
        pruned.layers[2].weight[:, 0] += 0.05  # a small wrong value, not rounding
    with pytest.raises(VerificationError, match="differs from the masked dense model"):
        verify(model, pruned, graph, plan, x)


class _RawEinsumAttention(nn.Module):
    """XLNet's shape: q and k from raw [hidden, heads, head_dim] parameters by einsum, a bias added to
    q, the scores contracted over head_dim. No layer the hooks know makes q or k."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.q, self.k, self.v = (nn.Parameter(torch.randn(8, 2, 4)) for _ in range(3))
        self.r_w_bias = nn.Parameter(torch.randn(2, 4))
        self.o = nn.Parameter(torch.randn(8, 2, 4))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # [i, b, hidden]
        q, k, v = (torch.einsum("ibh,hnd->ibnd", h, w) for w in (self.q, self.k, self.v))
        score = torch.einsum("ibnd,jbnd->bnij", q + self.r_w_bias, k).softmax(-1)
        out = torch.einsum("ibnd,hnd->ibh", torch.einsum("bnij,jbnd->ibnd", score, v), self.o)
        return self.head(h + out)


def test_a_contraction_of_raw_parameter_projections_is_checked_by_value() -> None:
    """The reference zeroes the cut head-size slices of q, k and the bias too, so the pruned model's
    scores (summed over fewer positions) equal the reference's; before, the reference kept them and
    verification refused a correct cut (XLNet, 6.95e-5 apart)."""
    torch.manual_seed(0)
    model, x = _RawEinsumAttention().eval(), torch.randn(5, 2, 6)
    graph = DependencyGraph.trace(model, x)
    head_size = next(g for g in graph.groups if ("q", 2) in {(m.tensor, m.axis) for m in g.members})
    assert head_size.prunable and not head_size.exact and head_size.zero_exact
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    assert plan.removed(head_size.id)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = apply(model, graph, plan, example_inputs=x)  # verified by value
    assert pruned.q.shape[2] == 2 and pruned(x).shape == (5, 2, 3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _Noisy(nn.Module):
    """A vocoder's shape: noise drawn in the forward (UnivNet when no noise is passed) goes through
    layers whose channels are cut."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x + torch.randn_like(x))))


def test_a_forward_that_draws_noise_is_verified_with_the_same_draws() -> None:
    """Both verification runs draw the same noise, so a right cut passes (it was refused as a value
    difference), and the caller's random state is left as it was."""
    torch.manual_seed(0)
    model, x = _Noisy().eval(), torch.randn(3, 4)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    state = torch.random.get_rng_state()
    pruned = apply(model, graph, plan, example_inputs=x)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert pruned.a.out_features == 4


class _NormedEmbedding(nn.Embedding):
    """Inkling's embedding: an nn.Embedding whose own forward ends in a norm over its width."""

    def __init__(self) -> None:
        super().__init__(20, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(ids))


class _NormedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mlp, self.head = _NormedEmbedding(), nn.Linear(8, 8), nn.Linear(8, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.head(h + self.mlp(h))


def test_a_layer_whose_child_mixes_channels_is_not_compared_alone() -> None:
    """The embedding's output is normalised by its child, which mixes the cut channels: the layer is
    not compared channel by channel (it was, and every cut of the width was refused)."""
    torch.manual_seed(0)
    model, ids = _NormedLM().eval(), torch.randint(0, 20, (2, 5))
    graph = DependencyGraph.trace(model, ids, ignore=["head"])
    assert "embed.norm" in graph.mixing
    width = next(g for g in graph.prunable if any(m.tensor == "embed.weight" for m in g.members))
    pruned = apply(model, graph, allocate(graph, {width.id: score(graph, model, "l2")[width.id]}, 0.5),
                   example_inputs=ids)
    assert pruned.embed.weight.shape == (20, 4) and pruned(ids).shape == (2, 5, 20)


class _RawAndCalled(nn.Module):
    """A layer called as a module whose weight is also read raw (a tied or shared projection): its
    rows feed both the layer's output and a sum over them that the hooks do not see."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        raw = torch.einsum("bi,oi->b", x, self.a.weight)  # NOTE: the same rows, read raw and summed
        return self.b(h) * raw[:, None]


def test_a_weight_read_raw_besides_its_layer_is_zeroed_in_the_reference() -> None:
    """The reference skips zeroing the rows of a layer whose output hook zeroes them, unless a
    mismatch says other code read them too: then it zeroes them and compares again, and the right
    cut passes (without the second reference it was refused)."""
    torch.manual_seed(0)
    model, x = _RawAndCalled().eval(), torch.randn(4, 6)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.a.out_features == 4
