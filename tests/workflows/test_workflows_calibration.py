"""What data-driven methods run a model on (``calibration_batches``): every input a batch gives,
its attention mask included, and never its labels."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data import Loaders
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import collect
from prunekit.structured import StructuredPruner
from prunekit.workflows.common import build, calibration_batches, example_of, task_of
from prunekit.workflows.decompose import decompose_model
from prunekit.workflows.prune import prune_model


class ImageAndTable(nn.Module):
    """``forward(img, tab)``: a conv branch and an MLP branch, concatenated into 4 classes; without
    ``tab`` (where ``optional``) the table branch is skipped."""

    def __init__(self, optional: bool = False) -> None:
        super().__init__()
        self.optional = optional
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.t1, self.t2 = nn.Linear(5, 16), nn.Linear(16, 8)
        self.fc = nn.Linear(16, 4)

    def forward(self, img: torch.Tensor, tab: torch.Tensor | None = None) -> torch.Tensor:
        a = F.adaptive_avg_pool2d(F.relu(self.c2(F.relu(self.c1(img)))), 1).flatten(1)
        if tab is None:
            assert self.optional, "tab is required"
            b = torch.zeros(len(img), 8)
        else:
            b = F.relu(self.t2(F.relu(self.t1(tab))))
        return self.fc(torch.cat([a, b], 1))


def _image_and_table() -> Loaders:
    g = torch.Generator().manual_seed(0)
    img, tab, y = torch.randn(32, 3, 8, 8, generator=g), torch.randn(32, 5, generator=g), torch.randint(0, 4, (32,), generator=g)
    batches = [(img[i:i + 8], tab[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    return Loaders("image_and_table", train=batches, val=batches, test=batches)


def _seeded(factory: Any, *args: Any) -> nn.Module:
    torch.manual_seed(0)
    return factory(*args)


def test_activation_importance_runs_a_model_of_two_inputs() -> None:
    data, net = _image_and_table(), _seeded(ImageAndTable)
    pruner = StructuredPruner({"ratio": 0.5}, importance="activation", round_to=1)
    pruned, *_ = prune_model(net, data, pruner, finetune_epochs=0)
    assert pruned.c1.out_channels == 4 and pruned.t1.out_features == 8


def test_an_optional_second_input_is_not_left_out() -> None:
    """Read as (inputs, labels), (img, tab) once ran the model on img alone, without a word."""
    data, net = _image_and_table(), _seeded(ImageAndTable, True)
    task = task_of(data)
    graph = DependencyGraph.trace(net, example_of(data, task))
    stats = collect(net, calibration_batches(data, 2, task=task), graph.prunable, needs=("activations",))
    assert ("t1", "output") in stats.activation_mean and stats.batches == 2


def test_asvd_whitens_with_every_input() -> None:
    data, net = _image_and_table(), _seeded(ImageAndTable)
    result = decompose_model(net, data, method="asvd", energy=0.9, include=["t1"], calibration_batches=2)
    x = next(iter(data.test))
    assert result.model(x[0], x[1]).shape == (8, 4)


class MaskedTokens(nn.Module):
    """Token classifier whose hidden activations are zero at padding (``attention_mask == 0``)."""

    def __init__(self, required: bool = False) -> None:
        super().__init__()
        self.required = required
        self.e, self.l1, self.l2, self.fc = nn.Embedding(20, 16), nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        assert attention_mask is not None or not self.required, "attention_mask is required"
        mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1).float()
        h = F.relu(self.l2(self.l1(self.e(input_ids)) * mask)) * mask
        return self.fc(h.sum(1) / mask.sum(1).clamp(min=1))


def _padded_tokens() -> Loaders:
    """Hugging Face style batches: 9 tokens, the last 3 padding."""
    g = torch.Generator().manual_seed(0)
    ids, mask, y = torch.randint(1, 20, (16, 9), generator=g), torch.ones(16, 9, dtype=torch.long), torch.randint(0, 3, (16,), generator=g)
    mask[:, 6:] = 0
    batches = [{"input_ids": ids[i:i + 8], "attention_mask": mask[i:i + 8], "labels": y[i:i + 8]} for i in (0, 8)]
    return Loaders("tokens", train=batches, val=batches, test=batches)


def test_activation_importance_sees_the_attention_mask() -> None:
    data, net = _padded_tokens(), _seeded(MaskedTokens)
    task = task_of(data)
    graph = DependencyGraph.trace(net, example_of(data, task))
    stats = collect(net, calibration_batches(data, 2, task=task), graph.prunable, needs=("activations",))
    # NOTE: l2 reads l1's outputs masked: exact zeros at the 3 padded positions of 9, and only there
    torch.testing.assert_close(stats.apoz[("l2", "input")], torch.full((32,), 3 / 9))


def test_a_required_mask_left_out_of_the_example_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        build(_seeded(MaskedTokens, True), _padded_tokens())
    assert str(caught.value) == (
        "MaskedTokens.forward needs attention_mask, which the batches pass by keyword, but prunekit traces, "
        "profiles and exports a model on the batches' first input alone (input_ids). Give attention_mask a "
        "default in forward (attention_mask=None), or yield (inputs..., labels) tuples so that every input "
        "is positional.")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_sparsity_runs_a_model_of_two_inputs(method: str) -> None:
    from prunekit.workflows.sparsify import sparsify_model

    data, net = _image_and_table(), _seeded(ImageAndTable)
    sparse, _, _ = sparsify_model(net, data, method=method, sparsity=0.5)
    assert float((sparse.t2.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.05)  # the table branch ran
