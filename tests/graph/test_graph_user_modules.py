"""A user's own modules, written the way people write them: nanoGPT's attention (fused q|k|v split
at ``self.n_embd``, ``view(B, T, self.n_head, C // self.n_head)``), Meta's Llama attention (stored
``n_heads``, ``n_kv_heads``, rotary embeddings in complex form), and ops that trade or mix channels
(``glu``, ``pixel_shuffle``, ``F.unfold``, ``linalg.vector_norm``, ``cosine_similarity``). Each is
cut, verified against the masked dense model, and its stored sizes follow the cut."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunekit.graph import DependencyGraph
from prunekit.structured import StructuredPruner, allocate, apply
from prunekit.graph.groups import tensor_of
from prunekit.importance import score
from prunekit.structured.apply import mask
from prunekit.structured.verify import cuts_of


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head
        self.n_embd = n_embd
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """Token and position embeddings, blocks, a final norm and an LM head tied to the embedding."""

    def __init__(self, vocab: int = 40, n_embd: int = 32, n_head: int = 4, n_layer: int = 2, block_size: int = 16) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def test_nanogpt_is_cut_in_whole_heads_and_its_sizes_follow() -> None:
    torch.manual_seed(0)
    model = NanoGPT().eval()
    idx = torch.randint(0, 40, (2, 12))
    before = model(idx)
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, idx)  # verified by apply
    for block in pruned.h:
        attn = block.attn
        assert attn.n_head == 2 and attn.n_embd == attn.c_proj.out_features == 16
        assert attn.c_attn.out_features == 3 * 16 and block.mlp[0].out_features == 64
    assert pruned.lm_head.weight is pruned.wte.weight and pruned.wte.weight.shape == (40, 16)
    assert pruned(torch.randint(0, 40, (1, 7))).shape == (1, 7, 40)  # another length runs too
    torch.testing.assert_close(model(idx), before)  # the user's model is untouched



class AlibiBlock(nn.Module):
    """BLOOM-style attention by hand: heads folded into the batch for ``baddbmm`` with ALiBi slopes,
    the head size ``C // self.h`` used again there, and the head count kept in ``self.h`` (a name
    that does not say "head")."""

    def __init__(self, d: int = 32, h: int = 4, vocab: int = 50) -> None:
        super().__init__()
        self.h = h
        self.emb, self.norm = nn.Embedding(vocab, d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("slopes", torch.tensor([2 ** (-8 * (i + 1) / h) for i in range(h)]))
        self.out = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, N, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4).reshape(
            3, B * self.h, N, C // self.h)
        pos = torch.arange(N)
        bias = (self.slopes[:, None, None] * (pos[None, None, :] - pos[None, :, None])).repeat(B, 1, 1)
        att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=(C // self.h) ** -0.5).softmax(-1)
        o = torch.bmm(att, v).view(B, self.h, N, -1).transpose(1, 2).reshape(B, N, C)
        return self.out(x + self.o(o))


def _half_of_every_group(model: nn.Module, ids: torch.Tensor, output: str) -> nn.Module:
    """Every group but the output's is prunable; half of each is cut (exact widths), verified by apply."""
    graph = DependencyGraph.trace(model, ids)
    assert all(g.prunable for g in graph.groups if g.id != output), [g.reasons for g in graph.groups]
    return apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5, round_to=1), example_inputs=ids)


def test_heads_folded_into_the_batch_with_a_count_named_h_are_cut_whole() -> None:
    torch.manual_seed(0)
    pruned = _half_of_every_group(AlibiBlock().eval(), torch.randint(0, 50, (2, 9)), "out.weight:0")
    assert pruned.h == 2 and pruned.qkv.out_features == 3 * 16 and pruned.emb.embedding_dim == 16
    assert pruned.slopes.shape == (2,)  # NOTE: the kept heads' slopes
    assert pruned(torch.randint(0, 50, (3, 5))).shape == (3, 5, 50)


class FairseqAttention(nn.Module):
    """fairseq's MultiheadAttention: time-first ``[T, B, C]``, ``view(T, B * self.num_heads, head_dim)``."""

    def __init__(self, d: int = 32, h: int = 4) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = d, h, d // h
        self.scaling = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tgt_len, bsz, embed_dim = x.size()
        q = (self.q_proj(x) * self.scaling).contiguous().view(tgt_len, bsz * self.num_heads, self.head_dim)
        k = self.k_proj(x).contiguous().view(-1, bsz * self.num_heads, self.head_dim)
        v = self.v_proj(x).contiguous().view(-1, bsz * self.num_heads, self.head_dim)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        attn = torch.bmm(F.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)
        return self.out_proj(attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim))


class FairseqLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.norm = nn.Embedding(50, 32), nn.LayerNorm(32)
        self.attn = FairseqAttention()
        self.out = nn.Linear(32, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids).transpose(0, 1)
        return self.out((x + self.attn(self.norm(x))).transpose(0, 1))


def test_fairseq_attention_with_the_batch_merged_into_the_heads_is_cut_whole() -> None:
    torch.manual_seed(0)
    pruned = _half_of_every_group(FairseqLM().eval(), torch.randint(0, 50, (3, 7)), "out.weight:0")
    assert pruned.attn.num_heads == 2 and pruned.attn.q_proj.out_features == 2 * pruned.attn.head_dim == 16
    assert pruned(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)


class AnnotatedAttention(nn.Module):
    """The Annotated Transformer's attention: four cloned Linears, ``view(n, -1, self.h, self.d_k)``
    and back to ``view(n, -1, self.h * self.d_k)`` (a product of two attributes)."""

    def __init__(self, h: int = 4, d_model: int = 32) -> None:
        super().__init__()
        self.d_k, self.h = d_model // h, h
        self.linears = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        q, k, v = [lin(t).view(n, -1, self.h, self.d_k).transpose(1, 2) for lin, t in zip(self.linears, (x, x, x))]
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        y = torch.matmul(att.softmax(-1), v).transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k)
        return self.linears[-1](y)


def test_a_view_to_the_head_count_times_the_head_size_follows_the_cut() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 32), nn.LayerNorm(32), AnnotatedAttention(), nn.Linear(32, 50)).eval()
    pruned = _half_of_every_group(model, torch.randint(0, 50, (3, 7)), "3.weight:0")
    assert pruned[2].h == 2 and pruned[2].d_k == 8 and pruned[2].linears[0].out_features == 16


def test_as_many_heads_as_their_size_are_told_apart_by_the_source() -> None:
    """8 heads of 8: ``view(n, -1, self.h, self.d_k)`` holds two 8s, and ``self.h * self.d_k`` is 8
    times 8. The source says which is the count (before, the heads were frozen as ambiguous)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 64), nn.LayerNorm(64), AnnotatedAttention(8, 64), nn.Linear(64, 50)).eval()
    pruned = _half_of_every_group(model, torch.randint(0, 50, (3, 7)), "3.weight:0")
    assert pruned[2].h == 4 and pruned[2].d_k == 8 and pruned[2].linears[0].out_features == 32

class MetaAttention(nn.Module):
    """Meta's Llama attention: stored head counts, GQA by ``repeat_interleave``, complex rotary."""

    def __init__(self, dim: int = 32, n_heads: int = 4, n_kv_heads: int = 2, max_len: int = 16) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.n_rep, self.head_dim = n_heads // n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        angles = torch.arange(max_len).float()[:, None] / 10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles))

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * self.freqs_cis[: x.shape[1]].view(1, x.shape[1], 1, -1)).flatten(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        q = self._rotate(self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim))
        k = self._rotate(self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim))
        v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)
        k, v = (torch.repeat_interleave(t, self.n_rep, dim=2) for t in (k, v))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).contiguous().view(bsz, seqlen, -1))


class MetaLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(40, 32)
        self.attn = MetaAttention()
        self.out = nn.Linear(32, 40)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids)
        return self.out(h + self.attn(h))


def test_meta_llama_attention_cuts_key_value_heads_with_their_query_heads() -> None:
    torch.manual_seed(0)
    model = MetaLM().eval()
    ids = torch.randint(0, 40, (2, 10))
    graph = DependencyGraph.trace(model, ids)
    heads = next(g for g in graph.groups if "attn.wk.weight" in {m.tensor for m in g.members if m.axis == 0})
    assert heads.prunable and heads.size == 2  # key/value heads, each with its n_rep query heads
    pruned = StructuredPruner({"ratio": 0.5}, round_to=1).fit_transform(model, ids)
    assert (pruned.attn.n_heads, pruned.attn.n_kv_heads, pruned.attn.head_dim) == (2, 1, 8)
    assert pruned.attn.wq.out_features == 16 and pruned.attn.wk.out_features == 8


def test_a_head_count_written_as_a_literal_freezes_with_the_reason() -> None:
    class Literal(CausalSelfAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in (q, k, v))  # 2: self.n_head is 4
            y = F.scaled_dot_product_attention(q, k, v)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    graph = DependencyGraph.trace(Literal(32, 4, 16).eval(), torch.randn(1, 5, 32))
    group = next(g for g in graph.groups if g.id.startswith("c_attn.weight"))
    assert not group.prunable and any("constant head count" in r for r in group.reasons), group.reasons


