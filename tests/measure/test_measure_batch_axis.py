"""Re-batching an example for MACs per sample and latency at other batch sizes: dim 0 is taken as the
batch only where the model confirms it (a sequence-first RNN's dim 0 is time), an input shared by the
batch (a (T, T) mask) passes unchanged, and a parameter left at its default is no ONNX input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import count_macs, measure_latency, profile
from prunekit.measure.macs import batch_of

_FAST = {"warmup": 0, "repeats": 1, "min_time_s": 0.0}


class Tagger(nn.Module):
    def __init__(self, batch_first: bool = False) -> None:
        super().__init__()
        self.gru, self.head = nn.GRU(8, 16, batch_first=batch_first), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0])


class Attention(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x (B, T, D), mask (T, T)
        q, k, v = self.qkv(x).chunk(3, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class MaskFirst(Attention):
    def forward(self, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, mask)


def test_a_sequence_first_rnn_is_measured_as_given_with_a_note() -> None:
    model, x = Tagger().eval(), torch.randn(20, 1, 8)  # NOTE: (T, B, F), PyTorch's default layout
    result = profile(model, x, batch_sizes=(1, 64), backends=("torch",), **_FAST)
    assert result.macs == count_macs(model, x) == 20 * (3 * 16 * (8 + 16) + 16 * 5)
    assert result.input_shape == (20, 1, 8)
    assert [(s.backend, s.batch_size) for s in result.latency] == [("torch", 20)]
    assert any(n.startswith("batch dimension not established") and "batch_first=True" in n for n in result.notes)
    with pytest.raises(ConfigError, match=r"cannot time batch 4: .*sequence-first RNN.*batch_size=20"):
        measure_latency(model, x, batch_size=4, **_FAST)
    assert measure_latency(model, x, batch_size=20, **_FAST).batch_size == 20


def test_a_batch_first_rnn_is_still_measured_per_sample() -> None:
    from prunekit.measure.macs import find_batch

    model, x = Tagger(batch_first=True).eval(), torch.randn(2, 20, 8)
    assert find_batch(model, (x,)).size == 2
    result = profile(model, x, batch_sizes=(1, 3), backends=("torch",), **_FAST)
    assert result.macs == 20 * (3 * 16 * (8 + 16) + 16 * 5) and result.input_shape == (1, 20, 8)
    assert [s.batch_size for s in result.latency] == [1, 3]


def test_an_input_shared_by_the_batch_passes_through_unchanged() -> None:
    model, x = Attention().eval(), torch.randn(1, 5, 16)
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    rows, same = batch_of((x, mask), 4)
    assert rows.shape == (4, 5, 16) and same is mask
    result = profile(model, (x, mask), batch_sizes=(1, 4), backends=("torch",), **_FAST)
    assert result.macs == count_macs(model, (x, mask)) == 5 * 16 * 48 + 2 * 5 * 5 * 16
    assert result.input_shape == (1, 5, 16) and [s.batch_size for s in result.latency] == [1, 4]
    assert measure_latency(model, (x, mask), batch_size=4, **_FAST).batch_size == 4


def test_the_batch_is_found_after_a_shared_input() -> None:
    from prunekit.measure.macs import find_batch

    x, mask = torch.randn(1, 5, 16), torch.tril(torch.ones(5, 5, dtype=torch.bool))
    assert find_batch(MaskFirst().eval(), (mask, x)).size == 1  # NOTE: the mask's size 5 is tried first, refused
    assert measure_latency(MaskFirst().eval(), (mask, x), batch_size=3, **_FAST).batch_size == 3


class Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(4, 16)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.a(x) + (0 if y is None else self.b(y))


def test_a_parameter_left_at_its_default_is_no_onnx_input() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, inputs = Named().eval(), {"x": torch.randn(1, 8), "y": torch.randn(1, 4)}  # NOTE: GPT-2's gap
    assert measure_latency(model, inputs, backend="onnxruntime", batch_size=3, **_FAST).batch_size == 3
    result = profile(model, inputs, batch_sizes=(1,), **_FAST)
    assert [s.backend for s in result.latency] == ["torch", "onnxruntime"]
    assert not [n for n in result.notes if "onnxruntime" in n]
