"""A sparse save format: per tensor a packed bitmask plus the non-zero values, in one safetensors file.

For a tensor of ``n`` entries of ``b`` bytes with ``k`` non-zeros the sparse form takes
``n / 8 + k * b`` bytes against ``n * b`` dense; each tensor is stored in whichever form is smaller,
so biases and BatchNorm statistics stay dense. Every value that is not zero comes back with its
exact bits (NaN payloads and denormals included); a ``-0.0`` in a sparse tensor is stored as a
zero and loads as ``0.0``, which compares equal (zeroing by multiplication leaves ``-0.0`` wherever
a weight was negative; keeping those bits would store half the zeros). No pickle; the layout is
JSON metadata.

Tensors in the file: ``<key>`` (dense), or ``<key>::mask`` (uint8, ``numpy.packbits`` of the flat
keep-mask, big-endian bit order) and ``<key>::values`` (the kept entries in row-major order).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import DataError, DataNotFoundError
from prunekit.io import atomic_path

__all__ = ["save_sparse", "load_sparse", "SparseSizes", "sparse_sizes", "FORMAT"]

FORMAT, VERSION = "prunekit.sparse", 1
_MASK, _VALUES = "::mask", "::values"
_CHUNK, _LEVEL = 1 << 22, 6


def _encode(key: str, tensor: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The file entries and the metadata record of one tensor (sparse only when smaller)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    keep = flat != 0  # NOTE: NaN != 0 is True, so NaNs are kept as values.
    count = int(keep.sum())
    sparse_bytes = (flat.numel() + 7) // 8 + count * flat.element_size()
    record = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    if tensor.dtype == torch.bool or sparse_bytes >= flat.numel() * flat.element_size():
        return {key: flat.reshape(tensor.shape).clone()}, {**record, "layout": "dense"}
    bits = torch.from_numpy(np.packbits(keep.numpy()))
    return ({key + _MASK: bits, key + _VALUES: flat[keep].clone()},
            {**record, "layout": "bitmask", "nonzero": count})


def save_sparse(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str], *,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` (or a tensor dict) in the sparse format; returns the path.

    Call it on a finalized model (plain weights holding zeros); a model still carrying masks saves
    its ``parametrizations.*.original`` and mask tensors instead, which loads only into a masked
    model.
    """
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    for key, value in state.items():
        entries, layout[key] = _encode(key, value)
        tensors.update(entries)
    header = {**dict(metadata or {}), "format": FORMAT, "version": str(VERSION),
              "layout": json.dumps(layout)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def _read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        raise DataNotFoundError(f"sparse weights file '{file}' does not exist. Write it with "
                                f"prunekit.sparsity.save_sparse or `prunekit sparsify --out DIR`.")
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"'{file}' is not a readable safetensors file ({exc}). Re-create it with "
                        f"prunekit.sparsity.save_sparse.") from exc
    if meta.get("format") != FORMAT:
        raise DataError(f"'{file}' is not a prunekit sparse file (format {meta.get('format')!r}, "
                        f"expected {FORMAT!r}). Load a plain safetensors file with "
                        f"prunekit.io.load_weights instead.")
    return tensors, meta


def _decode(key: str, record: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    shape, dtype = tuple(record["shape"]), getattr(torch, record["dtype"])
    if record["layout"] == "dense":
        return tensors[key]
    numel = int(np.prod(shape, dtype=np.int64))
    keep = np.unpackbits(tensors[key + _MASK].numpy(), count=numel).astype(bool)
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(keep)] = tensors[key + _VALUES]
    return out.reshape(shape)


def load_sparse(path: str | os.PathLike[str], model: nn.Module | None = None, *,
                strict: bool = True) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_sparse`; returns the dense ``state_dict``.

    With ``model``, the weights are also loaded into it (strictly by default), exactly as saved.
    """
    file = Path(path)
    tensors, meta = _read(file)
    try:
        layout = json.loads(meta["layout"])
        state = {key: _decode(key, record, tensors) for key, record in layout.items()}
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise DataError(f"'{file}' has a damaged layout record ({type(exc).__name__}: {exc}). "
                        f"Re-create it with prunekit.sparsity.save_sparse.") from exc
    if model is not None:
        own = model.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if wrong or (strict and (missing or unexpected)):
            raise DataError(f"'{file}' does not match {type(model).__name__}: shape differs for "
                            f"{wrong[:5]}, missing {sorted(missing)[:5]}, unexpected "
                            f"{sorted(unexpected)[:5]}. Load it into the architecture it was "
                            f"saved from (finalize a masked model before saving).")
        model.load_state_dict(state, strict=strict)
    return state


@dataclass(frozen=True)
class SparseSizes:
    """Bytes on disk: dense safetensors vs the sparse format, each raw and DEFLATE-compressed."""

    dense: int
    dense_compressed: int
    sparse: int
    sparse_compressed: int

    def ratios(self) -> dict[str, float]:
        """How many times smaller than the dense file each form is."""
        return {"dense_compressed": self.dense / self.dense_compressed,
                "sparse": self.dense / self.sparse,
                "sparse_compressed": self.dense / self.sparse_compressed}


def _deflated(file: Path) -> int:
    compressor, total = zlib.compressobj(_LEVEL), 0
    with file.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def sparse_sizes(model: nn.Module) -> SparseSizes:
    """Write ``model`` both ways to a temporary folder and measure (zlib level 6, as zip does)."""
    import tempfile

    from prunekit.io import save_weights

    with tempfile.TemporaryDirectory(prefix="prunekit-sparse-") as tmp:
        dense = save_weights(model, Path(tmp) / "dense.safetensors")
        sparse = save_sparse(model, Path(tmp) / "sparse.safetensors")
        return SparseSizes(dense=dense.stat().st_size, dense_compressed=_deflated(dense),
                           sparse=sparse.stat().st_size, sparse_compressed=_deflated(sparse))
