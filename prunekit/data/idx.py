"""Read IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw, checking every field.

Format: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the values (big-endian) in C order. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import zlib
from os import PathLike
from pathlib import Path
from typing import NoReturn

import numpy as np

from prunekit.errors import DataError, DataNotFoundError

__all__ = ["IDX_DTYPES", "read_idx"]

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype code -> numpy dtype (values are stored big-endian)."""

_GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_FIX = "re-download the file (or re-install the package that provides it)"


def read_idx(path: str | PathLike[str], *, fix: str = DEFAULT_FIX) -> np.ndarray:
    """Decode one IDX file into a native-endian numpy array with the header's shape.

    ``.gz`` files (or any file starting with the gzip magic) are decompressed first. A file whose
    header or length is inconsistent raises :class:`DataError` naming the file, what was expected,
    what was found, and ``fix`` (the action to take, e.g. which package to re-install).
    """
    path = Path(path)
    raw = _read_bytes(path, fix)
    if len(raw) < 4:
        _fail(path, "a 4-byte IDX header (0x00 0x00 <dtype> <ndim>)",
              f"only {len(raw)} byte(s)", fix)
    if raw[0] != 0 or raw[1] != 0:
        _fail(path, "an IDX file starting with the magic bytes 0x00 0x00",
              f"0x{raw[0]:02x} 0x{raw[1]:02x}", fix)
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        _fail(path, f"an IDX dtype code in ({known})", f"0x{code:02x}", fix)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        _fail(path, f"a header of {header_len} bytes for {ndim} dimension(s)",
              f"a file of only {len(raw)} bytes", fix)
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header_len
    if found != expected:
        what = "truncated" if found < expected else "has trailing data"
        _fail(path, f"{expected} bytes of {dtype.name} data for shape {shape}",
              f"{found} bytes (the file is {what})", fix)
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else data


def _read_bytes(path: Path, fix: str) -> bytes:
    """The file's (decompressed) bytes; a missing file or a broken gzip stream raises our errors."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(
            f"IDX file '{path}' does not exist. Fix: check the path, or {fix}."
        ) from None
    except IsADirectoryError:
        raise DataError(f"IDX file '{path}' is a folder, not a file. Fix: pass the file's path.") from None
    if path.suffix != ".gz" and not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # NOTE: gzip raises BadGzipFile (an OSError) for bad headers, EOFError for truncation, and
        # zlib.error for a corrupt stream; the user needs the same advice for all three.
        _fail(path, "a complete gzip stream", f"a broken one ({type(exc).__name__}: {exc})", fix)


def _fail(path: Path, expected: str, found: str, fix: str) -> NoReturn:
    raise DataError(f"IDX file '{path}': expected {expected}, found {found}. Fix: {fix}.")
