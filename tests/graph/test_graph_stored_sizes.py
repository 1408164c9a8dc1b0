"""Sizes a module keeps as attributes and uses in its forward: split sizes (MixConv's ``self.splits``,
FasterNet's ``[self.dim_conv3, self.dim_untouched]``, CSPNet's ``self.expand_chs // 2``), the channel
count of ``nn.Unflatten`` after a Linear, and a slice as wide as its input (GhostNet's
``cat(a, b)[:, :self.oup]``). Each is cut (not frozen), the attribute follows, the pruned model
equals the masked dense one; a size no one attribute holds still freezes its channels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class MixConv(nn.Module):
    """Depthwise kernels of three sizes on three parts of the channels, split at a stored list."""

    def __init__(self, splits: tuple[int, ...] = (8, 8, 16)) -> None:
        super().__init__()
        self.splits = list(splits)
        self.pw = nn.Conv2d(3, sum(splits), 1)
        self.dws = nn.ModuleList(nn.Conv2d(c, c, k, padding=k // 2, groups=c) for c, k in zip(splits, (3, 5, 7)))
        self.head = nn.Linear(sum(splits), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pw(x))
        x = torch.cat([d(p) for d, p in zip(self.dws, torch.split(x, self.splits, 1))], 1)
        return self.head(F.relu(x).mean((2, 3)))


class PartialConv(nn.Module):
    """FasterNet's partial conv: a 3x3 conv on the first ``dim_conv3`` channels, the rest untouched."""

    def __init__(self, dim: int = 32, part: int = 8) -> None:
        super().__init__()
        self.dim_conv3, self.dim_untouched = part, dim - part
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.conv = nn.Conv2d(part, part, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(dim, 48, 1), nn.ReLU(), nn.Conv2d(48, dim, 1))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        a, b = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        x = x + self.mlp(torch.cat((self.conv(a), b), 1))
        return self.head(x.mean((2, 3)))


