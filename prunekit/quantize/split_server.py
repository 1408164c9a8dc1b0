"""The server half of an edge/server split, run as a script: ``python split_server.py FILE...``.

Loads the ONNX files of the later stages (in order) into ONNX Runtime, listens on a free loopback
port (printed on stdout as ``port N``), and for each message of arrays runs the stages chained and
sends back the last one's outputs. Serves one connection, then exits. It imports numpy,
onnxruntime and the standard library only (no torch, no prunekit), as a server next to the edge
device would. Messages: a length-prefixed JSON header (dtype and shape of each array), then a
length-prefixed payload of their raw bytes (:func:`send_arrays`, :func:`receive_arrays`).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Sequence

import numpy as np
import onnxruntime

__all__ = ["send_arrays", "receive_arrays", "serve"]

_LENGTH = struct.Struct("!Q")


def send_arrays(sock: socket.socket, arrays: Sequence[np.ndarray]) -> int:
    """Send ``arrays``; returns the bytes written (header and payload)."""
    header = json.dumps([{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]).encode()
    payload = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    message = _LENGTH.pack(len(header)) + header + _LENGTH.pack(len(payload)) + payload
    sock.sendall(message)
    return len(message)


def _exactly(sock: socket.socket, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError(f"the peer closed the connection with {left} of {count} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive_arrays(sock: socket.socket) -> tuple[list[np.ndarray], int] | None:
    """The next message's arrays and its size in bytes; None when the peer closed cleanly."""
    first = sock.recv(_LENGTH.size, socket.MSG_WAITALL)
    if not first:
        return None
    if len(first) < _LENGTH.size:
        first += _exactly(sock, _LENGTH.size - len(first))
    header_size = _LENGTH.unpack(first)[0]
    header = json.loads(_exactly(sock, header_size))
    size = _LENGTH.unpack(_exactly(sock, _LENGTH.size))[0]
    payload, arrays, offset = _exactly(sock, size), [], 0
    for spec in header:
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(spec["shape"]))
        offset += count * dtype.itemsize
    return arrays, 2 * _LENGTH.size + header_size + size




def _sessions(files: list[str], threads: int) -> list[onnxruntime.InferenceSession]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return [onnxruntime.InferenceSession(f, options, providers=["CPUExecutionProvider"]) for f in files]


def serve(files: list[str], threads: int = 1) -> None:
    """Serve one connection on a free loopback port (printed first)."""
    sessions = _sessions(files, threads)
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(f"port {server.getsockname()[1]}", flush=True)
        connection, _ = server.accept()
        with connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while (message := receive_arrays(connection)) is not None:
                values: list[np.ndarray] = message[0]
                for session in sessions:
                    names = [i.name for i in session.get_inputs()]
                    values = session.run(None, dict(zip(names, values, strict=True)))
                send_arrays(connection, values)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    threads = int(arguments.pop(0).split("=")[1]) if arguments and arguments[0].startswith("--threads=") else 1
    serve(arguments, threads)
