"""The local channel between a node's short-lived ClientApp processes and its node worker.

One frame each way per message, over a Unix domain socket::

    b"OPFI" | u32 header length | header (JSON, UTF-8) | u64 blob length | blob (safetensors)

Tensors travel as one safetensors blob (``safetensors.numpy``: no pickle, no torch on the
ClientApp side); everything else is JSON. The channel is authenticated three ways: the
socket lives in a folder only its owner can enter (mode 0700, checked), the peer's
uid (``SO_PEERCRED``) must be the worker's own, and every request carries the worker's
random token (32 bytes, in a mode-0600 file next to the socket), compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from openpfi.errors import UserError

MAGIC = b"OPFI"
MAX_HEADER = 1 << 24
MAX_BLOB = 1 << 40
TOKEN_BYTES = 32
WORKER_DIR_ENV = "OPENPFI_WORKER_DIR"
"""Overrides the folder of the node workers' sockets (default ``$TMPDIR/openpfi-<uid>``; it must be
short: a Unix socket path has at most 107 bytes)."""

Tensors = dict[str, np.ndarray]


class ChannelError(RuntimeError):
    """The worker is not there, the frame is malformed, or authentication failed."""


def worker_dir() -> Path:
    """The folder of this user's node-worker sockets, created mode 0700; refused when others can enter it."""
    folder = Path(os.environ.get(WORKER_DIR_ENV) or Path(tempfile.gettempdir()) / f"openpfi-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise UserError(
            f"{folder} (node worker sockets) must belong to this user with mode 0700; "
            f"fix it with `chmod 700 {folder}` or set {WORKER_DIR_ENV} to a private folder"
        )
    return folder


def new_token(path: Path) -> bytes:
    """A fresh random token written to ``path`` (mode 0600) before the worker listens."""
    token = os.urandom(TOKEN_BYTES)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(token)
    os.replace(tmp, path)
    return token


def read_token(path: Path) -> bytes:
    try:
        token = path.read_bytes()
    except OSError as err:
        raise ChannelError(f"cannot read the node worker token {path}: {err.strerror}") from None
    if len(token) != TOKEN_BYTES:
        raise ChannelError(f"{path} is not a node worker token")
    return token


def token_ok(sent: str, token: bytes) -> bool:
    try:
        return hmac.compare_digest(bytes.fromhex(sent), token)
    except (TypeError, ValueError):
        return False


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ChannelError("the node worker channel closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(conn: socket.socket, header: dict[str, Any], tensors: Tensors | None = None) -> None:
    head = json.dumps(header, allow_nan=True).encode()
    blob = save_tensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}) if tensors else b""
    conn.sendall(MAGIC + struct.pack("<I", len(head)) + head + struct.pack("<Q", len(blob)))
    if blob:
        conn.sendall(blob)


def recv_frame(conn: socket.socket) -> tuple[dict[str, Any], Tensors]:
    if _recv_exact(conn, 4) != MAGIC:
        raise ChannelError("not an openpfi node worker frame")
    (n_head,) = struct.unpack("<I", _recv_exact(conn, 4))
    if n_head > MAX_HEADER:
        raise ChannelError(f"frame header of {n_head} bytes is too large")
    header = json.loads(_recv_exact(conn, n_head))
    if not isinstance(header, dict):
        raise ChannelError("frame header is not a JSON object")
    (n_blob,) = struct.unpack("<Q", _recv_exact(conn, 8))
    if n_blob > MAX_BLOB:
        raise ChannelError(f"frame blob of {n_blob} bytes is too large")
    tensors = load_tensors(_recv_exact(conn, n_blob)) if n_blob else {}
    return header, tensors