class CrossStage(nn.Module):
    """CSPNet's stage: an expansion split in two halves at ``self.expand_chs // 2`` (the attribute
    holds the sum of the parts)."""

    def __init__(self) -> None:
        super().__init__()
        self.expand_chs = 32
        self.conv_exp = nn.Conv2d(3, 32, 1)
        self.blocks = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.conv_transition = nn.Conv2d(32, 24, 1)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, xb = F.relu(self.conv_exp(x)).split(self.expand_chs // 2, dim=1)
        y = F.relu(self.conv_transition(torch.cat([xs, self.blocks(xb)], 1)))
        return self.head(y.mean((2, 3)))


class Ghost(nn.Module):
    """GhostNet's module: half the outputs from a conv, half from a cheap depthwise conv on them,
    then ``[:, :self.oup]`` (all of them when ``oup`` is even)."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.oup, init = oup, math.ceil(oup / 2)
        self.primary = nn.Sequential(nn.Conv2d(inp, init, 1), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, padding=1, groups=init), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], 1)[:, :self.oup]


class GhostNet(nn.Module):
    def __init__(self, widths: tuple[int, int] = (24, 16)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g1, self.g2 = Ghost(16, widths[0]), Ghost(widths[0], widths[1])
        self.head = nn.Linear(widths[1], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.g2(self.g1(F.relu(self.stem(x)))).mean((2, 3)))


class Generator(nn.Module):
    """A DCGAN generator: a Linear, ``nn.Unflatten(1, (32, 4, 4))``, transposed convs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32 * 4 * 4), nn.Unflatten(1, (32, 4, 4)), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 3, 4, 2, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _image(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _cut(model: nn.Module, x: torch.Tensor):  # type: ignore[no-untyped-def]
    """Half of every group (exact widths), verified by ``apply``; the graph, plan and pruned model."""
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    return graph, plan, pruned


def _frozen(graph: DependencyGraph, tensor: str) -> list[str]:
    return [r for g in graph.groups if tensor in {m.tensor for m in g.members} for r in g.reasons]


def test_a_split_at_a_stored_list_cuts_every_part_and_rewrites_the_list() -> None:
    torch.manual_seed(0)
    model, x = MixConv().eval(), _image(2, 3, 12, 12)
    graph, plan, pruned = _cut(model, x)
    assert not _frozen(graph, "pw.weight")
    assert pruned.splits == [4, 4, 8] == [d.in_channels for d in pruned.dws]
    assert pruned(_image(1, 3, 9, 7)).shape == (1, 5)


def test_a_split_at_two_stored_ints_cuts_each_part_apart() -> None:
    torch.manual_seed(0)
    model, x = PartialConv().eval(), _image(2, 3, 10, 10)
    graph, _, pruned = _cut(model, x)
    assert not _frozen(graph, "stem.weight")
    assert (pruned.dim_conv3, pruned.dim_untouched) == (4, 12)
    assert pruned.conv.in_channels == 4 and pruned.stem.out_channels == 16


def test_equal_parts_of_a_stored_sum_rewrite_the_sum() -> None:
    torch.manual_seed(0)
    model, x = CrossStage().eval(), _image(2, 3, 8, 8)
    graph, _, pruned = _cut(model, x)
    assert not _frozen(graph, "conv_exp.weight")
    assert pruned.expand_chs == pruned.conv_exp.out_channels == 16 and pruned.blocks[0].in_channels == 8


def test_a_split_size_held_by_two_attributes_is_frozen() -> None:
    model = PartialConv().eval()
    model.other = 8  # NOTE: now two attributes hold 8: which one the split reads is unknown
    graph = DependencyGraph.trace(model, _image(2, 3, 10, 10))
    assert any(r.startswith("split at constant sizes") for r in _frozen(graph, "stem.weight"))


def test_a_slice_as_wide_as_its_input_is_no_cut() -> None:
    torch.manual_seed(0)
    model, x = GhostNet().eval(), _image(2, 3, 10, 10)
    graph, _, pruned = _cut(model, x)
    assert not _frozen(graph, "g1.primary.0.weight") and not _frozen(graph, "g2.primary.0.weight")
    assert pruned.g1.primary[0].out_channels == 6 and pruned.head.in_features == 8


def test_a_slice_narrower_than_its_input_stays_frozen() -> None:
    model = GhostNet((24, 15)).eval()  # NOTE: oup 15 of 16 channels: the slice drops one
    graph = DependencyGraph.trace(model, _image(2, 3, 10, 10))
    assert any(r.startswith("constant slice of channels") for r in _frozen(graph, "g2.primary.0.weight"))


def test_unflatten_after_a_linear_cuts_whole_channels_and_saves(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model, z = Generator().eval(), _image(2, 8)
    graph, _, pruned = _cut(model, z)
    group = next(g for g in graph.groups if "net.0.weight" in {m.tensor for m in g.members})
    assert group.prunable and group.size == 32
    assert {m.inner for m in group.members if m.tensor == "net.0.weight"} == {16}
    assert pruned.net[1].unflattened_size == (16, 4, 4) and pruned.net[0].out_features == 256
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "g", original=model), model=Generator())
    torch.testing.assert_close(loaded(_image(3, 8)), pruned(_image(3, 8)))


