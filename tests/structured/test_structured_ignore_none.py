"""``ignore=None`` and ``freeze=None`` mean no module names, as ``options=None`` means the defaults;
anything else that is not a list of names is refused with the constraints table's message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.structured import StructuredPruner


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


X = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def test_none_means_no_ignored_or_frozen_modules() -> None:
    model = _model()
    pruner = StructuredPruner({"ratio": 0.5}, round_to=1, ignore=None, freeze=None)
    pruned = pruner.fit_transform(model, X)
    default = StructuredPruner({"ratio": 0.5}, round_to=1).fit(model, X)
    assert pruner.plan_ == default.plan_ and pruned[0].out_channels == 4
    assert pruner.get_params()["ignore"] == pruner.get_params()["freeze"] == []
    assert StructuredPruner(**pruner.get_params()) == pruner == default
    assert "ignore=[]" in repr(pruner)


@pytest.mark.parametrize("name", ["ignore", "freeze"])
def test_a_value_that_is_no_list_of_names_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' must be a list of module names; got 3"):
        StructuredPruner({"ratio": 0.5}, **{name: 3}).fit(_model(), X)
