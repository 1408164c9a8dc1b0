"""Grouped and depthwise convolutions, GroupNorm and InstanceNorm: what is coupled, and that the
pruned model equals the masked dense model (or, for GroupNorm's mixed statistics, keeps shapes)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance.magnitude import random
from prunekit.structured.allocate import allocate
from prunekit.structured.apply import apply, mask


class GroupedBlock(nn.Module):
    """stem -> grouped 3x3 (g=4) -> BN -> grouped 1x1 (g=2) -> depthwise x2 multiplier -> 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.grouped = nn.Conv2d(16, 24, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(24)
        self.pair = nn.Conv2d(24, 8, 1, groups=2)
        self.depthwise = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.grouped(F.relu(self.stem(x)))))
        return self.head(F.relu(self.depthwise(self.pair(y)))).mean((2, 3))


class GroupedTransposed(nn.Module):
    """Grouped and depthwise transposed convs, with a residual across the grouped one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 12, 1)
        self.up = nn.ConvTranspose1d(12, 12, 3, padding=1, groups=3)
        self.depthwise = nn.ConvTranspose1d(12, 24, 3, stride=2, groups=12)
        self.head = nn.Conv1d(24, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        y = F.relu(y + self.up(y))
        return self.head(self.depthwise(y)).mean(2)


class Norms(nn.Module):
    """GroupNorm with blocks, per-channel GroupNorm, affine InstanceNorm with running stats."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 3, padding=1)
        self.gn = nn.GroupNorm(3, 12)
        self.b = nn.Conv2d(12, 8, 1)
        self.per_channel = nn.GroupNorm(8, 8)
        self.c = nn.Conv2d(8, 6, 1)
        self.instance = nn.InstanceNorm2d(6, affine=True, track_running_stats=True)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn(self.a(x)))
        y = F.relu(self.per_channel(self.b(y)))
        return self.head(F.relu(self.instance(self.c(y))).mean((2, 3)))


def _tiny_resnext() -> nn.Module:
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=8, num_classes=5)


def _regnet() -> nn.Module:
    from torchvision.models import regnet_y_400mf

    return regnet_y_400mf(num_classes=5)


def _randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics, so masking mistakes cannot hide behind mean 0 / var 1."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _prune(model: nn.Module, x: torch.Tensor, ratio: float, seed: int = 0):  # type: ignore[no-untyped-def]
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in graph.prunable}, ratio)
    return graph, plan, apply(model, graph, plan, example_inputs=x)


