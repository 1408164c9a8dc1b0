"""run_pipeline: stages as processes (gloo on CPU, localhost) give the single model's output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.decompose.partition import partition
from prunekit.decompose.pipelined import run_pipeline
from prunekit.errors import ConfigError


class TwoOutputs(nn.Module):
    """A skip connection crossing two cuts and a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x))
        y = self.c(torch.tanh(self.b(h)) + h)
        return y, x.sum(dim=1)


def test_two_process_pipeline_equals_the_single_model() -> None:
    model = models.create("resnet20").eval()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    part = partition(model, x, 2, repeats=1)
    run = run_pipeline(part, x, n_microbatches=2)
    assert run.world_size == 2 and run.n_microbatches == 2
    with torch.no_grad():
        want = model(x)
    assert run.output.shape == want.shape
    torch.testing.assert_close(run.output, want, rtol=1e-5, atol=1e-6)
    # the same micro-batches through the chained stages in this process: bit for bit
    assert torch.equal(run.output, torch.cat([part.run(chunk) for chunk in x.chunk(2)]))


@pytest.mark.slow
def test_three_process_pipeline_passes_skips_and_tuples() -> None:
    torch.manual_seed(0)
    model, x = TwoOutputs().eval(), torch.randn(6, 6)
    part = partition(model, x, 3, repeats=1)
    assert len(part.manifest["stages"][1]["inputs"]) >= 2, "the skip should cross the middle stage"
    run = run_pipeline(part, x, n_microbatches=3)
    with torch.no_grad():
        want = model(x)
    assert isinstance(run.output, tuple) and len(run.output) == 2
    for a, b in zip(run.output, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bad_micro_batches_and_single_stage_are_clear_errors() -> None:
    model, x = TwoOutputs().eval(), torch.randn(4, 6)
    part = partition(model, x, 2, repeats=1)
    with pytest.raises(ConfigError, match="4 rows does not split into 3 equal micro-batches"):
        run_pipeline(part, x, n_microbatches=3)
    with pytest.raises(ConfigError, match=r"'n_microbatches' must be an integer in \[1, 4\]"):
        run_pipeline(part, x, n_microbatches=8)
    with pytest.raises(ConfigError, match="needs at least 2 stages"):
        run_pipeline(partition(model, x, 1, repeats=1), x)
    with pytest.raises(ConfigError, match="world_size 3 does not match the partition's 2 stages"):
        run_pipeline(part, x, world_size=3)
