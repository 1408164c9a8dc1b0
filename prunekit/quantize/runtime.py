"""An ONNX file run by ONNX Runtime as an ``nn.Module``, so every Task scores it as it scores PyTorch.

``OnnxModel(path)`` feeds its positional tensors (and ``attention_mask`` when the graph takes one) to
the session's inputs in order and returns the first output as a float tensor: classification reads
logits, embedding reads the hidden states, with the same code that scores the fp32 model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit.errors import DataNotFoundError, require
from prunekit.measure import Metrics, evaluate
from prunekit.measure.latency import ort_session

__all__ = ["OnnxModel", "evaluate_onnx", "session"]


def session(path: str | os.PathLike[str], *, threads: int = 2) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` of ``path`` (sequential, all graph optimisations)."""
    require("onnxruntime", extra="onnx", feature="ONNX Runtime inference")
    if not Path(path).is_file():
        raise DataNotFoundError(f"ONNX model '{path}' does not exist. Export it first (prunekit export).")
    return ort_session(path, threads)


class OnnxModel(nn.Module):
    """The ONNX file at ``path`` behind an ``nn.Module`` forward (no parameters, CPU only).

    ``forward(*inputs, attention_mask=None)`` returns the session's first output as a tensor.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 2) -> None:
        super().__init__()
        self.path = Path(path)
        self._session = session(path, threads=threads)
        self._names = [i.name for i in self._session.get_inputs()]
        self._types = [i.type for i in self._session.get_inputs()]

    def forward(self, *inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        given = list(inputs)
        if attention_mask is not None and len(self._names) > len(inputs):
            given.append(attention_mask)
        feed = {name: _array(x, kind) for name, x, kind in zip(self._names, given, self._types)}
        return torch.from_numpy(np.asarray(self._session.run(None, feed)[0]))


def _array(x: torch.Tensor, kind: str) -> np.ndarray:
    array = x.detach().cpu().numpy()
    return array.astype(np.int64) if kind == "tensor(int64)" else array.astype(np.float32, copy=False)


def evaluate_onnx(path: str | os.PathLike[str], data: TensorDataset | Iterable[Any], *, task: Any = None,
                  max_batches: int | None = None, batch_size: int = 512, threads: int = 2) -> Metrics:
    """The task's metrics of the ONNX file at ``path`` on ``data``, run by ONNX Runtime.

    ``task`` is a Task or its name (default classification); an embedding task compares with its
    teacher, the fp32 PyTorch model.
    """
    return evaluate(OnnxModel(path, threads=threads), data, task=task, max_batches=max_batches,
                    batch_size=batch_size)
