"""run_batch: every form of calibration batch reaches the model whole, its labels left out."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit.decompose.calibration import collect_grams, run_batch
from prunekit.decompose.layers import LayerIO
from prunekit.importance.stats import ModelInputs


class TwoInputs(nn.Module):
    """``forward(x, extra=None, *, mask=None)``: the sum of two linear layers' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.a(x) + (self.b(extra) if extra is not None else 0)
        return out * mask if mask is not None else out


X, EXTRA, Y = torch.ones(5, 3), torch.ones(5, 4), torch.zeros(5, dtype=torch.long)


@pytest.mark.parametrize("batch", [
    ModelInputs((X, EXTRA)), ((X, EXTRA), Y), ({"x": X, "extra": EXTRA}, Y), {"x": X, "extra": EXTRA},
], ids=["model_inputs", "tuple_and_labels", "mapping_and_labels", "mapping"])
def test_every_input_reaches_the_model(batch: Any) -> None:
    model = TwoInputs()
    torch.testing.assert_close(run_batch(model, batch), model(X, EXTRA))
    assert set(collect_grams(model, [batch], ["a", "b"])) == {"a", "b"}


def test_model_inputs_pass_the_keywords_forward_names() -> None:
    model = TwoInputs()
    batch = ModelInputs((X,), {"mask": torch.zeros(5, 1), "token_type_ids": torch.zeros(5)})
    assert run_batch(model, batch).abs().sum() == 0


def test_capture_calls_records_every_call_s_shapes() -> None:
    """A layer run on two input sizes: both calls' shapes, in order (MACs are summed over them)."""
    from prunekit.decompose.calibration import capture_calls, capture_io

    conv, unused = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(2, 2)
    model = nn.ModuleDict({"conv": conv, "unused": unused})
    model.forward = lambda x: conv(x).sum() + conv(x[..., ::2, ::2]).sum()  # type: ignore[method-assign]
    calls = capture_calls(model, torch.zeros(1, 2, 8, 8), ["conv", "unused"])
    assert calls == {"conv": (LayerIO((1, 2, 8, 8), (1, 4, 8, 8)), LayerIO((1, 2, 4, 4), (1, 4, 4, 4)))}
    assert capture_io(model, torch.zeros(1, 2, 8, 8), ["conv"]) == {"conv": (calls["conv"][-1], 2)}
