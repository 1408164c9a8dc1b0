"""``record_metrics``: numbers measured after a save are kept in the folder's manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _io_helpers import assert_same, pruned

import prunekit
from prunekit.errors import ConfigError
from prunekit.io import WEIGHTS_FILE, read_manifest, record_metrics
from prunekit.models import create


def test_record_metrics_replaces_only_the_metrics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    small, plan = pruned(create("simple_cnn", num_classes=10).eval(), x)
    folder = prunekit.save(small, tmp_path / "m", source="simple_cnn", transforms=[plan], metrics={"old": 1})
    weights, before = (folder / WEIGHTS_FILE).read_bytes(), read_manifest(folder)
    record_metrics(folder, {"profile": {"params": 12, "accuracy": 0.5}})
    after = read_manifest(folder)
    assert after.metrics == {"profile": {"params": 12, "accuracy": 0.5}}
    assert (after.transforms, after.layout, after.source) == (before.transforms, before.layout, before.source)
    assert (folder / WEIGHTS_FILE).read_bytes() == weights
    assert_same(prunekit.load(folder), small, x)
    with pytest.raises(ConfigError, match=r"save: metrics are not JSON data .* Pass numbers"):
        record_metrics(folder, {"bad": object()})
    assert read_manifest(folder).metrics == after.metrics
