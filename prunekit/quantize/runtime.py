"""An ONNX file run by ONNX Runtime as an ``nn.Module``, so every Task scores it as it scores PyTorch.

``OnnxModel(path)`` feeds its positional tensors (and ``attention_mask`` when the graph takes one) to
the session's inputs in order and returns every output in the structure the PyTorch model returned
(a tensor, a tuple, a dict, a Hugging Face output; recorded by :func:`~prunekit.measure.export_onnx`),
so a task's metric reads the file with the same code that scores the fp32 model.
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

from torch.utils._pytree import TreeSpec, tree_unflatten, treespec_loads

from prunekit.errors import DataError, DataNotFoundError, require
from prunekit.measure import Metrics, evaluate
from prunekit.measure.latency import ort_session
from prunekit.measure.onnx import OUTPUTS_KEY

__all__ = ["OnnxModel", "evaluate_onnx", "session"]


def session(path: str | os.PathLike[str], *, threads: int = 2) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` of ``path`` (sequential, all graph optimisations)."""
    require("onnxruntime", extra="onnx", feature="ONNX Runtime inference")
    if not Path(path).is_file():
        raise DataNotFoundError(f"ONNX model '{path}' does not exist. Export it first (prunekit export).")
    return ort_session(path, threads)


class OnnxModel(nn.Module):
    """The ONNX file at ``path`` behind an ``nn.Module`` forward (no parameters, CPU only).

    ``forward(*inputs, attention_mask=None)`` returns the session's outputs as tensors, rebuilt into
    the structure the exported model returned. A file that prunekit did not export returns its one
    output as a tensor, or its several outputs as a tuple in the graph's order; a prunekit file whose
    structure was not recorded (a non-tensor output) and has several outputs is refused.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 2) -> None:
        super().__init__()
        self.path = Path(path)
        self._session = session(path, threads=threads)
        self._names = [i.name for i in self._session.get_inputs()]
        self._types = [i.type for i in self._session.get_inputs()]
        self._structure = _structure_of(self._session, self.path)

    def forward(self, *inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        given = list(inputs)
        if attention_mask is not None and len(self._names) > len(inputs):
            given.append(attention_mask)
        feed = {name: _array(x, kind) for name, x, kind in zip(self._names, given, self._types)}
        outputs = [torch.from_numpy(np.asarray(value)) for value in self._session.run(None, feed)]
        if self._structure is None:
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        return tree_unflatten(outputs, self._structure)


def _structure_of(ort: Any, path: Path) -> TreeSpec | None:
    """The output structure recorded in the file (None: no record, and one output or a file from
    elsewhere); a one-line DataError where several outputs cannot be put back together."""
    recorded = ort.get_modelmeta().custom_metadata_map.get(OUTPUTS_KEY)
    count = len(ort.get_outputs())
    if recorded is None or (recorded == "" and count == 1):
        return None
    structure, reason = None, "a non-tensor output or an unnamed container was not recorded"
    if recorded:
        try:
            structure = treespec_loads(recorded)
        except Exception as exc:  # NOTE: pytree raises several types for a container not registered here
            reason = str(exc).splitlines()[0]
    if structure is None:
        raise DataError(f"OnnxModel: cannot rebuild the {count} outputs of '{path}' into what the model "
                        f"returned ({reason}). Fix: return a tensor, tuple or dict of tensors from forward, "
                        f"or import the module defining the output type first.")
    if structure.num_leaves != count:
        raise DataError(f"OnnxModel: '{path}' has {count} outputs; expected {structure.num_leaves} "
                        f"from the structure recorded at export. Fix: export the model again with "
                        f"prunekit.measure.export_onnx.")
    return structure


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
