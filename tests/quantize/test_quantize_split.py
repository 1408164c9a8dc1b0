"""Edge/server split: stage 0 int8 in this process, stage 1 fp32 in another, over loopback TCP."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from _quantize_models import tiny_cnn

from prunekit.decompose import partition
from prunekit.errors import ConfigError
from prunekit.quantize.split import split_run
from prunekit.quantize.split_server import receive_arrays, send_arrays


def test_arrays_cross_a_socket_unchanged() -> None:
    left, right = socket.socketpair()
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[1, 2]], dtype=np.int64)]
    with left, right:
        sent = send_arrays(left, arrays)
        got, size = receive_arrays(right)
        assert size == sent and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, arrays))
        left.close()
        assert receive_arrays(right) is None


def test_split_agrees_with_the_whole_model_and_counts_bytes() -> None:
    model = tiny_cnn()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    part = partition(model, x[:1], stages=2)
    crossing = part.stage_inputs(x)[1]
    run = split_run(part, model, [x], repeats=3)
    payload = sum(t.numel() * 4 for t in crossing)
    assert payload < run.bytes_sent < payload + 512  # the activations plus a small header
    assert 16 * 4 * 4 < run.bytes_received < 16 * 4 * 4 + 512  # the logits back
    assert run.agreement >= 0.9 and run.split_ms > 0 and run.whole_ms > 0 and run.repeats == 3


def test_split_needs_two_stages() -> None:
    model = tiny_cnn()
    with pytest.raises(ConfigError, match="at least 2 stages"):
        split_run(partition(model, torch.randn(1, 1, 8, 8), stages=1), model, [torch.randn(4, 1, 8, 8)])
