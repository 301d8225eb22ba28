"""The node worker: one long-lived process per SuperNode that keeps the model in memory.

Flower 1.41's deployment runtime runs every message in a fresh ``flwr-clientapp`` process
(``flwr/supernode/runtime/run_clientapp.py`` pulls one task and exits; SuperExec launches
one per task, in ``--isolation subprocess`` and ``process`` alike; its warm executor pools
serve Kubernetes and other task types, not ClientApps). So the openpfi ClientApp stays
short-lived and light (flwr + numpy), and hands each fit and evaluate to this worker,
which holds the base model, tokenizer, tokenized data and personal state
(``node_service.NodeService``) for as long as its SuperNode runs::

    flower-supernode -- flower-superexec -- flwr-clientapp (one per message)
                                                 |  Unix socket, authenticated (channel.py)
                                     python -m openpfi.engines.flower.node_worker (one per node)

The first message of a run on a node (``query.identify``) starts the worker and waits
until it has loaded everything. The worker serves one request at a time (a SuperNode
handles one message at a time), and exits when the SuperNode process it watches is gone,
on SIGTERM, or after ``--idle`` seconds without a request (``flower.worker_idle``).
Its log is ``<worker dir>/node-<node id>.log``.

Several SuperNodes on one host share its cores: with ``OPENPFI_NODE_SLOTS = k`` (``openpfi deploy
local`` sets it to cores / ``OMP_NUM_THREADS``) a worker holds one of ``k`` compute slots
(``<worker dir>/slot-<i>.lock``, an advisory lock) while it prepares, fits or evaluates, so at
most ``k`` nodes compute at once and their torch threads never outnumber the cores (more
threads than cores slow every one of them down far more than the cores are shared). The
seconds a request waited for a slot come back as ``slot_wait_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from openpfi.engines.flower import channel
from openpfi.errors import UserError

log = logging.getLogger("openpfi.node_worker")
SLOTS_ENV = "OPENPFI_NODE_SLOTS"
"""How many node workers on this host may compute at once (unset or 0: no limit)."""
SLOT_POLL = 0.02
START_TIMEOUT = 120.0
"""Seconds a ClientApp waits for a new worker to listen (it imports flwr and numpy, not torch)."""


@dataclass(frozen=True)
class WorkerPaths:
    socket: Path
    token: Path
    lock: Path
    log: Path

    @classmethod
    def for_node(cls, node_id: int) -> WorkerPaths:
        d = channel.worker_dir()
        stem = f"node-{node_id}"
        return cls(d / f"{stem}.sock", d / f"{stem}.token", d / f"{stem}.lock", d / f"{stem}.log")

    def remove(self) -> None:
        """What a worker leaves when it exits: its log and the (empty) start lock."""
        for path in (self.socket, self.token):
            path.unlink(missing_ok=True)


# -- the ClientApp side --------------------------------------------------------------------------


class WorkerClient:
    """Requests from a ClientApp process to its node's worker, starting the worker when needed."""

    def __init__(self, node_id: int, idle: float):
        self.node_id = node_id
        self.idle = idle
        self.paths = WorkerPaths.for_node(node_id)

    def call(self, op: str, args: dict[str, Any], tensors: channel.Tensors | None = None) -> tuple[dict[str, Any], channel.Tensors]:
        conn = self._connect()
        with conn:
            channel.send_frame(conn, {"token": channel.read_token(self.paths.token).hex(), "op": op, "args": args}, tensors)
            header, out = channel.recv_frame(conn)
        if header.get("ok"):
            return header["result"], out
        if header.get("user_error"):
            raise UserError(str(header.get("error")))
        raise RuntimeError(f"node worker {self.node_id}: {header.get('error')} (log: {self.paths.log})")

    def _try_connect(self) -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.paths.socket))
            return s
        except OSError:
            s.close()
            return None

    def _connect(self) -> socket.socket:
        conn = self._try_connect()
        if conn is not None:
            return conn
        with _locked(self.paths.lock):  # one start per node, whatever the race
            conn = self._try_connect()
            if conn is not None:
                return conn
            proc = self._start()
            deadline = time.monotonic() + START_TIMEOUT
            while (conn := self._try_connect()) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"node worker {self.node_id} exited with code {proc.returncode}: {_tail(self.paths.log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node worker {self.node_id} did not listen within {START_TIMEOUT:g} s (log: {self.paths.log})")
                time.sleep(0.05)
            return conn

    def _start(self) -> subprocess.Popen[bytes]:
        self.paths.socket.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "openpfi.engines.flower.node_worker", "--node-id", str(self.node_id)]
        cmd += ["--watch-pid", str(supernode_pid()), "--idle", str(self.idle)]
        with open(self.paths.log, "ab") as out:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def supernode_pid() -> int:
    """The SuperNode this ClientApp process runs under (flwr-clientapp < flower-superexec < flower-supernode);
    the nearest long-lived ancestor when there is none (SuperExec started on its own: --isolation process)."""
    me = psutil.Process()
    ancestors = me.parents()
    for p in ancestors:
        with contextlib.suppress(psutil.Error):
            if any("flower-supernode" in part for part in p.cmdline()):
                return p.pid
    return ancestors[0].pid if ancestors else os.getppid()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


