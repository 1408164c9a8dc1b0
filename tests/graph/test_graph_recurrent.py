"""Recurrent layers: the hidden units of ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` are one channel group
across layers and directions; cutting them equals the masked dense model, ``hidden_size`` follows,
and the pruned model saves and loads without pickle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.graph import DependencyGraph
from prunekit.importance import score
from prunekit.structured import allocate, apply
from prunekit.structured.apply import mask


class TextRNN(nn.Module):
    def __init__(self, kind: str = "lstm", layers: int = 2, bidirectional: bool = True, **extra: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.rnn = rnn(16, 12, num_layers=layers, batch_first=True, bidirectional=bidirectional, **extra)
        self.head = nn.Linear(12 * (2 if bidirectional else 1), 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


def _ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(0, 30, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind,layers,bidirectional", [("lstm", 2, True), ("gru", 2, True), ("rnn", 1, False),
                                                       ("lstm", 1, False)])
def test_hidden_units_are_cut_in_every_layer_and_direction(kind: str, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model, ids = TextRNN(kind, layers, bidirectional).eval(), _ids()
    graph = DependencyGraph.trace(model, ids)
    hidden = next(g for g in graph.groups if ("rnn.weight_hh_l0", 1) in {(m.tensor, m.axis) for m in g.members})
    assert hidden.prunable and hidden.size == 12 and hidden.exact
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    rows = sorted(m.start for m in hidden.members if m.tensor == "rnn.weight_ih_l0" and m.axis == 0)
    assert rows == [12 * g for g in range(gates)]
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=ids)  # verified
    assert pruned.rnn.hidden_size == 6 and pruned.rnn.weight_hh_l0.shape == (gates * 6, 6)
    assert pruned.rnn.input_size == pruned.embed.embedding_dim == 8
    torch.testing.assert_close(pruned(ids), mask(model, graph, plan)(ids), rtol=1e-4, atol=1e-5)
    assert pruned(_ids(3, 4)).shape == (3, 4)  # other batch and length


def test_a_pruned_recurrent_model_saves_and_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model, ids = TextRNN("gru").eval(), _ids()
    graph = DependencyGraph.trace(model, ids)
    pruned = apply(model, graph, allocate(graph, score(graph, model, "l2"), 0.5, round_to=1), example_inputs=ids)
    loaded = prunekit.load(prunekit.save(pruned, tmp_path / "m", original=model), model=TextRNN("gru"))
    assert loaded.rnn.hidden_size == 6
    torch.testing.assert_close(loaded(_ids(3, 5)), pruned(_ids(3, 5)))


def test_projected_lstm_is_kept_whole_with_the_reason() -> None:
    model, ids = TextRNN("lstm", 1, False, proj_size=5).eval(), _ids()
    model.head = nn.Linear(5, 4)
    graph = DependencyGraph.trace(model, ids)
    assert any("proj_size" in b for b in graph.blocked)
    assert not any(m.tensor.startswith("rnn.") for g in graph.prunable for m in g.members)


class CellLoop(nn.Module):
    """A cell unrolled by hand over time: the first state made by the cell itself (hx None) or by
    the user from a stored width, the next ones the previous step's."""

    def __init__(self, kind: str = "lstm", own_state: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](16, 12)
        self.kind, self.own_state, self.hidden = kind, own_state, 12
        self.head = nn.Linear(12, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        state = None
        if self.own_state:
            h = x.new_zeros(x.shape[0], self.hidden)
            state = (h, h.clone()) if self.kind == "lstm" else h
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        return self.head(state[0] if self.kind == "lstm" else state)


@pytest.mark.parametrize("kind,own_state", [("lstm", False), ("lstm", True), ("gru", False), ("rnn", True)])
def test_cells_in_a_loop_cut_their_hidden_units(kind: str, own_state: bool) -> None:
    torch.manual_seed(0)
    model, ids = CellLoop(kind, own_state).eval(), _ids()
    graph = DependencyGraph.trace(model, ids)
    hidden = next(g for g in graph.groups if ("cell.weight_hh", 1) in {(m.tensor, m.axis) for m in g.members})
    assert hidden.prunable and hidden.size == 12 and hidden.exact  # NOTE: before: no rule for lstm_cell
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    assert sorted(m.start for m in hidden.members if m.tensor == "cell.weight_ih") == [12 * g for g in range(gates)]
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=ids)  # verified
    assert pruned.cell.hidden_size == pruned.head.in_features == 6 and pruned.cell.input_size == 8
    torch.testing.assert_close(pruned(ids), mask(model, graph, plan)(ids), rtol=1e-4, atol=1e-5)
    assert pruned(_ids(3, 4)).shape == (3, 4)