def test_deformable_conv_cuts_its_channels_and_keeps_its_offsets() -> None:
    ops = pytest.importorskip("torchvision.ops")
    from prunekit.measure import count_macs

    class Deform(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.offset = nn.Conv2d(16, 18, 3, padding=1)
            self.dc = ops.DeformConv2d(16, 24, 3, padding=1)
            self.head = nn.Conv2d(24, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.c1(x))
            return self.head(F.relu(self.dc(h, self.offset(h))))

    torch.manual_seed(0)
    model, x = Deform().eval(), _image(2, 3, 9, 9)
    assert count_macs(model, x) == 2 * 81 * (16 * 3 + 18 * 16 + 24 * 16) * 9 + 2 * 81 * 4 * 24
    graph, _, pruned = _cut(model, x)
    assert any(r.startswith("offsets of a deformable conv") for r in _frozen(graph, "offset.weight"))
    assert pruned.dc.weight.shape == (12, 8, 3, 3) and pruned.offset.weight.shape == (18, 8, 3, 3)


class PartialAttention(nn.Module):
    """SHViT's single-head attention on the first ``pdim`` channels: ``split(x, [self.pdim, self.dim -
    self.pdim])`` (a computed size no attribute holds: frozen), then ``split(qkv, [self.qk_dim,
    self.qk_dim, self.pdim])``, whose ``pdim`` part must then keep its width too."""

    def __init__(self, dim: int = 32, pdim: int = 8, qk_dim: int = 4) -> None:
        super().__init__()
        self.dim, self.pdim, self.qk_dim = dim, pdim, qk_dim
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.qkv = nn.Conv2d(pdim, 2 * qk_dim + pdim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        q, k, v = torch.split(self.qkv(x1), [self.qk_dim, self.qk_dim, self.pdim], dim=1)
        attn = (q.flatten(2).transpose(-2, -1) @ k.flatten(2)).softmax(-1)
        x1 = (v.flatten(2) @ attn.transpose(-2, -1)).reshape(b, self.pdim, h, w)
        return self.head(self.proj(torch.cat([x1, x2], 1)).mean((2, 3)))


def test_a_size_read_as_a_constant_elsewhere_is_not_rewritten() -> None:
    torch.manual_seed(0)
    model, x = PartialAttention().eval(), _image(2, 3, 6, 6)
    graph, _, pruned = _cut(model, x)  # NOTE: verified (rewriting pdim would break the first split)
    assert any(r.startswith("split at constant sizes") for r in _frozen(graph, "qkv.weight"))
    assert pruned.pdim == 8 and pruned.qkv.out_channels == 16 and pruned.proj.out_channels == 16


class Narrowed(nn.Module):
    """``narrow(1, 0, n)`` of all the channels: ``n`` a literal, or read from the tensor's shape."""

    def __init__(self, literal: bool) -> None:
        super().__init__()
        self.literal = literal
        self.c1, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x))
        h = h.narrow(1, 0, 32 if self.literal else h.shape[1])
        return self.head(F.relu(self.c2(h)).mean((2, 3)))


def test_narrow_to_a_literal_width_is_kept_and_to_the_read_width_is_cut() -> None:
    torch.manual_seed(0)
    x = _image(2, 3, 8, 8)
    graph = DependencyGraph.trace(Narrowed(literal=True).eval(), x)
    assert any(r.startswith("constant slice of channels") for r in _frozen(graph, "c1.weight"))
    _, _, pruned = _cut(Narrowed(literal=False).eval(), x)
    assert pruned.c1.out_channels == 16


class Args:
    """A settings object shared by every block (mamba-minimal's ``ModelArgs``)."""

    def __init__(self, d_model: int = 16, expand: int = 2, dt_rank: int = 3, d_state: int = 6) -> None:
        self.d_model, self.d_inner, self.dt_rank, self.d_state = d_model, expand * d_model, dt_rank, d_state


class ScanBlock(nn.Module):
    """mamba-minimal's split at ``[self.args.d_inner, self.args.d_inner]`` and at ``[self.args.dt_rank,
    n, n]`` with ``n`` read from a parameter's shape (a plain state-space step stands for the scan)."""

    def __init__(self, args: Args) -> None:
        super().__init__()
        self.args = args
        self.in_proj = nn.Linear(args.d_model, 2 * args.d_inner, bias=False)
        self.x_proj = nn.Linear(args.d_inner, args.dt_rank + 2 * args.d_state, bias=False)
        self.dt_proj = nn.Linear(args.dt_rank, args.d_inner)
        self.A_log = nn.Parameter(torch.randn(args.d_inner, args.d_state) * 0.1)
        self.out_proj = nn.Linear(args.d_inner, args.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, res = self.in_proj(x).split(split_size=[self.args.d_inner, self.args.d_inner], dim=-1)
        _, n = self.A_log.shape
        delta, b, c = self.x_proj(x).split(split_size=[self.args.dt_rank, n, n], dim=-1)
        delta = F.softplus(self.dt_proj(delta))
        y = torch.einsum("bld,dn,bln,bln->bld", delta, -torch.exp(self.A_log), b, c) + x
        return self.out_proj(y * F.silu(res))


class ScanLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.args = Args()
        self.embedding = nn.Embedding(40, 16)
        self.layers = nn.ModuleList(ScanBlock(self.args) for _ in range(2))
        self.head = nn.Linear(16, 40)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


def test_split_sizes_in_a_shared_settings_object_and_a_parameter_shape_follow_the_cut(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model, ids = ScanLM().eval(), torch.randint(0, 40, (2, 5))
    graph = DependencyGraph.trace(model, ids)  # NOTE: the state dim is contracted: an inexact cut, verified as such
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5, round_to=1), example_inputs=ids)
    assert not _frozen(graph, "layers.0.in_proj.weight") and not _frozen(graph, "layers.0.A_log")
    assert pruned.args.d_inner == 16 and model.args.d_inner == 32  # NOTE: rewritten once, on the copy
    assert pruned.layers[1].args is pruned.args and pruned.layers[1].in_proj.out_features == 32
    assert pruned.layers[0].A_log.shape == (16, 3) and pruned.args.dt_rank == 2  # NOTE: the n parts cut with A_log
    assert pruned.layers[0].x_proj.out_features == 2 + 2 * 3 == pruned.layers[1].dt_proj.in_features + 6
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=model), model=ScanLM())
    assert loaded.args.d_inner == 16
    torch.testing.assert_close(loaded(ids), pruned(ids))