def node_slots() -> int:
    try:
        return max(0, int(os.environ.get(SLOTS_ENV, "0") or 0))
    except ValueError:
        raise UserError(f"{SLOTS_ENV} = {os.environ[SLOTS_ENV]!r}: give a whole number of compute slots (0: no limit)") from None


@contextlib.contextmanager
def compute_slot(slots: int) -> Iterator[float]:
    """Hold one of this host's ``slots`` compute slots (none when 0); yields the seconds waited.
    A slot is an flock on its file: the kernel frees it when the worker exits, SIGKILL included."""
    if slots <= 0:
        yield 0.0
        return
    d, t = channel.worker_dir(), time.perf_counter()
    while True:
        for i in range(slots):
            f = open(d / f"slot-{i}.lock", "a")  # noqa: SIM115 (closed below)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield time.perf_counter() - t
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        time.sleep(SLOT_POLL)


# -- the worker process --------------------------------------------------------------------------


def _watch(pid: int, paths: WorkerPaths) -> None:
    """Exit at once when the watched SuperNode is gone (SIGKILL included), mid-request or not."""

    def alive() -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def run() -> None:
        while alive():
            time.sleep(0.5)
        log.info("SuperNode %d is gone; exiting", pid)
        paths.remove()
        os._exit(0)

    threading.Thread(target=run, daemon=True, name="watch-supernode").start()


def _answer(service: Any, conn: socket.socket, token: bytes, slots: int = 0) -> None:
    if channel.peer_uid(conn) != os.getuid():
        channel.send_frame(conn, {"ok": False, "error": "refused: another user's process"})
        return
    header, tensors = channel.recv_frame(conn)
    if not channel.token_ok(str(header.get("token", "")), token):
        log.warning("refused a request with a wrong token")
        channel.send_frame(conn, {"ok": False, "error": "refused: wrong node worker token"})
        return
    op = str(header.get("op"))
    t = time.perf_counter()
    try:
        with compute_slot(slots) as waited:
            result, out = service.handle(op, header.get("args", {}), tensors)
    except UserError as err:
        channel.send_frame(conn, {"ok": False, "user_error": True, "error": str(err)})
        return
    except Exception as err:  # the ClientApp turns it into the message's error reply
        log.error("%s failed:\n%s", op, traceback.format_exc())
        channel.send_frame(conn, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        return
    result["worker_s"], result["slot_wait_s"] = time.perf_counter() - t, waited
    channel.send_frame(conn, {"ok": True, "result": result}, out)
    log.info("%s done in %.2f s (%.2f s waiting for a compute slot)", op, result["worker_s"], waited)


def serve(node_id: int, watch_pid: int, idle: float) -> None:
    paths = WorkerPaths.for_node(node_id)
    token = channel.new_token(paths.token)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    paths.socket.unlink(missing_ok=True)
    server.bind(str(paths.socket))
    os.chmod(paths.socket, 0o600)
    server.listen(8)
    server.settimeout(idle)
    _watch(watch_pid, paths)
    from openpfi.engines.flower.node_service import NodeService

    service = NodeService()
    slots = node_slots()
    log.info("node worker %d listening on %s (watching SuperNode %d, idle exit after %g s, compute slots: %s)",
             node_id, paths.socket, watch_pid, idle, slots or "no limit")
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                log.info("no request for %g s; exiting", idle)
                return
            with conn:
                conn.settimeout(None)
                try:
                    _answer(service, conn, token, slots)
                except (OSError, channel.ChannelError) as err:
                    log.warning("request dropped: %s", err)
    finally:
        server.close()
        paths.remove()


def main() -> None:
    p = argparse.ArgumentParser(description="openpfi node worker (started by the openpfi ClientApp)")
    p.add_argument("--node-id", type=int, required=True)
    p.add_argument("--watch-pid", type=int, required=True)
    p.add_argument("--idle", type=float, default=1800.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s node-{a.node_id} %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(a.node_id, a.watch_pid, a.idle)


if __name__ == "__main__":
    main()
