"""What sparse storage saves on disk: dense safetensors vs ``prunekit.save(..., sparse=True)``.

The encoding itself (per tensor a packed bitmask plus the non-zero values, each tensor in
whichever form is smaller) is how the one saved format stores weights when asked
(:mod:`prunekit.io.sparse`); ``prunekit.load`` reads it back dense. This module measures it.
"""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["SparseSizes", "sparse_sizes"]

_CHUNK, _LEVEL = 1 << 22, 6


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
    """The weights file written both ways to a temporary folder, measured (zlib level 6, as zip).

    ``sparse`` is the size of ``model.safetensors`` in a folder ``prunekit.save(..., sparse=True)``
    writes (the manifest beside it is not counted).
    """
    from safetensors.torch import save_file

    from prunekit.io import save_weights
    from prunekit.io.sparse import encode

    with tempfile.TemporaryDirectory(prefix="prunekit-sparse-") as tmp:
        dense = save_weights(model, Path(tmp) / "dense.safetensors")
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        sparse = Path(tmp) / "sparse.safetensors"
        save_file(encode(state)[0], str(sparse), metadata={"format": "pt"})
        return SparseSizes(dense=dense.stat().st_size, dense_compressed=_deflated(dense),
                           sparse=sparse.stat().st_size, sparse_compressed=_deflated(sparse))