class SelectiveKernel(nn.Module):
    """SKNet: ``M`` branches of ``c`` channels, a softmax over the branches of an attention that one
    conv makes for all of them, viewed as ``(B, self.M, self.c, 1, 1)``."""

    def __init__(self, c: int = 16, branches: int = 2) -> None:
        super().__init__()
        self.M, self.c = branches, c
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1 + i, dilation=1 + i),
                                                    nn.BatchNorm2d(c), nn.ReLU()) for i in range(branches))
        self.squeeze = nn.Sequential(nn.Conv2d(c, 8, 1), nn.ReLU())
        self.select = nn.Conv2d(8, c * branches, 1)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        feats = torch.stack([b(x) for b in self.branches], 1)
        z = self.squeeze(F.adaptive_avg_pool2d(feats.sum(1), 1))
        a = self.select(z).view(x.size(0), self.M, self.c, 1, 1).softmax(1)
        return self.head((feats * a).sum(1).mean((2, 3)))


def test_blocks_of_a_stored_size_are_cut_alike_and_the_size_follows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before, the view froze the branches' channels ("meets a fixed-size tensor"): ``(M, c)`` was
    taken as ``M`` heads of ``c``. Now each branch's block is cut at the same positions, ``c`` is
    rewritten and ``M`` stays."""
    model, x = SelectiveKernel().eval(), _image(2, 3, 8, 8)
    graph, _, pruned = _cut(model, x)
    assert not _frozen(graph, "stem.weight") and not _frozen(graph, "select.weight")
    assert (pruned.M, pruned.c) == (2, 8) and pruned.select.out_channels == 16
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=model), model=SelectiveKernel())
    torch.testing.assert_close(loaded(x), pruned(x))


class MemoryAttention(nn.Module):
    """Transformer-XL's shape: a memory of zeros ``new_zeros(B, self.mem, self.d)`` before the tokens,
    attention over both, and ``reshape(B, T, self.d)`` of its heads. One attribute sizes two widths
    (the residual stream and the attention's), so both are cut alike."""

    def __init__(self, d: int = 32, h: int = 4, mem: int = 5) -> None:
        super().__init__()
        self.d, self.h, self.mem = d, h, mem
        self.emb = nn.Embedding(50, d)
        self.qkv, self.o, self.head = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        B, T, _ = x.shape
        q, k, v = self.qkv(torch.cat([x.new_zeros(B, self.mem, self.d), x], 1)).chunk(3, -1)
        q, k, v = (t.view(B, -1, self.h, self.d // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q[:, :, -T:], k, v)
        return self.head(x + self.o(y.transpose(1, 2).reshape(B, T, self.d)))


def test_one_attribute_sizing_two_widths_cuts_them_alike() -> None:
    """Before, ``self.d`` joined two layouts that did not line up and every channel was kept."""
    torch.manual_seed(0)
    model, ids = MemoryAttention().eval(), torch.randint(0, 50, (2, 7))
    graph, _, pruned = _cut(model, ids)
    assert not _frozen(graph, "emb.weight") and not _frozen(graph, "o.weight")
    assert pruned.d == 16 and pruned.emb.embedding_dim == 16 and pruned.o.in_features == 16
    assert pruned(torch.randint(0, 50, (1, 4))).shape == (1, 4, 50)
