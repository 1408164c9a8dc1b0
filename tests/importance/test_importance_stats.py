"""collect(): the only code that runs batches; it leaves the model as it was and is deterministic."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
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
    with pytest.raises(ConfigError, match="must be a tensor, a dict of the model's keyword inputs"):
        collect(model, [3], graph.prunable)
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


class PerPixel(nn.Module):
    """Per-pixel classes of 8x8 images: logits [B, 8, 8, 8] (classes == width, so only the class
    axis tells a right loss from a wrong one), or {"logits": ...} as Hugging Face returns."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.c1, self.out = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 1)

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.out(F.relu(self.c1(x)))
        return {"logits": logits} if self.as_dict else logits


def _per_pixel(as_dict: bool = False) -> tuple[nn.Module, DependencyGraph, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model, g = PerPixel(as_dict), torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 8, (4, 8, 8), generator=g))]
    return model, DependencyGraph.trace(model, batches[0][0]), batches


@pytest.mark.parametrize("as_dict", [False, True], ids=["tensor", "dict"])
def test_the_default_loss_takes_the_class_axis_of_per_pixel_logits(as_dict: bool) -> None:
    """As tasks.Classification scores [B, C, H, W] logits against [B, H, W] labels: class axis 1,
    the logits of a {"logits": ...} output."""
    model, graph, batches = _per_pixel(as_dict)
    stats = collect(model, batches, graph.prunable, needs=("gradients",))
    right = collect(_per_pixel()[0], batches, graph.prunable, needs=("gradients",), loss_fn=F.cross_entropy)
    for name in right.weight_grad:
        torch.testing.assert_close(stats.weight_grad[name], right.weight_grad[name])


def test_the_default_loss_of_token_logits_takes_the_last_axis() -> None:
    """[B, T, V] logits against [B, T] labels (a language model's): the vocabulary is the last axis."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 6), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 11))
    ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.trace(model, ids)
    stats = collect(model, [(ids, ids)], graph.prunable, needs=("gradients",))
    right = collect(model, [(ids, ids)], graph.prunable, needs=("gradients",),
                    loss_fn=lambda out, y: F.cross_entropy(out.reshape(-1, 11), y.reshape(-1)))
    assert all(torch.equal(stats.weight_grad[k], right.weight_grad[k]) for k in right.weight_grad)


def test_an_output_without_logits_asks_for_a_loss() -> None:
    model, graph, batches = build("mlp")
    wrapped = nn.Sequential(model, _ToSet())
    with pytest.raises(ConfigError, match="returned set without a tensor.*Pass loss_fn="):
        collect(wrapped, batches, graph.prunable, needs=("gradients",))


class _ToSet(nn.Module):
    def forward(self, x: torch.Tensor) -> Any:
        return {x}


class TwoInputs(nn.Module):
    """``forward(x, extra, *, scale=None)``: fc1 reads ``x``, fc2 reads ``extra``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(8, 10), nn.Linear(4, 6), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, extra: torch.Tensor, *, scale: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([F.relu(self.fc1(x)), F.relu(self.fc2(extra))], 1)
        return self.head(h * (scale if scale is not None else 1.0))


def test_model_inputs_reach_the_model_whole() -> None:
    """Positional inputs without labels, and keyword inputs (those forward names; others are left out)."""
    from prunekit.importance.stats import ModelInputs

    torch.manual_seed(0)
    model, g = TwoInputs(), torch.Generator().manual_seed(0)
    x, extra, scale = torch.randn(4, 8, generator=g), torch.randn(4, 4, generator=g), torch.zeros(4, 1)
    graph = DependencyGraph.trace(model, (x, extra))
    batch = ModelInputs((x, extra), {"scale": scale, "token_type_ids": torch.zeros(4)})
    assert tuple(batch) == (x, extra) and "scale" in repr(batch)  # NOTE: it iterates as the positional inputs
    stats = collect(model, [batch], graph.prunable, needs=("gradients",), loss_fn=lambda out: out.sum())
    assert stats.weight_grad["fc1.weight"].abs().sum() == 0  # NOTE: scale=0 reached forward
    stats = collect(model, [ModelInputs((x, extra))], graph.prunable, needs=("activations",))
    assert {("fc1", "output"), ("fc2", "output")} <= set(stats.activation_mean)
