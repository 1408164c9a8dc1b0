"""Patterns: exact counts for unstructured, N non-zeros in every group of M, whole blocks."""

from __future__ import annotations

import pytest
import torch
from _sparsity_models import conv_mlp

from prunekit.errors import ConfigError
from prunekit.sparsity import Pattern, Sparsifier, block_mask, nm_mask, topk_mask
from prunekit.sparsity.masks import masks


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1).reshape(weight.shape[0], -1, m)


@pytest.mark.parametrize(("spec", "n", "m"), [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_nm_keeps_exactly_n_in_every_group_of_m_along_the_input_dim(spec: str, n: int, m: int) -> None:
    model = conv_mlp()
    sparsifier = Sparsifier(None, pattern=spec).prepare(model).apply()
    for name in sparsifier.targets_:
        weight = model.get_submodule(name.rpartition(".")[0]).weight
        nonzero = (_groups(weight, m) != 0).sum(-1)
        assert torch.equal(nonzero, torch.full_like(nonzero, n)), name
    report = {r.name: r.sparsity for r in sparsifier.sparsity_report()}
    assert report == {"conv.weight": 1 - n / m, "fc1.weight": 1 - n / m}


def test_nm_mask_keeps_the_largest_of_each_group() -> None:
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[True, False, True, False, False, True, True, False]]


def test_topk_keeps_the_exact_count_and_breaks_ties_by_position() -> None:
    scores = torch.tensor([1.0, 1.0, 1.0, 5.0, 1.0, 0.5])
    assert topk_mask(scores, 0.5).tolist() == [True, True, False, True, False, False]
    assert int(topk_mask(torch.randn(10, 7), 0.9).sum()) == 7


def test_block_mask_zeroes_whole_blocks_by_summed_score() -> None:
    scores = torch.arange(32, dtype=torch.float32).reshape(4, 8)
    mask = block_mask(scores, 0.5, (1, 4))
    tiles = mask.reshape(4, 2, 4)
    assert torch.all(tiles.all(-1) | ~tiles.any(-1))  # every 1x4 tile kept or dropped whole
    assert mask[:2].sum() == 0 and mask[2:].all()  # the larger rows win
    model = conv_mlp()
    Sparsifier(0.5, pattern="4x4", include=["fc1"]).prepare(model).apply()
    blocks = model.fc1.weight.reshape(4, 4, 8, 4).permute(0, 2, 1, 3).reshape(32, 16)
    assert torch.all((blocks != 0).all(-1) | (blocks == 0).all(-1))
    assert int((blocks == 0).all(-1).sum()) == 16


@pytest.mark.parametrize(("spec", "words"), [
    ("3:2", "needs 0 < N < M"), ("1x1", "at least 2 entries"), ("banana", "not understood"),
])
def test_bad_pattern_specs_say_what_is_accepted(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Pattern.parse(spec)


def test_a_layer_that_cannot_hold_the_pattern_is_named_and_nothing_is_masked() -> None:
    model = conv_mlp()  # fc2 has 16 inputs: fine for 2:4; its 4 outputs do not divide into 8x1 blocks
    with pytest.raises(ConfigError, match=r"layer 'fc2.weight' has \[out, in\] = \[4, 16\].*Leave it out"):
        Sparsifier(0.5, pattern="8x1", include=["fc1", "fc2"]).prepare(model)
    assert masks(model) == {}
    with pytest.raises(ConfigError, match="not a multiple of 3"):
        Sparsifier(None, pattern="1:3", include=["fc1"]).prepare(model)
