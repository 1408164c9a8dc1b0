"""How workflows find their model: prunekit.models.resolve when it exists, with the data's sizes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.errors import UnknownNameError
from prunekit.workflows.common import check_model_name, load_model


def test_a_spec_goes_through_models_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def resolve(spec: str, **kwargs: Any) -> nn.Module:
        calls.append((spec, kwargs))
        return nn.Linear(2, 2)

    monkeypatch.setattr(models, "resolve", resolve, raising=False)
    check_model_name("timm:resnet18")  # NOTE: specs are checked when resolved, not against the registry.
    net = load_model("timm:resnet18", num_classes=10, in_channels=1, weights="w.safetensors", task="classification")
    assert isinstance(net, nn.Linear)
    assert calls == [("timm:resnet18", {"task": "classification", "weights": "w.safetensors",
                                        "num_classes": 10, "in_channels": 1})]


def test_new_weights_come_from_the_seed_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = load_model("simple_cnn", seed=3), load_model("simple_cnn", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # NOTE: the global RNG is untouched.
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(UnknownNameError, match="Unknown model .resnt20."):
        check_model_name("resnt20")
