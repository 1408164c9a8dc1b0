"""collect(): the only code that runs batches; it leaves the model as it was and is deterministic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.importance import Stats, collect

from _importance_models import build


def test_collect_is_deterministic_and_keys_by_name() -> None:
    model, graph, batches = build("residual")
    a = collect(model, batches, graph.prunable)
    b = collect(model, batches, graph.prunable)
    assert isinstance(a, Stats) and a.batches == 3
    assert a.weight_grad.keys() == b.weight_grad.keys() and "stem.weight" in a.weight_grad
    assert "bn.running_mean" not in a.weight_grad  # NOTE: buffers have no gradient
    assert all(torch.equal(a.weight_grad[k], b.weight_grad[k]) for k in a.weight_grad)
    assert {("stem", "output"), ("a", "input"), ("head", "input")} <= set(a.activation_mean)
    assert all(torch.equal(a.apoz[k], b.apoz[k]) for k in a.apoz)
    with pytest.raises(TypeError):
        a.weight_grad["x"] = torch.zeros(1)  # type: ignore[index]


def test_collect_accepts_tensors_and_tuples_and_limits_batches() -> None:
    model, graph, batches = build("mlp")
    inputs_only = [x for x, _ in batches]
    stats = collect(model, inputs_only, graph.prunable, needs=("activations",), max_batches=2)
    assert stats.batches == 2 and not stats.weight_grad
    tupled = collect(model, [((x,), y) for x, y in batches], graph.prunable, needs=("gradients",))
    plain = collect(model, batches, graph.prunable, needs=("gradients",))
    assert all(torch.equal(tupled.weight_grad[k], plain.weight_grad[k]) for k in plain.weight_grad)


def test_custom_loss_without_labels() -> None:
    model, graph, batches = build("mlp")
    stats = collect(model, (x for x, _ in batches), graph.prunable, needs=("gradients",),
                    loss_fn=lambda out: out.pow(2).mean())
    assert stats.weight_grad["fc1.weight"].abs().sum() > 0


def test_collect_errors_say_what_to_do() -> None:
    model, graph, batches = build("mlp")
    with pytest.raises(ConfigError, match="no labels.*loss_fn"):
        collect(model, [x for x, _ in batches], graph.prunable, needs=("gradients",))
    with pytest.raises(ConfigError, match="empty.*at least one batch"):
        collect(model, [], graph.prunable)
    with pytest.raises(ConfigError, match="Did you mean 'gradients'"):
        collect(model, batches, graph.prunable, needs=("gradient",))
    with pytest.raises(ConfigError, match="tensor or an .inputs, labels. tuple; got dict"):
        collect(model, [{"x": batches[0][0]}], graph.prunable)
    with pytest.raises(ConfigError, match="max_batches"):
        collect(model, batches, graph.prunable, max_batches=0)


def test_a_failing_batch_still_leaves_the_model_clean() -> None:
    model, graph, batches = build("convnet")
    model.train()
    with pytest.raises(RuntimeError):
        collect(model, [torch.randn(2, 5, 8, 8)], graph.prunable)  # wrong channel count
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_gradients_are_taken_in_eval_mode() -> None:
    model, graph, batches = build("residual")
    model.train()
    stats = collect(model, batches[:1], graph.prunable, needs=("gradients",))
    ref = build("residual")[0].eval()
    x, y = batches[0]
    F.cross_entropy(ref(x), y).backward()
    torch.testing.assert_close(stats.weight_grad["head.weight"], ref.head.weight * ref.head.weight.grad)