class ConvBN(nn.Module):
    def __init__(self, a: int, b: int, k: int = 1) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(a, b, k, padding=k // 2, bias=False), nn.BatchNorm2d(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class C2f(nn.Module):
    """YOLOv8's C2f: ``split((self.c, self.c), 1)``, bottlenecks on the second half, all concatenated."""

    def __init__(self, c1: int = 16, c2: int = 32, n: int = 2) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1, self.cv2 = ConvBN(c1, 2 * self.c), ConvBN((2 + n) * self.c, c2)
        self.m = nn.ModuleList(nn.Sequential(ConvBN(self.c, self.c, 3), ConvBN(self.c, self.c, 3)) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) + y[-1] for m in self.m)
        return self.cv2(torch.cat(y, 1))


def test_yolo_c2f_split_at_a_stored_size_is_cut_and_the_size_follows() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(ConvBN(3, 16, 3), C2f(), nn.Conv2d(32, 5, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    graph = DependencyGraph.trace(model, x)
    halves = graph.group("1.cv1.conv.weight:0")
    assert halves.prunable and halves.size == 16  # channel j of both halves together
    assert [attr for _, attr, _, _ in halves.size_attributes()] == ["c"]
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned[1].c == 8 == pruned[1].cv1.conv.out_channels // 2 and model[1].c == 16
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


class GRN(nn.Module):
    """ConvNeXt-V2's response norm with ``torch.linalg.vector_norm`` over the spatial dims."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.a, self.o = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, 4, 1)
        self.gamma, self.beta = nn.Parameter(torch.randn(1, c, 1, 1)), nn.Parameter(torch.randn(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        gx = torch.linalg.vector_norm(h, ord=2, dim=(2, 3), keepdim=True)
        return self.o(self.gamma * (h * gx / (gx.mean(dim=1, keepdim=True) + 1e-6)) + self.beta + h)


class PositionalNorm(nn.Module):
    """``h.norm(2, 1, True)``: the order comes before the dim (it used to be read as the dim)."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.a, self.o = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.o(h / (h.norm(2, 1, True) + 1e-6))


class GLU(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.a, self.o = nn.Conv1d(3, 2 * c, 3, padding=1), nn.Conv1d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(F.glu(self.a(x), dim=1))


class Shuffle(nn.Module):
    """Sub-pixel upsampling and its inverse: channels in blocks of r*r."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.a, self.b, self.o = nn.Conv2d(3, 4 * c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(4 * c, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(F.pixel_unshuffle(self.b(F.pixel_shuffle(self.a(x), 2)), 2))


class Im2col(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.a, self.o = nn.Conv2d(3, c, 3, padding=1), nn.Linear(c * 9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(F.unfold(self.a(x), 3, padding=1).transpose(1, 2))


class Cosine(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, d), nn.Linear(8, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.a(x), self.b(x), dim=-1)


class RawWeights(nn.Module):
    """Weights as bare parameters, read through the ``.T`` and ``.mT`` properties."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(32, d)), nn.Parameter(torch.randn(5, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1.T) @ self.w2.mT


OPS = {"vector_norm": (GRN, (2, 3, 8, 8)), "norm_positional": (PositionalNorm, (2, 3, 8, 8)),
       "glu": (GLU, (2, 3, 10)), "pixel_shuffle": (Shuffle, (2, 3, 8, 8)), "unfold": (Im2col, (2, 3, 8, 8)),
       "cosine_similarity": (Cosine, (2, 8)), "transpose_property": (RawWeights, (2, 16))}


INEXACT = {"vector_norm"}  # GRN divides by the mean norm over channels


def _masked(model: nn.Module, graph: DependencyGraph, plan) -> nn.Module:  # type: ignore[no-untyped-def]
    """The masked dense model with the removed channels' producers zeroed too (a cosine or a norm
    over channels has no consumer weight to zero)."""
    masked = mask(model, graph, plan)
    with torch.no_grad():
        for group, removed in cuts_of(graph, plan):
            for m in group.by_role("producer"):
                rows = [m.start + r * m.inner + i for r in removed for i in range(m.inner)]
                tensor_of(masked, m.tensor).index_fill_(m.axis, torch.tensor(rows), 0.0)
    return masked


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_that_trade_or_mix_channels_are_cut_and_equal_the_masked_model(name: str) -> None:
    torch.manual_seed(0)
    build, shape = OPS[name]
    model, x = build().eval(), torch.randn(shape)
    graph = DependencyGraph.trace(model, x)
    assert graph.prunable and not graph.blocked, graph.summary()
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert sum(p.numel() for p in pruned.parameters()) < 0.75 * sum(p.numel() for p in model.parameters())
    if name in INEXACT:  # a mean over channels divides by their count: checked by shapes and layers
        assert any(not g.exact and not g.zero_exact for g, _ in cuts_of(graph, plan))
        assert pruned(x).shape == model(x).shape
    else:
        torch.testing.assert_close(pruned(x), _masked(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


class LastToken(nn.Module):
    """A classifier that reads each sequence's last real token with ``gather``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.ff, self.head = nn.Embedding(30, 16), nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.ff(self.embed(ids)))
        index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, h.size(-1))
        return self.head(h.gather(1, index).squeeze(1))


class Bag(nn.Module):
    """fastText's shape: an ``EmbeddingBag`` averaging each bag of token ids, then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.bag, self.fc, self.out = nn.EmbeddingBag(50, 16, mode="mean"), nn.Linear(16, 32), nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc(self.bag(ids, offsets))))


class KeepTokens(nn.Module):
    """MAE's masking: ``gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))`` with ``D`` read from x."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mlp, self.head = nn.Linear(12, 32), nn.Sequential(nn.Linear(32, 64), nn.GELU(),
                                                                           nn.Linear(64, 32)), nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        n, length, d = x.shape
        ids_keep = torch.argsort(torch.arange(length, 0, -1).float().expand(n, length), dim=1)[:, : length // 2]
        x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
        return self.head((x + self.mlp(x)).mean(1))


@pytest.mark.parametrize("build,inputs", [
    (KeepTokens, lambda: (torch.randn(2, 8, 12),)),
    (LastToken, lambda: (torch.randint(0, 30, (2, 7)), torch.tensor([7, 4]))),
    (Bag, lambda: (torch.randint(0, 50, (10,)), torch.tensor([0, 4]))),
], ids=["repeat_to_gather", "gather", "embedding_bag"])
def test_gather_and_embedding_bag_keep_their_channels(build, inputs) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model, x = build().eval(), inputs()
    graph = DependencyGraph.trace(model, x)
    assert len(graph.prunable) == 2 and not graph.blocked, graph.summary()
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(*x), mask(model, graph, plan)(*x), rtol=1e-4, atol=1e-5)


class FirstChannelOnly(nn.Module):
    """``gather`` with an index one position wide over the channels reads channel 0 only: a channel
    picked by position, which a cut would shift."""

    def __init__(self) -> None:
        super().__init__()
        self.ff, self.head = nn.Linear(4, 16), nn.Linear(1, 3)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.ff(x)).gather(1, index).squeeze(1))


def test_gather_with_an_index_narrower_than_the_channels_freezes_them() -> None:
    torch.manual_seed(0)
    model, x, index = FirstChannelOnly().eval(), torch.randn(2, 5, 4), torch.tensor([[[3]], [[1]]])
    graph = DependencyGraph.trace(model, (x, index))
    group = graph.group("ff.weight:0")
    assert not group.prunable and any("index of a fixed width" in r for r in group.reasons)


class FunctionalAttention(nn.Module):
    """``F.multi_head_attention_forward`` called with the module's own packed projection and a
    stored width to check (a layer written against the functional, not nn.MultiheadAttention)."""

    def __init__(self, d: int = 32, h: int = 4) -> None:
        super().__init__()
        self.d, self.h = d, h
        self.emb = nn.Embedding(40, d)
        self.in_proj_weight = nn.Parameter(torch.randn(3 * d, d) * 0.1)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, d))
        self.head = nn.Linear(d, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids).transpose(0, 1)
        y, _ = F.multi_head_attention_forward(x, x, x, self.d, self.h, self.in_proj_weight, self.in_proj_bias,
                                              None, None, False, 0.0, self.out_proj.weight, self.out_proj.bias,
                                              training=False, need_weights=False)
        y = y + self.mlp(y)
        return self.head(y.mean(0))


def test_functional_attention_outside_the_module_keeps_its_width_up_front() -> None:
    """Its projections must stay ``embed_dim`` rows: before, the width was cut and failed
    verification (``was expecting embedding dimension of 32, but got 16``), then kept by the fallback."""
    model, ids = FunctionalAttention().eval(), torch.randint(0, 40, (1, 7))
    pruner = StructuredPruner({"ratio": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NOTE: no "failed verification" fallback
        pruned = pruner.fit_transform(model, ids)
    width = next(g for g in pruner.graph_.groups if any(m.tensor == "emb.weight" and m.axis == 1 for m in g.members))
    assert not width.prunable and any("must stay that many rows" in r for r in width.reasons)
    assert pruned.mlp[0].out_features == 32 and pruned.emb.embedding_dim == 32
    assert pruned(torch.randint(0, 40, (2, 5))).shape == (2, 3)
