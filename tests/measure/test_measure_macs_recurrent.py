"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN and their cells) are counted by the standard formula:
per (sample, time step), layer and direction, ``gates * hidden * (input + hidden or proj)`` matmul MACs,
plus ``proj * hidden`` for an LSTM's projection. An LSTM on CPU runs a fused kernel that counted 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from prunekit.measure import count_macs, macs_by_module
from prunekit.measure.macs import macs_terms


def _layers(gates: int, inputs: int, hidden: int, layers: int = 1, directions: int = 1, proj: int = 0) -> int:
    """MACs of one (sample, time step) of a stacked recurrent layer, by hand."""
    out = proj or hidden
    total = 0
    for layer in range(layers):
        width = inputs if layer == 0 else directions * out
        total += directions * (gates * hidden * (width + out) + proj * hidden)
    return total


@pytest.mark.parametrize(("make", "shape", "per_step", "steps"), [
    (lambda: nn.LSTM(16, 32, num_layers=2, batch_first=True), (2, 10, 16), _layers(4, 16, 32, 2), 20),
    (lambda: nn.LSTM(16, 32), (10, 2, 16), _layers(4, 16, 32), 20),
    (lambda: nn.LSTM(8, 12, bidirectional=True, num_layers=2), (5, 3, 8), _layers(4, 8, 12, 2, 2), 15),
    (lambda: nn.LSTM(8, 12, proj_size=4, num_layers=2, bidirectional=True), (5, 3, 8),
     _layers(4, 8, 12, 2, 2, proj=4), 15),
    (lambda: nn.LSTM(8, 12), (7, 8), _layers(4, 8, 12), 7),  # unbatched
    (lambda: nn.GRU(16, 32, batch_first=True), (2, 10, 16), _layers(3, 16, 32), 20),
    (lambda: nn.GRU(6, 10, num_layers=3, bidirectional=True), (4, 2, 6), _layers(3, 6, 10, 3, 2), 8),
    (lambda: nn.RNN(6, 10, nonlinearity="relu", num_layers=2), (4, 2, 6), _layers(1, 6, 10, 2), 8),
    (lambda: nn.LSTMCell(8, 12), (3, 8), _layers(4, 8, 12), 3),
    (lambda: nn.GRUCell(8, 12), (3, 8), _layers(3, 8, 12), 3),
    (lambda: nn.RNNCell(8, 12), (8,), _layers(1, 8, 12), 1),  # unbatched cell
])
def test_recurrent_layers_are_counted_by_hand(make, shape, per_step: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    assert count_macs(make(), torch.randn(*shape)) == steps * per_step


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0])


def test_an_lstm_is_listed_by_module_and_split_by_weight() -> None:
    model, x = Tagger(), torch.randn(2, 10, 16)
    lstm, fc = 20 * 4 * 32 * ((16 + 32) + (32 + 32)), 20 * 32 * 5
    assert count_macs(model, x) == lstm + fc
    assert macs_by_module(model, x) == {"": lstm + fc, "lstm": lstm, "fc": fc}
    terms = macs_terms(model, x)
    assert terms.macs == lstm + fc and terms.rest_flops == 0
    assert terms.per_weight["lstm.weight_hh_l1"] == 2 * 20  # one multiply-add per element per step
    smaller = {name: (4 * 16, *shape[1:]) for name, shape in terms.shapes.items() if name.startswith("lstm.weight")}
    assert terms.estimate(smaller) == 20 * 4 * 16 * (16 + 32 + 32 + 32) + fc


def test_a_packed_sequence_counts_the_steps_it_holds() -> None:
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(6, 10, batch_first=True)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[1]

    lengths = torch.tensor([5, 2, 3])
    assert count_macs(Packed(), (torch.randn(3, 5, 6), lengths)) == 10 * 3 * 10 * (6 + 10)


def test_a_cell_called_in_a_loop_counts_every_step() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(8, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            state = None
            for step in x.unbind(1):
                state = self.cell(step, state)
            assert state is not None
            return state[0]

    assert count_macs(Loop(), torch.randn(2, 6, 8)) == 12 * 4 * 12 * (8 + 12)
