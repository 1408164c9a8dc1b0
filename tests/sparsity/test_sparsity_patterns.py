"""Patterns: exact counts for unstructured, N non-zeros in every group of M, whole blocks."""

from __future__ import annotations

import pytest
import torch
from _sparsity_models import conv_mlp
from torch import nn

from prunekit.errors import ConfigError
from prunekit.sparsity import Pattern, Sparsifier, block_mask, nm_mask, topk_mask
from prunekit.sparsity.masks import masks


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1).reshape(weight.shape[0], -1, m)


def _conv_linear() -> nn.Sequential:
    """conv(8 -> 8, 3x3) -> flatten -> linear(8 -> 16) -> linear(16 -> 4), for 3x3 inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 16), nn.Linear(16, 4))


def _channel_groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros in every group of ``m`` consecutive input channels at each (out, kh, kw)."""
    return (weight.permute(0, 2, 3, 1).reshape(*weight.shape[:1], *weight.shape[2:], -1, m) != 0).sum(-1)


@pytest.mark.parametrize(("spec", "n", "m"), [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_nm_keeps_exactly_n_in_every_group_of_m_along_the_input_dim(spec: str, n: int, m: int) -> None:
    model = _conv_linear()
    sparsifier = Sparsifier(None, pattern=spec).prepare(model).apply()
    assert sparsifier.targets_ == ["0.weight", "2.weight"]
    # A conv groups M consecutive input channels at each kernel position (sparse conv kernels need that).
    conv = _channel_groups(model[0].weight, m)
    assert torch.equal(conv, torch.full_like(conv, n))
    linear = (_groups(model[2].weight, m) != 0).sum(-1)  # a Linear groups along in_features, as before
    assert torch.equal(linear, torch.full_like(linear, n))
    report = {r.name: r.sparsity for r in sparsifier.sparsity_report()}
    assert report == {"0.weight": 1 - n / m, "2.weight": 1 - n / m}


def test_nm_on_a_conv_needs_input_channels_divisible_by_m() -> None:
    model = conv_mlp()  # conv has 2 input channels (2 * 2 * 2 = 8 inputs per output)
    before = model.conv.weight.clone()
    with pytest.raises(ConfigError, match=r"layer 'conv.weight' \(8, 2, 2, 2\) has 2 input channels, not a "
                                          r"multiple of 4: the 2:4 pattern groups 4 consecutive input channels"):
        Sparsifier(None, pattern="2:4").prepare(model)
    assert torch.equal(model.conv.weight, before) and not masks(model)


def test_nm_mask_on_a_conv_weight_groups_input_channels() -> None:
    scores = torch.arange(2 * 8 * 2 * 2, dtype=torch.float32).reshape(2, 8, 2, 2)
    kept = nm_mask(scores, 2, 4)
    # Scores grow with the channel, so channels 2, 3 and 6, 7 win at every kernel position.
    assert kept[:, [2, 3, 6, 7]].all() and not kept[:, [0, 1, 4, 5]].any()


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


def test_nm_and_blocks_on_a_transposed_conv_run_along_its_input_channels() -> None:
    torch.manual_seed(0)
    for groups in (1, 2):  # weight [in=16, out/groups, 2, 2]: dim 0 holds the input channels
        model = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, stride=2, groups=groups), nn.Conv2d(8, 4, 1))
        Sparsifier(None, pattern="2:4", include=["0"]).prepare(model).apply()
        weight = model[0].weight
        along_in = (weight.permute(1, 2, 3, 0).reshape(-1, 4, 4) != 0).sum(-1)
        assert torch.equal(along_in, torch.full_like(along_in, 2)), groups
    model = nn.Sequential(nn.ConvTranspose2d(16, 8, 2), nn.Conv2d(8, 4, 1))
    Sparsifier(0.5, pattern="1x4", include=["0"]).prepare(model).apply()
    blocks = (model[0].weight.permute(1, 2, 3, 0).reshape(-1, 4, 4) != 0).sum(-1)
    assert set(blocks.unique().tolist()) == {0, 4} and float((blocks == 0).float().mean()) == 0.5
    with pytest.raises(ConfigError, match=r"layer '0.weight' \(8, 6, 2, 2\) has 6 input channels, not a multiple "
                                          r"of 4"):  # shown as the conv it transposes: [out, in, kh, kw]
        Sparsifier(None, pattern="2:4", include=["0"]).prepare(nn.Sequential(nn.ConvTranspose2d(6, 8, 2)))


def test_nm_on_a_hugging_face_conv1d_runs_along_its_input_dim() -> None:
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    model = nn.Sequential(conv1d(8, 16), nn.Linear(8, 4))  # Conv1D(nf=8, nx=16) stores [in=16, out=8]
    Sparsifier(None, pattern="2:4", include=["0"]).prepare(model).apply()
    along_in = (model[0].weight.t().reshape(8, 4, 4) != 0).sum(-1)
    assert torch.equal(along_in, torch.full_like(along_in, 2))
