"""Evaluation refuses what would give a wrong number: zero samples (an empty or drop_last loader),
metric dicts holding non-numbers; and Custom's ``inputs_fn`` names a batch's model inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tasks_fixtures import TokenEncoder, TokenLM, seeded
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data import Loaders
from prunekit.errors import DataError
from prunekit.graph import DependencyGraph
from prunekit.tasks import CausalLM, Classification, Custom, Embedding
from prunekit.tasks.base import Task
from prunekit.workflows.common import calibration_batches, example_of

_FIX = ("Fix: pass a non-empty loader (a DataLoader with drop_last=True yields nothing when the split has "
        "fewer samples than batch_size: use drop_last=False or a smaller batch_size).")


def _mse(model: nn.Module, batch: Any) -> torch.Tensor:
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def _mean_error(model: nn.Module, batches: Any) -> float:
    errors = [float((model(x) - y).abs().mean()) for x, y in batches]
    return sum(errors) / len(errors)  # NOTE: an empty loader would make this 0/0


def _drop_last() -> DataLoader:
    """Three samples, batches of four, drop_last: the loader yields nothing."""
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(3, 3, generator=g), torch.randint(0, 2, (3,), generator=g)),
                      batch_size=4, drop_last=True)


@pytest.mark.parametrize(("task", "model"), [
    (Classification(), nn.Linear(3, 2)),
    (CausalLM(), TokenLM()),
    (Embedding(teacher=TokenEncoder()), TokenEncoder()),
    (Custom(_mse), nn.Linear(3, 1)),
    (Custom(_mse, _mean_error, metric="error", higher_is_better=False), nn.Linear(3, 1)),
], ids=["classification", "causal_lm", "embedding", "custom", "custom_metric_fn"])
def test_no_batches_is_a_one_line_error(task: Task, model: nn.Module) -> None:
    with pytest.raises(DataError) as caught:
        task.evaluate(model, _drop_last())
    assert str(caught.value) == (f"{type(task).__name__}.evaluate: the evaluation data yielded no batches; "
                                 f"expected at least one sample. {_FIX}")


def test_no_predicted_token_is_a_one_line_error() -> None:
    ids, mask = torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(DataError) as caught:
        CausalLM().evaluate(TokenLM(), [{"input_ids": ids, "attention_mask": mask}])  # all padding
    assert str(caught.value) == ("CausalLM.evaluate: the evaluation data yielded 1 batch(es) with no sample to "
                                 f"score (empty, all padding, or every label -100: ignored); expected at least one sample. {_FIX}")


@pytest.mark.parametrize(("value", "got"), [([0.1, 0.2], "a list"), (torch.ones(3), "a tensor of shape (3,)")],
                         ids=["list", "vector"])
def test_a_metric_dict_holding_a_non_number_names_the_key(value: Any, got: str) -> None:
    task = Custom(_mse, lambda m, b: {"metric": torch.tensor(0.5), "per_class": value})
    with pytest.raises(DataError) as caught:
        task.evaluate(nn.Linear(3, 1), [(torch.ones(2, 3), torch.ones(2, 1))])
    assert str(caught.value) == (f"Custom: metric_fn returned {got} under 'per_class'; expected a number for "
                                 f"every key. Fix: return one number per key, e.g. per-class values under keys "
                                 f"of their own ('per_class_0', ...).")


class TwoInputs(nn.Module):
    """``forward(x1, x2)``: two inputs concatenated, then one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(8, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.a(x1)), torch.relu(self.b(x2))], dim=1))


def _batches(layout: str) -> list[Any]:
    g = torch.Generator().manual_seed(0)
    x1, x2, y, w = torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g), torch.randn(4, 1), torch.rand(4, 1)
    if layout == "dict":
        return [{"x1": x1, "x2": x2, "target": y, "weight": w}]
    return [((x1, x2), y, w)]


def _parts(batch: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    if isinstance(batch, dict):
        return (batch["x1"], batch["x2"]), batch["target"]
    return tuple(batch[0]), batch[1]  # type: ignore[return-value]


@pytest.mark.parametrize("layout", ["dict", "triple"])
def test_inputs_fn_names_the_model_inputs_for_tracing_and_distillation(layout: str) -> None:
    model, batches = seeded(TwoInputs), _batches(layout)
    task = Custom(lambda m, b: ((m(*_parts(b)[0]) - _parts(b)[1]) ** 2).mean(), inputs_fn=lambda b: _parts(b)[0])
    (x1, x2), _ = _parts(batches[0])
    inputs = task.inputs(batches[0])
    assert len(inputs) == 2 and inputs[0] is x1 and inputs[1] is x2 and task.keyword_inputs(batches[0]) == {}
    torch.testing.assert_close(task.outputs(model, batches[0]), model(x1, x2))
    splits = Loaders(layout, train=batches, val=batches)
    example = example_of(splits, task)
    assert [tuple(x.shape) for x in example] == [(1, 3), (1, 2)]
    assert DependencyGraph.trace(model, example).prunable  # NOTE: traced with both inputs
    assert [len(b) for b in calibration_batches(splits, 1, task=task)] == [2]


def test_a_triple_without_inputs_fn_is_a_one_line_error() -> None:
    with pytest.raises(DataError) as caught:
        Custom(_mse).inputs(_batches("triple")[0])
    assert str(caught.value) == ("Custom: the batch's (all items but the last) model input 0 is a tuple; expected "
                                 "tensors. Fix: pass Custom(..., inputs_fn=lambda batch: ...) returning the model's "
                                 "inputs, e.g. lambda b: tuple(b[0]) for ((x1, x2), y) batches.")
