"""Shared pieces of the Flower engine tests: a tiny config on a small JSONL file, a hard timeout."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from openpfi.config import Config, load_config

FLOWER_PROCESS_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp", "flwr-simulation")


def write_tiny_data(path: Path, clients: int = 2, rows: int = 14) -> Path:
    """A JSONL file with ``clients`` clients of ``rows`` short conversations each."""
    with open(path, "w") as f:
        for c in range(clients):
            for i in range(rows):
                row = {"client": f"site{c}", "prompt": f"Question {i} from site {c}?", "response": f"Answer {i} for {c}."}
                f.write(json.dumps(row) + "\n")
    return path


def tiny_config(tmp: Path, *overrides: str) -> Config:
    data = write_tiny_data(tmp / "data.jsonl")
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "data.source=jsonl",
            f"data.path={data}",
            "data.num_clients=2",
            "data.min_examples=4",
            "federation.clients_per_round=2",
            "federation.rounds=2",
            "client.local_steps=2",
            "client.batch_size=2",
            "client.max_length=48",
            "client.lr=0.002",
            "monitor.enabled=false",
            *overrides,
        ],
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Config:
    return tiny_config(tmp_path)


@pytest.fixture(scope="session")
def flower_kit() -> SimpleNamespace:
    """The helpers of this file for test modules: tiny_config, processes, hard_timeout."""
    return SimpleNamespace(tiny_config=tiny_config, processes=flower_processes, hard_timeout=hard_timeout)


TAG = "OPENPFI_TEST_TAG"


def flower_processes(tag: str = "") -> set[int]:
    """PIDs of Flower processes now running; with ``tag``, only those whose environment carries it
    (every process a test starts inherits the tag, so other Flower runs on the machine do not count)."""
    out = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if not any(name in cmd for name in FLOWER_PROCESS_NAMES):
            continue
        try:
            if tag and p.environ().get(TAG) != tag:
                continue
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        out.add(p.info["pid"])
    return out


@pytest.fixture
def flower_tag(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tag in this process's environment, inherited by every process the test starts."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    return tag


@contextlib.contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (the code under test cleans up in ``finally``)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded its hard timeout of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
