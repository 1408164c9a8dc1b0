"""Iterative pruning: k steps along a geometric schedule, re-scoring and fine-tuning in between."""

from __future__ import annotations

import pytest
import torch

from prunekit import models
from prunekit.measure import count_macs
from prunekit.structured import prune_iteratively
from prunekit.structured.iterative import schedule


def test_schedule_is_geometric_and_ends_at_the_target() -> None:
    assert schedule(0.25, 2) == pytest.approx([0.5, 0.25])
    assert schedule(0.5, 1) == [0.5]


@pytest.mark.parametrize("target", [{"macs": 0.4}, {"ratio": 0.5}])
def test_reaches_the_target_in_k_steps_and_fine_tunes_between(target: dict) -> None:
    torch.manual_seed(0)
    model, x = models.create("lenet5"), models.example_input("lenet5")
    dense = count_macs(model, x)
    calls: list[int] = []

    def finetune(m: torch.nn.Module, step: int) -> torch.nn.Module:
        calls.append(step)
        return m

    pruned, records = prune_iteratively(model, x, target, steps=3, importance="l1", finetune=finetune)
    assert [r["step"] for r in records] == [0, 1, 2] and calls == [0, 1]
    assert model.conv1.out_channels == 6  # the input model is untouched
    macs = [r["achieved"]["macs"] for r in records]
    assert macs == sorted(macs, reverse=True)  # every step makes it smaller
    if "macs" in target:
        assert count_macs(pruned, x) / dense == pytest.approx(macs[-1])
        assert 0.3 <= macs[-1] <= 0.4
    else:
        assert records[-1]["achieved"]["ratio"] == pytest.approx(0.5, abs=0.08)
    assert pruned(x).shape == (1, 10)
