"""Per-layer sparsity reports count the zeros a forward pass sees, masked or finalized."""

from __future__ import annotations

import torch
from _sparsity_models import conv_mlp

from prunekit.sparsity import Sparsifier, format_report, sparsity_report
from prunekit.sparsity.report import total_sparsity


def test_report_counts_zeros_per_layer_and_in_total() -> None:
    model = conv_mlp()
    with torch.no_grad():
        model.fc1.weight[:4] = 0.0
        model.fc2.weight.fill_(0.0)
    rows = sparsity_report(model)
    assert [(r.name, r.shape, r.numel, r.zeros) for r in rows] == [
        ("conv.weight", (8, 2, 2, 2), 64, 0), ("fc1.weight", (16, 32), 512, 128),
        ("fc2.weight", (4, 16), 64, 64)]
    assert total_sparsity(rows) == 192 / 640
    text = format_report(rows).splitlines()
    assert text[0].split() == ["layer", "shape", "params", "zeros", "sparsity"]
    assert text[2].split() == ["fc1.weight", "16x32", "512", "128", "25.00%"]
    assert text[-1].split() == ["total", "640", "192", "30.00%"]


def test_masked_and_finalized_models_report_the_same_zeros() -> None:
    sparsifier = Sparsifier(0.5).prepare(conv_mlp()).apply()
    masked = [(r.name, r.zeros) for r in sparsifier.sparsity_report()]
    model = sparsifier.finalize()
    assert masked == [(r.name, r.zeros) for r in sparsity_report(model, [n for n, _ in masked])]
    assert masked == [("conv.weight", 32), ("fc1.weight", 256)]
