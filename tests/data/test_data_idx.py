"""read_idx: real IDX bytes (gzip and raw) decode exactly, and every corruption names the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from prunekit.data.idx import read_idx
from prunekit.errors import DataError, DataNotFoundError

from _data_files import idx_bytes


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_uint8_images_round_trip(tmp_path: Path, write_idx, name: str) -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / name, images))
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_every_standard_dtype_code_decodes_to_native_order(tmp_path: Path, write_idx, dtype) -> None:
    values = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx.gz", values))
    assert out.dtype.isnative and out.shape == (3, 4)
    np.testing.assert_array_equal(out, values.astype(np.dtype(dtype).newbyteorder("=")))


def test_gzip_detected_by_content_without_gz_suffix(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "labels").write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), labels)


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path, fix="re-install dataset-fashion-mnist")
    message = str(info.value)
    assert str(path) in message and "re-install dataset-fashion-mnist" in message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_bad_magic(tmp_path: Path, write_idx, suffix: str) -> None:
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[0] = 0x1A
    _expect_error(write_idx(tmp_path / f"bad{suffix}", bytes(data)), "magic", "0x1a")


def test_unknown_dtype_code(tmp_path: Path, write_idx) -> None:
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[2] = 0x07
    _expect_error(write_idx(tmp_path / "code.gz", bytes(data)), "dtype code", "0x07", "0x08")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_payload(tmp_path: Path, write_idx, suffix: str) -> None:
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5]
    _expect_error(write_idx(tmp_path / f"short{suffix}", data), "48 bytes", "43 bytes", "truncated")


def test_trailing_data(tmp_path: Path, write_idx) -> None:
    data = idx_bytes(np.zeros(4, np.uint8)) + b"\x00\x01"
    _expect_error(write_idx(tmp_path / "long.gz", data), "trailing")


def test_header_shorter_than_its_dimensions(tmp_path: Path, write_idx) -> None:
    _expect_error(write_idx(tmp_path / "hdr", bytes([0, 0, 8, 3, 0, 0])), "header")
    _expect_error(write_idx(tmp_path / "empty", b""), "0 byte")


def test_truncated_gzip_is_a_data_error(tmp_path: Path, write_idx) -> None:
    path = write_idx(tmp_path / "cut.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _expect_error(path, "gzip")


def test_gz_name_with_garbage_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gz"
    path.write_bytes(b"this is not gzip at all")
    _expect_error(path, "gzip")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope-idx1-ubyte.gz") as info:
        read_idx(tmp_path / "nope-idx1-ubyte.gz")
    assert isinstance(info.value, FileNotFoundError)
