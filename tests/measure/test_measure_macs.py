from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.measure import count_macs, macs_by_module
from prunekit.errors import ConfigError
from prunekit.measure.macs import batch_of, macs_terms


def test_simple_cnn_macs_exact(simple_cnn: nn.Module) -> None:
    assert count_macs(simple_cnn, torch.randn(1, 1, 28, 28)) == 110_400
    assert count_macs(simple_cnn, torch.randn(2, 1, 28, 28)) == 2 * 110_400


def test_linear_only_macs_exact(mlp: nn.Module) -> None:
    assert count_macs(mlp, torch.randn(1, 8)) == 8 * 16 + 16 * 4


def test_mode_and_grad_mode_unchanged(simple_cnn: nn.Module) -> None:
    simple_cnn.train()
    count_macs(simple_cnn, torch.randn(1, 1, 28, 28))
    assert simple_cnn.training
    assert torch.is_grad_enabled()


def test_tuple_input() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 4), nn.Linear(6, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(y)

    assert count_macs(TwoInputs(), (torch.randn(1, 8), torch.randn(1, 6))) == 8 * 4 + 6 * 4


def test_attention_is_counted_in_eval() -> None:
    # NOTE: in eval under no_grad the fused MHA fast path would make this 0 MACs.
    length, dim, ff = 5, 8, 16
    layer = nn.TransformerEncoderLayer(dim, 2, ff, dropout=0.0, batch_first=True).eval()
    expected = (length * dim * 3 * dim          # q, k, v projections
                + 2 * length * length * dim     # q @ k^T and attn @ v
                + length * dim * dim            # output projection
                + 2 * length * dim * ff)        # feed-forward
    fastpath = torch.backends.mha.get_fastpath_enabled()
    assert count_macs(layer, torch.randn(1, length, dim)) == expected
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_a_learned_query_array_expanded_to_the_batch_is_counted() -> None:
    # NOTE: a Perceiver's or DETR's learned queries: under no_grad, latents.unsqueeze(0).expand(...)
    # reports requires_grad without a grad_fn, which failed the counter's module tracker
    class Latents(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.latents = nn.Parameter(torch.randn(4, 8))
            self.attend = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            query = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
            return self.attend(query, x, x, need_weights=False)[0]

    model = Latents()
    expected = 4 * 8 * 8 + 2 * 6 * 8 * 8 + 2 * 4 * 6 * 8 + 4 * 8 * 8  # q; k, v; scores, mix; out
    assert count_macs(model, torch.randn(1, 6, 8)) == expected
    assert macs_by_module(model, torch.randn(1, 6, 8))["attend"] == expected
    assert all(p.requires_grad for p in model.parameters())


def test_macs_by_module(simple_cnn: nn.Module) -> None:
    table = macs_by_module(simple_cnn, torch.randn(1, 1, 28, 28))
    assert table[""] == 110_400
    assert table["features.0"] == 28 * 28 * 4 * 9
    assert table["features.3"] == 14 * 14 * 8 * 36
    assert table["fc1"] == 392 * 64
    assert table["fc2"] == 64 * 10
    assert list(table) == ["", "features", "features.0", "features.3", "fc1", "fc2"]


def test_batch_of_tiles_along_dim0() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    (tiled,) = batch_of((x,), 5)
    assert tiled.shape == (5, 3)
    assert torch.equal(tiled[4], x[0]) and torch.equal(tiled[3], x[1])


class _Seq2Seq(torch.nn.Module):
    """An encoder-decoder whose second positional input (a mask) may be None."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        h = self.enc(x) if mask is None else self.enc(x) * mask
        return self.dec(h + y)


def test_none_stands_for_an_input_the_model_does_without() -> None:
    model, x, y = _Seq2Seq(), torch.randn(2, 4), torch.randn(2, 8)
    assert count_macs(model, (x, None, y)) == 2 * (4 * 8 + 8 * 3)
    assert macs_terms(model, (x, None, y)).macs == count_macs(model, (x, None, y))
    with pytest.raises(ConfigError, match="example_inputs must be a tensor or a non-empty tuple of tensors"):
        count_macs(model, (None, None))
