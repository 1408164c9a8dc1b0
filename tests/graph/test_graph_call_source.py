"""Sizes that numbers alone cannot tell apart, told apart by the caller's source; multi-query
attention written by hand; ``nn.Bilinear``.

A traced view sees ``(b, s, 8, 8)`` for ``view(b, s, self.n_heads, self.head_dim)`` with 8 heads of
8, and Meta's Llama code with as many key/value heads as heads holds ``n_heads`` and ``n_kv_heads``
both 8: before, such heads were frozen as ambiguous. The call being run is parsed from its source
(``prunekit.graph.handlers.call_source``) to read which attribute each size is. Where the source is
not at hand (code built by ``exec``), the old answer stands: frozen with the reason."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from _half_cut import cut_half
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.measure import count_macs
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask

IDS = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))


class Attention(nn.Module):
    """Meta's Llama attention: ``n_heads``, ``n_kv_heads``, ``n_rep`` stored; k and v repeated with
    ``repeat_interleave(self.n_rep)`` (or, ``expand=True``, HF's ``expand`` + ``reshape`` with a local
    ``rep``)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, expand: bool = False) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.n_rep, self.expand = n_heads // n_kv_heads, expand
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.expand:
            rep = self.n_heads // self.n_kv_heads
            k = k[:, :, None].expand(b, self.n_kv_heads, rep, s, self.head_dim).reshape(b, self.n_kv_heads * rep, s, self.head_dim)
            v = v[:, :, None].expand(b, self.n_kv_heads, rep, s, self.head_dim).reshape(b, self.n_kv_heads * rep, s, self.head_dim)
        else:
            k, v = (torch.repeat_interleave(t, self.n_rep, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, s, -1))


class TinyLM(nn.Module):
    def __init__(self, dim: int = 64, n_heads: int = 8, n_kv_heads: int = 8, expand: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, dim)
        self.attn = nn.ModuleList(Attention(dim, n_heads, n_kv_heads, expand) for _ in range(2))
        self.head = nn.Linear(dim, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for attn in self.attn:
            x = x + attn(x)
        return self.head(x)


def _query_heads(graph: DependencyGraph, layer: int):  # type: ignore[no-untyped-def]
    return next(g for g in graph.groups if any(m.tensor == f"attn.{layer}.wo.weight" and m.axis == 1 for m in g.members))


def test_as_many_key_value_heads_as_heads_are_cut_with_both_counts_rewritten() -> None:
    graph, pruned = cut_half(TinyLM(n_heads=8, n_kv_heads=8), IDS)
    assert _query_heads(graph, 0).prunable
    attn = pruned.attn[0]
    assert (attn.n_heads, attn.n_kv_heads, attn.n_rep, attn.head_dim) == (4, 4, 1, 8)
    assert attn.wk.weight.shape[0] == 32


def test_as_many_heads_as_head_size_are_cut_through_expand_and_reshape() -> None:
    """8 heads of 8, 2 key/value heads: the reshape's ``self.n_kv_heads * rep`` is not ``head_dim``."""
    graph, pruned = cut_half(TinyLM(n_heads=8, n_kv_heads=2, expand=True), IDS)
    assert _query_heads(graph, 0).prunable
    attn = pruned.attn[0]
    assert (attn.n_heads, attn.n_kv_heads, attn.head_dim) == (4, 1, 8)


def test_multi_query_attention_by_hand_cuts_query_heads_and_its_repeat_count() -> None:
    """One key/value head repeated ``self.n_rep`` times: the query heads are cut one by one, the
    repeat count follows them, the key/value head stays."""
    graph, pruned = cut_half(TinyLM(n_heads=4, n_kv_heads=1), IDS)
    assert _query_heads(graph, 0).prunable
    attn = pruned.attn[0]
    assert (attn.n_heads, attn.n_kv_heads, attn.n_rep, attn.head_dim) == (2, 1, 2, 16)
    assert attn.wk.weight.shape[0] == 16 and attn.wq.weight.shape[0] == 32


def test_multi_query_attention_expanded_by_a_local_count_cuts_query_heads() -> None:
    """HF's ``expand(b, 1, rep, s, d)`` with ``rep = self.n_heads // self.n_kv_heads``, 8 heads of 8."""
    graph, pruned = cut_half(TinyLM(n_heads=8, n_kv_heads=1, expand=True), IDS)
    assert _query_heads(graph, 0).prunable
    attn = pruned.attn[0]
    assert (attn.n_heads, attn.n_kv_heads, attn.head_dim) == (4, 1, 8)


class FusedSplit(nn.Module):
    """nanoGPT's ``split(self.n_embd, dim=2)`` while another attribute holds the same number."""

    def __init__(self) -> None:
        super().__init__()
        self.n_embd, self.block_size = 16, 16
        self.emb = nn.Embedding(50, 24)
        self.c_attn = nn.Linear(24, 3 * 16)
        self.proj = nn.Linear(16, 24)
        self.head = nn.Linear(24, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        y = torch.softmax(q @ k.transpose(1, 2) / 4.0, -1) @ v
        return self.head(x + self.proj(y))


def test_a_split_size_two_attributes_hold_is_read_from_the_call() -> None:
    """q and k are contracted over their channels: the reference zeroes the removed channels where
    they are made (c_attn's rows in each of q, k, v; the embedding's columns), not only where read."""
    model = FusedSplit().eval()
    graph = DependencyGraph.trace(model, IDS)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=IDS)
    assert pruned.n_embd == 8 and pruned.block_size == 16 and pruned.c_attn.weight.shape == (24, 12)
    reference = copy.deepcopy(model)
    gone_c = torch.ones(16, dtype=torch.bool)
    gone_c[list(plan.keep["c_attn.weight:0"])] = False
    gone_e = torch.ones(24, dtype=torch.bool)
    gone_e[list(plan.keep["emb.weight:0"])] = False
    with torch.no_grad():
        reference.emb.weight[:, gone_e] = 0
        reference.c_attn.weight[gone_c.repeat(3)] = 0
        reference.c_attn.bias[gone_c.repeat(3)] = 0
        reference.proj.weight[gone_e] = 0
        reference.proj.bias[gone_e] = 0
        torch.testing.assert_close(pruned(IDS), reference(IDS), rtol=1e-4, atol=1e-5)


def test_without_source_an_ambiguous_size_stays_frozen_with_the_reason() -> None:
    """A class built by ``exec`` has no source to read: the two attributes stay ambiguous."""
    code = ("class NoSource(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.inp, self.out = nn.Linear(4, 8), nn.Linear(8, 2)\n"
            "        self.width, self.other = 8, 8\n"
            "    def forward(self, x):\n"
            "        return self.out(self.inp(x).view(-1, self.width))\n")
    namespace: dict[str, object] = {"nn": nn}
    exec(compile(code, "<built>", "exec"), namespace)  # noqa: S102 (a class with no source file)
    graph = DependencyGraph.trace(namespace["NoSource"]().eval(), torch.randn(2, 4))  # type: ignore[operator]
    (group,) = [g for g in graph.groups if any(m.tensor == "inp.weight" and m.axis == 0 for m in g.members)]
    assert not group.prunable and any("width" in r and "other" in r for r in group.reasons), group.reasons


class Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 24), nn.Linear(6, 16)
        self.bil = nn.Bilinear(24, 16, 20)
        self.out = nn.Linear(20, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.bil(F.relu(self.a(x)), F.relu(self.b(y)))))


