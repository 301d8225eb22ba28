"""Processes of a local Flower federation: free ports, and processes stopped with all their descendants.

Every process is started in its own session; ``ProcessSet.stop`` ends them and all their
descendants by PID (SIGTERM, then SIGKILL after a grace period), also on Ctrl-C or SIGTERM
(``stop_on_signals``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from openpfi.errors import UserError

HOST = "127.0.0.1"


# -- ports ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> None:
    """A clear UserError when ``port`` on 127.0.0.1 cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise UserError(
                f"port {port} on {HOST} is already in use (another SuperLink?); pass another --port, "
                "or --port 0 to pick a free one"
            ) from None


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Launched:
    name: str
    popen: subprocess.Popen[Any]
    log: Path
    port: int = 0


@dataclass
class ProcessSet:
    """Processes started in their own sessions, stopped with all their descendants by PID."""

    started: list[Launched] = field(default_factory=list)
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path, **kwargs: Any) -> Launched:
        log.parent.mkdir(parents=True, exist_ok=True)
        out: TextIO | int = kwargs.pop("stdout", None) or open(log, "w")  # noqa: SIM115 (closed by the child)
        popen = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        if not isinstance(out, int):
            out.close()
        launched = Launched(name, popen, log)
        self.started.append(launched)
        self.track()
        return launched

    def track(self) -> None:
        """Remember every descendant now alive (a child outliving its parent is still found)."""
        for item in self.started:
            try:
                root = psutil.Process(item.popen.pid)
                for p in [root, *root.children(recursive=True)]:
                    self.seen.setdefault(p.pid, p)
            except psutil.NoSuchProcess:
                continue

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if running(p)]

    def stop(self, grace: float = 8.0) -> None:
        self.track()
        for item in reversed(self.started):  # flwr run, SuperNodes, then the SuperLink
            if item.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    item.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(item.popen.poll() is None for item in self.started):
            time.sleep(0.1)
            self.track()
        time.sleep(0.3)  # let children with --parent-pid watchers notice
        self.track()
        for p in self.alive():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, left = psutil.wait_procs(self.alive(), timeout=3)
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=3)
        for item in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.popen.wait(timeout=1)


def running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so ``finally`` blocks run (SIGINT too: a process
    started with SIGINT ignored, as a parent's ignored disposition is inherited, would otherwise ignore Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def flower_bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise UserError(f"`{name}` not found; install the Flower extra: pip install 'openpfi[flower]'")
    return found


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