def _check_conv_attributes(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            w = m.weight.shape
            ins, outs = (w[0], w[1] * m.groups) if m.transposed else (w[1] * m.groups, w[0])
            assert (m.in_channels, m.out_channels) == (ins, outs), name
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0, name


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_equivalence(factory, shape: tuple[int, ...], ratio: float, seed: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = _randomise_norms(factory(), seed).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    graph, plan, pruned = _prune(model, x, ratio, seed)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
    _check_conv_attributes(pruned)
    for (name, before), after in zip(model.named_modules(), pruned.modules()):
        if isinstance(before, nn.modules.conv._ConvNd) and before.groups != before.in_channels:
            assert after.groups == before.groups, name  # grouped convs keep their group count
    if ratio >= 0.5:
        assert _params(pruned) < _params(model)


@pytest.mark.parametrize("factory, shape", [(GroupedBlock, (2, 3, 8, 8)), (GroupedTransposed, (2, 2, 9))],
                         ids=["grouped_block", "grouped_transposed"])
@settings(max_examples=5, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_grouped_pruned_equals_masked_dense(factory, shape: tuple[int, ...], ratio: float, seed: int) -> None:  # type: ignore[no-untyped-def]
    _check_equivalence(factory, shape, ratio, seed)


@settings(max_examples=3, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_tiny_resnext_pruned_equals_masked_dense(ratio: float, seed: int) -> None:
    _check_equivalence(_tiny_resnext, (1, 3, 32, 32), ratio, seed)


@settings(max_examples=2, deadline=None)
@given(ratio=st.floats(0.2, 0.7), seed=st.integers(0, 1000))
def test_regnet_y_400mf_pruned_equals_masked_dense(ratio: float, seed: int) -> None:
    _check_equivalence(_regnet, (1, 3, 64, 64), ratio, seed)


def test_grouped_conv_blocks_are_cut_alike() -> None:
    graph = DependencyGraph.trace(GroupedBlock().eval(), torch.randn(1, 3, 8, 8))
    out = graph.group("grouped.weight:0")  # 24 rows in 4 blocks of 6
    assert out.prunable and out.size == 6
    assert sorted(m.start for m in out.by_role("producer") if m.tensor == "grouped.weight") == [0, 6, 12, 18]
    # pair reads 2 blocks of 12: columns j and 6+j of its shared weight hold channel j of both halves
    assert sorted((m.tensor, m.start) for m in out.by_role("consumer")) == [("pair.weight", 0), ("pair.weight", 6)]
    stem = graph.group("stem.weight:0")  # 16 input channels in 4 blocks of 4
    assert stem.size == 4 and sorted(m.start for m in stem.by_role("producer") if m.tensor == "stem.weight") \
        == [0, 4, 8, 12]
    assert [(m.tensor, m.axis, m.start) for m in stem.by_role("consumer")] == [("grouped.weight", 1, 0)]


def test_depthwise_multiplier_keeps_rows_with_their_channel() -> None:
    model = GroupedBlock().eval()
    x = torch.randn(1, 3, 8, 8)
    graph, plan, pruned = _prune(model, x, 0.5)
    group = graph.groups_of("depthwise")[0]
    assert {m.inner for m in group.members if m.tensor == "depthwise.weight"} == {2}
    assert pruned.depthwise.groups == pruned.depthwise.in_channels == pruned.pair.out_channels
    assert pruned.depthwise.out_channels == 2 * pruned.depthwise.in_channels


def test_group_norm_keeps_its_group_count() -> None:
    model = Norms().eval()
    x = torch.randn(2, 3, 8, 8)
    graph, plan, pruned = _prune(model, x, 0.5)
    blocks = graph.group("a.weight:0")
    assert blocks.prunable and not blocks.exact and blocks.size == 4  # 12 channels in 3 blocks of 4
    assert graph.group("b.weight:0").exact and graph.group("c.weight:0").exact  # one channel per block
    assert pruned.gn.num_groups == 3 and pruned.gn.num_channels == pruned.gn.weight.shape[0] == 6
    assert pruned.per_channel.num_groups == pruned.per_channel.num_channels == 4
    assert pruned.instance.num_features == pruned.instance.running_mean.shape[0] == 3
    assert pruned(x).shape == model(x).shape


def test_group_norm_ratio_zero_is_identity() -> None:
    model = Norms().eval()
    x = torch.randn(2, 3, 8, 8)
    _, _, pruned = _prune(model, x, 0.0)
    torch.testing.assert_close(pruned(x), model(x))


@settings(max_examples=5, deadline=None)
@given(ratio=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_per_channel_group_norm_and_instance_norm_are_exact(ratio: float, seed: int) -> None:
    """Cut only b's and c's channels (per-channel norms): pruned == masked dense."""
    torch.manual_seed(seed)
    model = Norms().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    graph = DependencyGraph.trace(model, x)
    groups = [graph.group("b.weight:0"), graph.group("c.weight:0")]
    plan = allocate(graph, {g.id: random(g, model, seed=seed) for g in groups}, ratio)
    pruned = apply(model, graph, plan, example_inputs=x)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


def test_group_norm_without_weight_and_one_channel_per_group_follows_the_cut() -> None:
    # NOTE: as with a weight (refresh_group_norm): num_groups follows the width, here from the attribute
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(4, 4, affine=False), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.trace(model, x)
    group = graph.group("0.weight:0")
    assert group.prunable and group.exact
    plan = allocate(graph, {group.id: random(group, model, seed=0)}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert (pruned[1].num_groups, pruned[1].num_channels) == (2, 2)
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)


def test_a_per_channel_group_norm_at_a_literal_count_is_frozen() -> None:
    class Literal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(F.group_norm(self.a(x), 4))  # NOTE: no attribute holds the 4

    graph = DependencyGraph.trace(Literal().eval(), torch.randn(1, 3, 4, 4))
    group = graph.group("a.weight:0")
    assert not group.prunable and "GroupNorm" in group.reasons[0]


@pytest.mark.parametrize("norm", [nn.InstanceNorm1d(8), nn.InstanceNorm2d(8), nn.InstanceNorm3d(8),
                                  nn.BatchNorm2d(8, affine=False, track_running_stats=False),
                                  nn.GroupNorm(1, 8, affine=False), nn.GroupNorm(2, 8, affine=False)],
                         ids=["in1d", "in2d", "in3d", "bn-bare", "gn-1", "gn-2"])
def test_norms_without_tensors_record_the_cut_width(norm: nn.Module) -> None:
    # NOTE: no weight or statistics to slice, so no refresh runs: the width attribute joins the group
    d = 2 if isinstance(norm, (nn.GroupNorm, nn.BatchNorm2d)) else int(type(norm).__name__[-2])
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d]
    model = nn.Sequential(conv(3, 8, 1), norm, nn.ReLU(), conv(8, 2, 1)).eval()
    x = torch.randn(2, 3, *[5] * d, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, x)
    group = graph.group("0.weight:0")
    plan = allocate(graph, {group.id: random(group, model, seed=0)}, 0.5)
    pruned = apply(model, graph, plan, example_inputs=x)  # verified against the masked model
    width = vars(pruned[1]).get("num_features", vars(pruned[1]).get("num_channels"))
    assert pruned[0].out_channels == width == 4
    if isinstance(norm, nn.GroupNorm):
        assert pruned[1].num_groups == norm.num_groups and width % norm.num_groups == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NOTE: InstanceNorm warns when num_features differs from its input
        pruned(x)