def test_bilinear_layer_cuts_both_inputs_and_its_output() -> None:
    x = (torch.randn(3, 10), torch.randn(3, 6))
    model = Bilinear().eval()
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(*x), mask(model, graph, plan)(*x), rtol=1e-4, atol=1e-5)
    bil = pruned.bil
    assert bil.weight.shape == (10, 12, 8) and (bil.out_features, bil.in1_features, bil.in2_features) == (10, 12, 8)


def test_bilinear_macs_are_counted() -> None:
    """``aten._trilinear`` had no FLOP formula: the bilinear layer counted 0 MACs."""
    x = (torch.randn(1, 10), torch.randn(1, 6))
    assert count_macs(Bilinear(), x) == 10 * 24 + 6 * 16 + 20 * 24 * 16 + 20 * 2


class Ambiguities(nn.Module):
    """Three more places a number is matched to an attribute, each with a second attribute holding
    the same number: a check of the width, a depthwise conv's ``groups``, a zeros tensor's size."""

    def __init__(self) -> None:
        super().__init__()
        self.channels, self.hidden, self.classes = 16, 16, 16
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blur = nn.Parameter(torch.full((16, 1, 3, 3), 1 / 9))
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        if x.shape[1] != self.channels:
            raise ValueError("wrong width")
        x = F.conv2d(x, self.blur, padding=1, groups=self.channels).mean((2, 3))
        acc = x.new_zeros(x.shape[0], self.hidden)
        return self.head(acc + self.proj(x))


def test_a_width_check_groups_and_a_zeros_size_read_the_attribute_the_code_names() -> None:
    model, x = Ambiguities().eval(), torch.randn(2, 3, 6, 6)
    graph, pruned = cut_half(model, x)
    stem = next(g for g in graph.groups if any(m.tensor == "stem.weight" and m.axis == 0 for m in g.members))
    proj = next(g for g in graph.groups if any(m.tensor == "proj.weight" and m.axis == 0 for m in g.members))
    assert stem.prunable and proj.prunable, (stem.reasons, proj.reasons)
    assert (pruned.channels, pruned.hidden, pruned.classes) == (8, 8, 16)


class ExpandedGQA(nn.Module):
    """HF's repeat_kv written inline, no repeat count stored: ``reshape(b, self.n_kv * rep, s, self.hd)``
    with 8 heads of 8 (the product reads ``n_kv``, which holds 2: the 8 is not ``hd``, written beside it)."""

    def __init__(self, dim: int = 64, n_heads: int = 8, n_kv: int = 2) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, dim // n_heads
        self.emb = nn.Embedding(50, dim)
        self.q, self.k = nn.Linear(dim, dim, bias=False), nn.Linear(dim, n_kv * self.hd, bias=False)
        self.v, self.o = nn.Linear(dim, n_kv * self.hd, bias=False), nn.Linear(dim, dim, bias=False)
        self.head = nn.Linear(dim, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.n_heads, self.hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.n_kv, self.hd).transpose(1, 2)
        rep = self.n_heads // self.n_kv
        k = k[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_kv * rep, s, self.hd)
        v = v[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_kv * rep, s, self.hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(x + self.o(y.transpose(1, 2).reshape(b, s, -1)))


def test_a_size_written_as_a_product_of_other_attributes_is_not_the_one_beside_it() -> None:
    graph, pruned = cut_half(ExpandedGQA(), IDS)
    heads = next(g for g in graph.groups if any(m.tensor == "o.weight" and m.axis == 1 for m in g.members))
    assert heads.prunable, heads.reasons
    assert (pruned.n_heads, pruned.n_kv, pruned.hd) == (4, 1, 8)
