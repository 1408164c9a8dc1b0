"""Sparse storage of weights: per tensor a packed bitmask plus the non-zero values.

For a tensor of ``n`` entries of ``b`` bytes with ``k`` non-zeros the sparse form takes
``n / 8 + k * b`` bytes against ``n * b`` dense; each tensor is stored in whichever form is smaller,
so biases and BatchNorm statistics stay dense. Every value that is not zero comes back with its
exact bits (NaN payloads and denormals included); a ``-0.0`` in a sparse tensor is stored as a
zero and loads as ``0.0``, which compares equal (zeroing by multiplication leaves ``-0.0`` wherever
a weight was negative; keeping those bits would store half the zeros).

Entries of the safetensors file: ``<key>`` (dense), or ``<key>::mask`` (uint8, ``numpy.packbits``
of the flat keep-mask, big-endian bit order) and ``<key>::values`` (the kept entries in row-major
order). Which tensors are stored how is the ``sparse`` transform's ``tensors`` record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from prunekit.errors import DataError

__all__ = ["encode", "decode", "ENCODING"]

ENCODING = "bitmask"
_MASK, _VALUES = "::mask", "::values"


def _encode_one(key: str, tensor: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The file entries and the record of one tensor (sparse only when smaller)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    keep = flat != 0  # NOTE: NaN != 0 is True, so NaNs are kept as values.
    count = int(keep.sum())
    sparse_bytes = (flat.numel() + 7) // 8 + count * flat.element_size()
    if tensor.dtype == torch.bool or sparse_bytes >= flat.numel() * flat.element_size():
        return {key: flat.reshape(tensor.shape).clone()}, {"layout": "dense"}
    bits = torch.from_numpy(np.packbits(keep.numpy()))
    return {key + _MASK: bits, key + _VALUES: flat[keep].clone()}, {"layout": ENCODING, "nonzero": count}


def encode(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(file entries, per-tensor record)`` of a state dict in the sparse form."""
    entries: dict[str, torch.Tensor] = {}
    records: dict[str, Any] = {}
    for key, value in state.items():
        parts, record = _encode_one(key, value)
        entries.update(parts)
        records[key] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."), **record}
    return entries, records


def _decode_one(key: str, record: Mapping[str, Any], entries: Mapping[str, torch.Tensor]) -> torch.Tensor:
    shape, dtype = tuple(record["shape"]), getattr(torch, record["dtype"])
    if record["layout"] == "dense":
        return entries[key]
    numel = int(np.prod(shape, dtype=np.int64))
    keep = np.unpackbits(entries[key + _MASK].numpy(), count=numel).astype(bool)
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(keep)] = entries[key + _VALUES]
    return out.reshape(shape)


def decode(entries: Mapping[str, torch.Tensor], records: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """The dense state dict back from :func:`encode`'s entries and records."""
    try:
        return {key: _decode_one(key, record, entries) for key, record in records.items()}
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise DataError(f"'{where}': the sparse weights do not match their record ({type(exc).__name__}: "
                        f"{exc}). The folder is damaged; save the model again with prunekit.save.") from exc
