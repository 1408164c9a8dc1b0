"""Each importance on a hand-made case whose answer is known."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.importance import activation, apoz, bn_scale, collect, fpgm, l1, l2, lsh, taylor
from prunekit.importance.lsh import buckets

from _importance_models import build


def _group(graph, tensor: str):  # type: ignore[no-untyped-def]
    return next(g for g in graph.prunable if any(m.tensor == tensor and m.role == "producer" for m in g.members))


@torch.no_grad()
def test_an_all_zero_channel_scores_lowest_by_magnitude_and_taylor() -> None:
    model, graph, batches = build("convnet")
    group = _group(graph, "conv2.weight")
    model.conv2.weight[2] = 0.0
    model.conv2.bias[2] = 0.0
    stats = collect(model, batches, graph.prunable)
    # NOTE: Taylor sees the zero filter through the data: the column reading it gets no gradient.
    assert taylor(group, model, stats).argmin() == 2
    assert taylor(group, model, stats)[2] == 0.0
    model.fc.weight[:, 2] = 0.0
    for importance in (l1, l2):
        scores = importance(group, model)
        assert scores[2] == 0.0 and (scores[torch.arange(4) != 2] > 0).all()


@torch.no_grad()
def test_aggregate_reduces_per_member_scores() -> None:
    model, graph, _ = build("mlp")
    group = _group(graph, "fc1.weight")
    members = [model.fc1.weight.abs().sum(1), model.fc1.bias.abs(), model.fc2.weight.abs().sum(0)]
    torch.testing.assert_close(l1(group, model), sum(members))
    torch.testing.assert_close(l1(group, model, aggregate="max"), torch.stack(members).amax(0))
    torch.testing.assert_close(l1(group, model, aggregate="mean"), sum(members) / 3)
    squares = [model.fc1.weight.pow(2).sum(1), model.fc1.bias.pow(2), model.fc2.weight.pow(2).sum(0)]
    torch.testing.assert_close(l2(group, model), sum(squares).sqrt())
    torch.testing.assert_close(l2(group, model, roles=("producer",), normalize="sum"),
                               (sum(squares[:2]).sqrt() / sum(squares[:2]).sqrt().sum()))


def test_taylor_equals_the_first_order_term_computed_by_hand() -> None:
    model, graph, batches = build("mlp")
    group = _group(graph, "fc1.weight")
    ref = copy.deepcopy(model).eval()
    for x, y in batches:
        F.cross_entropy(ref(x), y).backward()  # NOTE: grads accumulate: their mean is sum / 3
    wg = {n: (p * p.grad / len(batches)).detach() for n, p in ref.named_parameters()}
    want = wg["fc1.weight"].sum(1).abs() + wg["fc1.bias"].abs() + wg["fc2.weight"].sum(0).abs()
    torch.testing.assert_close(taylor(group, model, collect(model, batches, graph.prunable)), want)


@torch.no_grad()
def test_magnitude_counts_a_norms_scale_but_not_its_bias_or_statistics() -> None:
    model, graph, _ = build("convnet")
    group = _group(graph, "conv1.weight")
    model.bn1.weight.copy_(torch.linspace(0.1, 3.0, 6))
    squares = (model.conv1.weight.pow(2).sum((1, 2, 3)) + model.conv1.bias.pow(2) + model.bn1.weight.pow(2)
               + model.conv2.weight.pow(2).sum((0, 2, 3)))
    torch.testing.assert_close(l2(group, model), squares.sqrt())
    before = l1(group, model)
    model.bn1.bias.fill_(5.0)
    model.bn1.running_var.fill_(100.0)
    model.bn1.running_mean.fill_(-7.0)
    torch.testing.assert_close(l1(group, model), before)  # bias and running statistics do not count
    torch.testing.assert_close(l2(group, model, roles=("producer", "consumer")),
                               (squares - model.bn1.weight.pow(2)).sqrt())  # the scale only via 'passive'


@torch.no_grad()
def test_bn_scale_is_abs_gamma_summed_over_the_groups_batchnorms() -> None:
    model, graph, _ = build("residual")
    model.bn.weight[0] = -3.0
    group = _group(graph, "stem.weight")
    torch.testing.assert_close(bn_scale(group, model), model.bn.weight.abs() + model.bn_b.weight.abs())
    torch.testing.assert_close(bn_scale(group, model, aggregate="max"),
                               torch.maximum(model.bn.weight.abs(), model.bn_b.weight.abs()))


def test_bn_scale_without_batchnorm_raises_or_falls_back() -> None:
    model, graph, _ = build("convnet")
    group = _group(graph, "conv2.weight")
    with pytest.raises(ConfigError, match=r"group 'conv2.weight:0' .* has no BatchNorm.*Pass fallback='l1'"):
        bn_scale(group, model, fallback=None)
    torch.testing.assert_close(bn_scale(group, model), l1(group, model))
    torch.testing.assert_close(bn_scale(group, model, fallback="l2", normalize="mean"),
                               l2(group, model, normalize="mean"))


@torch.no_grad()
def test_fpgm_ranks_the_filter_at_the_geometric_median_lowest() -> None:
    model, graph, _ = build("mlp")
    group = _group(graph, "fc1.weight")
    eye = torch.eye(8)
    # NOTE: rows ±e1..±e4 and e5 around a zero row: the zero row is the geometric median.
    model.fc1.weight.copy_(torch.stack([torch.zeros(8), *eye[:4], *(-eye[:4]), eye[4]]))
    scores = fpgm(group, model)
    assert scores.argmin() == 0
    assert scores[0] == pytest.approx(9.0)


@torch.no_grad()
def test_lsh_scores_a_near_duplicate_below_every_distinct_filter() -> None:
    model, graph, _ = build("mlp")
    group = _group(graph, "fc1.weight")
    model.fc1.weight[7] = 2.0 * model.fc1.weight[3]
    model.fc1.bias[7] = 2.0 * model.fc1.bias[3]
    norms = torch.cat([model.fc1.weight, model.fc1.bias[:, None]], dim=1).norm(dim=1)
    scores = lsh(group, model)
    assert scores.argmin() == 3
    assert (scores[torch.arange(10) != 3] > scores[3]).all()
    torch.testing.assert_close(scores[7], norms[7])
    torch.testing.assert_close(lsh(group, model, seed=5), lsh(group, model, seed=5))


def test_lsh_buckets_depend_on_the_seed_only() -> None:
    filters = torch.randn(64, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(buckets(filters, bits=4, seed=1), buckets(filters, bits=4, seed=1))
    assert not torch.equal(buckets(filters, bits=4, seed=1), buckets(filters, bits=4, seed=2))
    assert torch.equal(buckets(filters, bits=4), buckets(3.0 * filters, bits=4))  # NOTE: angle only


@torch.no_grad()
def test_a_channel_dead_after_relu_has_apoz_one_and_scores_lowest() -> None:
    model, graph, batches = build("convnet")
    group = _group(graph, "conv1.weight")
    model.bn1.bias[1] = -100.0
    stats = collect(model, batches, graph.prunable, needs=("activations",))
    assert stats.apoz[("conv2", "input")][1] == 1.0
    for importance in (apoz, activation):
        scores = importance(group, model, stats)
        assert scores[1] == 0.0 and (scores[torch.arange(6) != 1] > 0).all()


@torch.no_grad()
def test_activation_is_the_mean_abs_input_of_the_consumer() -> None:
    model, graph, batches = build("mlp")
    group = _group(graph, "fc1.weight")
    hidden = torch.cat([F.relu(model.fc1(x)) for x, _ in batches])
    stats = collect(model, batches, graph.prunable, needs=("activations",))
    torch.testing.assert_close(activation(group, model, stats), hidden.abs().mean(0))
    torch.testing.assert_close(apoz(group, model, stats), (hidden != 0).float().mean(0))
    # NOTE: the producer's output is read before the ReLU.
    pre = torch.cat([model.fc1(x) for x, _ in batches])
    torch.testing.assert_close(activation(group, model, stats, roles=("producer",)), pre.abs().mean(0))
