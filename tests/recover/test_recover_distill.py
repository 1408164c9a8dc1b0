"""Distillation from the unpruned model and the sparsity regularisers, as training-loop callbacks."""

from __future__ import annotations

import pytest
import torch
from _recover_fixtures import quadrant_splits, state_equal, tiny_net
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.recover import BNScaleL1, Distiller, GroupLasso, TrainConfig, distillation_loss, train

CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, max_steps_per_epoch=6)


def test_distillation_loss_is_zero_for_equal_logits_and_scales_with_t_squared() -> None:
    logits = torch.randn(5, 4)
    assert float(distillation_loss(logits, logits, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(5, 4)
    p = torch.softmax(other, -1)
    kl = (p * (torch.log_softmax(other, -1) - torch.log_softmax(logits, -1))).sum(-1).mean()
    assert float(distillation_loss(logits, other, temperature=1.0)) == pytest.approx(float(kl), rel=1e-5)


def test_distiller_mixes_terms_and_never_touches_the_teacher() -> None:
    teacher, student = tiny_net(0), tiny_net(1)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    logits = student(x)
    ce = nn.functional.cross_entropy(logits, y)
    assert torch.equal(Distiller(teacher, alpha=0.0).on_loss(0, student, (x, y), logits, ce), ce)
    only_kd = Distiller(teacher, alpha=1.0, temperature=2.0).on_loss(0, student, (x, y), logits, ce)
    want = distillation_loss(logits, teacher.eval()(x), temperature=2.0)
    torch.testing.assert_close(only_kd, want)
    train(student, quadrant_splits(), CONFIG, progress=False, callbacks=[Distiller(teacher)])
    assert state_equal(teacher.state_dict(), frozen)


@pytest.mark.parametrize(("kwargs", "field"), [({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature")])
def test_distiller_rejects_bad_options(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Distiller(tiny_net(), **kwargs)


def test_bn_scale_l1_penalty_and_its_effect() -> None:
    net = tiny_net()
    assert float(BNScaleL1(1.0).penalty(net)) == pytest.approx(float(net.bn.weight.abs().sum()))
    base, slim = tiny_net(), tiny_net()
    train(base, quadrant_splits(), CONFIG, progress=False)
    train(slim, quadrant_splits(), CONFIG, progress=False, callbacks=[BNScaleL1(0.5)])
    assert slim.bn.weight.abs().sum() < base.bn.weight.abs().sum()
    with pytest.raises(ConfigError, match="BatchNorm"):
        BNScaleL1().penalty(nn.Linear(2, 2))


def test_group_lasso_sums_per_channel_norms_over_the_group() -> None:
    net = tiny_net()
    x = torch.randn(2, 1, 8, 8)
    graph = DependencyGraph.trace(net, x)
    group = next(g for g in graph.prunable if any(m.tensor == "conv.weight" for m in g.members))
    want = torch.zeros(group.size)
    want += net.conv.weight.detach().reshape(group.size, -1).square().sum(1)
    want += net.conv.bias.detach().square() + net.bn.weight.detach().square() + net.bn.bias.detach().square()
    want += net.fc.weight.detach().reshape(4, group.size, -1).square().sum(dim=(0, 2))
    lasso = GroupLasso(graph, 1.0)
    assert float(lasso.penalty(net)) == pytest.approx(float(want.sqrt().sum()), rel=1e-5)
    before = float(lasso.penalty(net))
    train(net, quadrant_splits(), CONFIG, progress=False, callbacks=[GroupLasso(graph, 0.2)])
    assert float(lasso.penalty(net)) < before