class ConvLSTM(nn.Module):
    """A ConvLSTM written by hand: conv gates chunked into four, the state made as zeros of a stored
    width in channels-first layout (``new_zeros(B, self.hidden, H, W)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 12
        self.gates = nn.Conv2d(3 + 12, 4 * 12, 3, padding=1)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, steps, _, h, w = clip.shape
        hs = clip.new_zeros(b, self.hidden, h, w)
        cs = hs.clone()
        for t in range(steps):
            i, f, g, o = self.gates(torch.cat([clip[:, t], hs], 1)).chunk(4, 1)
            cs = torch.sigmoid(f) * cs + torch.sigmoid(i) * torch.tanh(g)
            hs = torch.sigmoid(o) * torch.tanh(cs)
        return self.head(hs)


def test_a_conv_lstm_state_of_a_stored_width_follows_the_cut() -> None:
    # NOTE: before, the zeros' channel dim was fixed data: 'meets a fixed-size tensor in mul' froze it all
    clip = torch.randn(1, 3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    model = ConvLSTM().eval()
    graph = DependencyGraph.trace(model, clip)
    hidden = next(g for g in graph.groups if ("head.weight", 1) in {(m.tensor, m.axis) for m in g.members})
    assert hidden.prunable and hidden.size == 12
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=clip)  # verified
    assert pruned.hidden == pruned.head.in_channels == 6 and pruned.gates.out_channels == 24
    torch.testing.assert_close(pruned(clip), mask(model, graph, plan)(clip), rtol=1e-4, atol=1e-5)
    assert pruned(torch.randn(2, 2, 3, 5, 7)).shape == (2, 2, 5, 7)


class PackedTextRNN(nn.Module):
    """Variable-length batches as users write them: pack_padded_sequence -> LSTM -> pad_packed_sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16, padding_idx=0)
        self.rnn = nn.LSTM(16, 12, batch_first=True, bidirectional=True)
        self.head = nn.Linear(24, 4)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.head(out.sum(1))


def test_packed_sequences_are_cut_like_padded_ones() -> None:
    torch.manual_seed(0)
    model, inputs = PackedTextRNN().eval(), (_ids(3, 6), torch.tensor([6, 4, 2]))
    graph = DependencyGraph.trace(model, inputs)
    assert all(g.prunable for g in graph.groups if g.id != "head.weight:0")
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=inputs)  # verified
    assert pruned.rnn.hidden_size == 6 and pruned.embed.embedding_dim == 8
    torch.testing.assert_close(pruned(*inputs), mask(model, graph, plan)(*inputs), rtol=1e-4, atol=1e-5)


def test_pad_sequence_keeps_the_features_of_every_sequence() -> None:
    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.head = nn.Linear(5, 16), nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x))
            return self.head(nn.utils.rnn.pad_sequence([h[0, :3], h[1]], batch_first=True).mean(1))

    torch.manual_seed(0)
    model, x = Padded().eval(), torch.randn(2, 4, 5)
    graph = DependencyGraph.trace(model, x)
    plan = allocate(graph, score(graph, model, "l2"), 0.5, round_to=1)
    pruned = apply(model, graph, plan, example_inputs=x)
    assert pruned.a.out_features == 8
    torch.testing.assert_close(pruned(x), mask(model, graph, plan)(x), rtol=1e-4, atol=1e-5)
