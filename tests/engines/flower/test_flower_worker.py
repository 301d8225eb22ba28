"""The node worker and its channel, without Flower: frames, authentication, lifetime."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openpfi.engines.flower import channel
from openpfi.engines.flower.node_worker import WorkerClient, WorkerPaths, compute_slot
from openpfi.errors import UserError


def test_a_frame_carries_json_and_exact_arrays_without_pickle() -> None:
    # Prepare
    a, b = socket.socketpair()
    tensors = {"delta/q.lora_A": np.arange(6, dtype=np.float32).reshape(2, 3), "monitor": np.array([0.5, -1.25])}
    # Execute
    with a, b:
        channel.send_frame(a, {"op": "fit", "round": 3, "nan": float("nan")}, tensors)
        channel.send_frame(a, {"op": "evaluate"})
        header, back = channel.recv_frame(b)
        header2, back2 = channel.recv_frame(b)
    # Assert
    assert header["op"] == "fit" and header["round"] == 3 and np.isnan(header["nan"])
    assert back.keys() == tensors.keys() and all(np.array_equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype for k in tensors)
    assert header2 == {"op": "evaluate"} and back2 == {}


def test_a_frame_that_is_not_ours_is_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x80\x04pickle")
        with pytest.raises(channel.ChannelError, match="not an openpfi node worker frame"):
            channel.recv_frame(b)


def test_the_socket_folder_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "w"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    monkeypatch.setenv(channel.WORKER_DIR_ENV, str(folder))
    with pytest.raises(UserError, match="mode 0700"):
        channel.worker_dir()
    folder.chmod(0o700)
    assert channel.worker_dir() == folder


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """A node worker watching a stand-in SuperNode (a sleeping process)."""
    monkeypatch.setenv(channel.WORKER_DIR_ENV, str(tmp_path / "w"))
    supernode = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    cmd = [sys.executable, "-m", "openpfi.engines.flower.node_worker", "--node-id", "7", "--watch-pid", str(supernode.pid), "--idle", "60"]
    proc = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = WorkerPaths.for_node(7)
    deadline = time.monotonic() + 60
    while not paths.socket.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc, supernode
    for p in (proc, supernode):
        if p.poll() is None:
            p.kill()
            p.wait()


def test_the_worker_answers_its_token_only_and_dies_with_its_supernode(worker: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]) -> None:
    # Prepare
    proc, supernode = worker
    client = WorkerClient(7, idle=60)
    # Execute / Assert: the right token reaches the service (which knows no "ping")
    with pytest.raises(RuntimeError, match="unknown node service request 'ping'"):
        client.call("ping", {})
    # ... a wrong token is refused before anything runs
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(client.paths.socket))
    with conn:
        channel.send_frame(conn, {"token": "00" * channel.TOKEN_BYTES, "op": "fit", "args": {}})
        header, _ = channel.recv_frame(conn)
    assert header == {"ok": False, "error": "refused: wrong node worker token"}
    # ... and the worker exits with its SuperNode, taking its socket and token along
    supernode.kill()
    supernode.wait()
    assert proc.wait(timeout=20) == 0
    assert not client.paths.socket.exists() and not client.paths.token.exists()


def test_compute_slots_let_only_k_nodes_compute_and_a_killed_holder_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: one slot on this host, held by another process (a node worker mid-fit)
    monkeypatch.setenv(channel.WORKER_DIR_ENV, str(tmp_path / "w"))
    code = (
        "import sys, time\nfrom openpfi.engines.flower.node_worker import compute_slot\n"
        "with compute_slot(1):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env={**os.environ})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        # Execute: a second worker asks while the slot is held, then the holder is SIGKILLed
        with compute_slot(2) as waited_two:  # two slots: the free one at once
            pass
        killer = threading.Timer(0.5, holder.kill)
        killer.start()
        with compute_slot(1) as waited:
            pass
        killer.join()
    finally:
        holder.kill()
        holder.wait()
    # Assert: with a free slot no wait; with none, a wait until the holder was gone
    assert waited_two < 0.3 and waited >= 0.4
    with compute_slot(0) as none:  # 0: no limit
        assert none == 0.0
