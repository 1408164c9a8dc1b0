"""A ratio target in several steps ends where one step does (small groups cut too, the ratio reported
truly), and calibration batches given as dicts of keyword inputs (a tokenizer's output) run as
``model(**batch)``, alone or as the inputs of an ``(inputs, labels)`` pair."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import collect
from prunekit.structured import StructuredPruner, Target, prune_iteratively
from prunekit.structured.iterative import step_widths


def _narrow() -> nn.Module:
    """A 2-wide hidden layer (as few channels as a layer's key/value heads) beside a 16-wide one."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))


def _widths(model: nn.Module) -> tuple[int, int]:
    return model[0].out_features, model[2].out_features


def test_step_widths_shrink_every_group_geometrically_to_its_final_width() -> None:
    assert step_widths({"a": 2, "b": 8}, {"a": 3, "b": 16}, 2) == [{"a": 2, "b": 11}, {"a": 2, "b": 8}]
    assert step_widths({"a": 1}, {"a": 4}, 1) == [{"a": 1}]


def test_a_ratio_in_steps_cuts_small_groups_and_reports_the_ratio_reached() -> None:
    model, x = _narrow(), torch.randn(2, 8)
    one = StructuredPruner(Target(ratio=0.5), round_to=1, importance="l1")
    two = StructuredPruner(Target(ratio=0.5), round_to=1, importance="l1", steps=2)
    small_one, small_two = one.fit_transform(model, x), two.fit_transform(model, x)
    assert _widths(small_one) == (1, 8)  # every group loses half
    assert _widths(small_two) == _widths(small_one)  # NOTE: was (2, 8): each step floored 2 x 0.3 to nothing
    assert two.achieved_["ratio"] == 0.5
    assert two.achieved_["channels_removed"] == pytest.approx(one.achieved_["channels_removed"])
    assert two.achieved_["params"] == pytest.approx(one.achieved_["params"])
    _, records = prune_iteratively(model, x, {"ratio": 0.5}, steps=2, round_to=1, importance="l1")
    assert [r["achieved"]["ratio"] for r in records] == [pytest.approx(1 - 0.5**0.5), 0.5]
    assert [r["achieved"]["channels_removed"] for r in records] == pytest.approx([1 - 12 / 18, 1 - 9 / 18])


class _KeywordNet(nn.Module):
    """A model called with keyword inputs like a Hugging Face one: a dict out with ``loss`` given ``labels``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.fc1, self.fc2 = nn.Embedding(10, 8), nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        h = self.embed(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        logits = self.fc2(torch.relu(self.fc1(h))).mean(1)
        return (
            {"logits": logits}
            if labels is None
            else {"logits": logits, "loss": F.cross_entropy(logits, labels)}
        )


class _NoLossNet(_KeywordNet):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:  # type: ignore[override]
        return super().forward(input_ids, attention_mask)


def _batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    ids = torch.randint(0, 10, (4, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[:, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 2, 3])


def _grads(model: nn.Module, batches: list[Any]) -> dict[str, torch.Tensor]:
    graph = DependencyGraph.trace(model, torch.zeros(1, 6, dtype=torch.long))
    return dict(collect(model, batches, graph.prunable, needs=("gradients",)).weight_grad)


def test_dict_batches_run_as_keyword_inputs_alone_or_paired_with_labels() -> None:
    model = _KeywordNet()
    inputs, labels = _batch()
    graph = DependencyGraph.trace(model, torch.zeros(1, 6, dtype=torch.long))
    masked = collect(model, [inputs], graph.prunable, needs=("activations",))
    positional = collect(
        model, [(inputs["input_ids"], inputs["attention_mask"])], graph.prunable, needs=("activations",)
    )  # NOTE: a pair: runs model(ids) alone, no mask
    assert not torch.equal(
        masked.activation_mean[("fc1", "output")], positional.activation_mean[("fc1", "output")]
    )
    want = _grads(model, [((inputs["input_ids"], inputs["attention_mask"]), labels)])
    paired = _grads(model, [(inputs, labels)])  # NOTE: was a TypeError deep inside the model
    own = _grads(model, [{**inputs, "labels": labels}])  # NOTE: the loss the model returns
    assert want.keys() == paired.keys() == own.keys() and "fc1.weight" in want
    assert all(torch.allclose(paired[k], want[k]) and torch.allclose(own[k], want[k]) for k in want)
    pruner = StructuredPruner(Target(ratio=0.5), importance="taylor", round_to=1)
    assert pruner.fit(model, inputs, [(inputs, labels)]).plan_.keep


def test_dict_batches_without_a_loss_to_take_say_what_to_pass() -> None:
    inputs, labels = _batch()
    with pytest.raises(ConfigError, match=r"no labels.*\(inputs, labels\) pairs.*dict of keyword inputs"):
        _grads(_KeywordNet(), [inputs])
    with pytest.raises(ConfigError, match=r"does not take 'labels'.*Pass \(inputs, labels\) pairs"):
        _grads(_NoLossNet(), [{**inputs, "labels": labels}])
    with pytest.raises(ConfigError, match=r"must be a tensor, a dict of the model's keyword inputs"):
        _grads(_KeywordNet(), [3])
    with pytest.raises(
        ConfigError, match=r"none of a dict calibration batch's keys \['ids'\] names an input"
    ):
        _grads(_KeywordNet(), [({"ids": inputs["input_ids"]}, labels)])
