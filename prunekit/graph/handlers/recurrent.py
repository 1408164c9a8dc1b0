"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells): the hidden units are channels.

``torch.lstm(input, hx, params, has_biases, num_layers, ...)`` (or, packed, ``(data, batch_sizes,
hx, params, ...)``) holds, per layer and direction, ``w_ih`` [G*H, in], ``w_hh`` [G*H, H] and two
biases [G*H], for G gates (LSTM 4, GRU 3, RNN 1). Hidden unit ``j`` is written by row ``g*H + j`` of
each gate and read back by column ``j`` of ``w_hh`` and by the next layer. The module keeps one
``hidden_size`` for every layer and direction, so all of them are cut at the same units: one group.
Removing a unit is exact: the others never read it once its columns are gone. A cell
(``torch.lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)``) is one layer and one direction of that,
called once per step by the user's loop; its state carries the units from step to step.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.graph.constraints import ParamDim, Tracked
from prunekit.graph.registry import register_refresh, register_rule, resolve

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@register_rule(*resolve(*_GATES))
def recurrent(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """Input features are read by the first layer's ``w_ih``; the hidden units are one new source."""
    at = next((i for i, a in enumerate(args) if isinstance(a, bool)), None)  # has_biases follows params
    params = args[at - 1] if at else None
    if at is None or not isinstance(params, (list, tuple)) or len(args) < at + 5:
        return ctx.opaque(args, kwargs, out, "recurrent call of an unknown form")
    has_biases, layers, bidirectional = args[at], int(args[at + 1]), bool(args[at + 4])
    directions = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != layers * directions * per:
        return ctx.opaque(args, kwargs, out, "recurrent layer with projections (proj_size)")
    names = [ctx.dims(p)[0] for p in params]
    if not all(isinstance(n, ParamDim) for n in names):
        return ctx.opaque(args, kwargs, out, "recurrent weights that are not parameters")
    gates = _GATES[ctx.current.rsplit(".", 1)[-1]]
    size = params[1].shape[1]  # w_hh: [G*H, H]
    layout = ctx.store.new_source(size, f"{names[0].tensor.rpartition('.')[0] or 'rnn'}.hidden")
    stacked = Tracked(layout.segments * directions)
    x = args[0]
    features = ctx.dims(x)[-1]
    for layer in range(layers):
        for d in range(directions):
            tensors = [n.tensor for n in names[(layer * directions + d) * per:][:per]]
            _one_layer(ctx, features if layer == 0 else stacked, layout, tensors, gates)
    outputs = out if isinstance(out, tuple) else (out,)
    result = outputs[0]
    ctx.set(result, [None] * (result.dim() - 1) + [stacked])
    for state in outputs[1:]:  # h_n (and c_n): [layers * directions, B, H]
        if isinstance(state, torch.Tensor):
            ctx.set(state, [None] * (state.dim() - 1) + [layout])
    _initial_states(ctx, args[1:at - 1], layout)


def _one_layer(ctx, reads, layout: Tracked, tensors: list[str], gates: int) -> None:  # type: ignore[no-untyped-def]
    """One layer and direction, ``tensors`` = ``[w_ih, w_hh, *biases]``: ``w_ih``'s columns read
    ``reads`` (if channels), each gate's rows of every tensor write the hidden units ``layout``, and
    ``w_hh``'s columns read them back."""
    w_ih, w_hh = tensors[:2]
    if isinstance(reads, Tracked):
        ctx.store.use(reads, w_ih, 1, "consumer")
    for g in range(gates):
        for tensor in tensors:
            ctx.store.use(layout, tensor, 0, "producer", offset=g * layout.size)
    ctx.store.use(layout, w_hh, 1, "consumer")


def _initial_states(ctx, states, layout: Tracked) -> None:  # type: ignore[no-untyped-def]
    """Initial states given with channels (the previous call's ``h_n``) hold the hidden units."""
    for s in states:
        for t in (s if isinstance(s, (tuple, list)) else (s,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 2:
                last = ctx.dims(t)[-1]
                if isinstance(last, Tracked):
                    ctx.store.unify(last, layout, ctx.where)


@register_rule(*resolve("_pack_padded_sequence"))
def pack_padded(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``pack_padded_sequence``: ``[B, T, *]`` (or ``[T, B, *]``) -> the steps' rows ``[N, *]`` and
    the batch sizes; the feature dims keep their channels."""
    data = out[0] if isinstance(out, tuple) else out
    ctx.set(data, [None] + ctx.dims(args[0])[2:])


@register_rule(*resolve("_pad_packed_sequence"))
def pad_packed(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``pad_packed_sequence``: the rows ``[N, *]`` back to ``[B, T, *]`` (or ``[T, B, *]``)."""
    padded = out[0] if isinstance(out, tuple) else out
    ctx.set(padded, [None, None] + ctx.dims(args[0])[1:])


@register_rule(getattr(torch._C._nn, "pad_sequence", None))
def pad_sequence(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """``pad_sequence([L_i, *] ...)`` -> ``[B, T, *]`` (or ``[T, B, *]``): every sequence's feature
    dims are the same channels."""
    sequences = [t for t in args[0] if isinstance(t, torch.Tensor)] if isinstance(args[0], (list, tuple)) else []
    if not sequences:
        return ctx.opaque(args, kwargs, out, "pad_sequence of no tensors")
    result = ctx.dims(sequences[0])[1:]
    for t in sequences[1:]:
        result = [ctx.store.unify(a, b, ctx.where) for a, b in zip(result, ctx.dims(t)[1:])]
    ctx.set(out, [None, None] + result)


@register_refresh(nn.RNNBase)
def refresh_recurrent(module: nn.Module) -> None:
    module.input_size = module.weight_ih_l0.shape[1]
    module.hidden_size = module.weight_hh_l0.shape[1]
    module._init_flat_weights()


_CELLS = {"lstm_cell": 4, "gru_cell": 3, "rnn_tanh_cell": 1, "rnn_relu_cell": 1}


@register_rule(*resolve(*_CELLS))
def recurrent_cell(ctx, args, kwargs, out) -> None:  # type: ignore[no-untyped-def]
    """One step of ``nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``: ``(input, hx, w_ih, w_hh[, b_ih,
    b_hh])``, the gates stacked in the rows as in the layers above; the new state holds the hidden
    units, and so does a state given in (the previous step's, in a loop over time)."""
    x, hx, *params = args[:6]
    names = [ctx.dims(p)[0] if isinstance(p, torch.Tensor) else None for p in params if p is not None]
    if len(names) < 2 or not all(isinstance(n, ParamDim) for n in names):
        return ctx.opaque(args, kwargs, out, "recurrent cell weights that are not parameters")
    gates = _CELLS[ctx.current.rsplit(".", 1)[-1]]
    size = params[1].shape[1]  # w_hh: [G*H, H]
    layout = ctx.store.new_source(size, f"{names[0].tensor.rpartition('.')[0] or 'cell'}.hidden")
    _one_layer(ctx, ctx.dims(x)[-1], layout, [n.tensor for n in names], gates)
    for state in out if isinstance(out, tuple) else (out,):  # h' (and c')
        if isinstance(state, torch.Tensor):
            ctx.set(state, [None] * (state.dim() - 1) + [layout])
    _initial_states(ctx, [hx], layout)


@register_refresh(nn.RNNCellBase)
def refresh_recurrent_cell(module: nn.Module) -> None:
    module.input_size = module.weight_ih.shape[1]
    module.hidden_size = module.weight_hh.shape[1]
