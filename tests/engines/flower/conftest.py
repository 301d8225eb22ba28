"""Shared pieces of the Flower engine tests: a tiny config on a small JSONL file, a hard timeout,
and ``LoopbackGrid``: the ServerApp's messages handed straight to the real ClientApp in this process.

``LoopbackGrid`` gives every node its own ``Context`` (as a SuperNode would), turns a ClientApp
exception into an error reply (as Flower does), and lets a node be "dead" (it never answers)."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from openpfi.config import Config, load_config
from openpfi.engines.flower import client_app

FLOWER_PROCESS_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp", "flwr-simulation",
                        "openpfi.engines.flower.node_worker")


def write_tiny_data(path: Path, clients: int = 2, rows: int = 14) -> Path:
    """A JSONL file with ``clients`` clients of ``rows`` short conversations each."""
    with open(path, "w") as f:
        for c in range(clients):
            for i in range(rows):
                row = {"client": f"site{c}", "prompt": f"Question {i} from site {c}?", "response": f"Answer {i} for {c}."}
                f.write(json.dumps(row) + "\n")
    return path


def tiny_config(tmp: Path, *overrides: str, clients: int = 2) -> Config:
    data = write_tiny_data(tmp / "data.jsonl", clients)
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "data.source=jsonl",
            f"data.path={data}",
            f"data.num_clients={clients}",
            "data.min_examples=4",
            f"federation.clients_per_round={clients}",
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
    """The helpers of this file for test modules: tiny_config, processes, hard_timeout, drop_clients."""
    return SimpleNamespace(
        tiny_config=tiny_config, processes=flower_processes, hard_timeout=hard_timeout, drop_clients=drop_clients
    )


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


def drop_clients(plan: dict[int, set[str]]):  # type: ignore[no-untyped-def]
    """An in-process ``before_round`` hook: in round r the clients in ``plan[r]`` fail their fit
    (as a node killed or hung in that round), so a Flower run with faults has its reference."""

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("dropped by the test")

    def hook(r: int, clients: list) -> None:  # type: ignore[type-arg]
        for c in clients:
            c.__dict__.pop("fit", None)
            if c.client_id in plan.get(r, set()):
                c.fit = fail

    return hook


# -- the loopback harness -----------------------------------------------------------------------


class LoopbackGrid(Grid):
    def __init__(self, node_configs: dict[int, dict[str, Any]], run_config: dict[str, Any], dead: Iterable[int] = ()):
        self.contexts = {
            nid: Context(run_id=7, node_id=nid, node_config=nc, state=RecordDict(), run_config=run_config)
            for nid, nc in node_configs.items()
        }
        self.run_config = run_config
        self.dead = set(dead)
        """Nodes that never answer (killed or hung), still listed as connected."""
        self.offline: set[int] = set()
        """Nodes the SuperLink no longer lists (their heartbeats stopped)."""
        self.replies: dict[str, Message] = {}
        self.seen: list[str] = []
        self.sent: list[tuple[int, str]] = []

    def add_node(self, node_id: int, node_config: dict[str, Any]) -> None:
        """A SuperNode connecting mid-run (Flower gives a restarted one a new node id)."""
        self.contexts[node_id] = Context(run_id=7, node_id=node_id, node_config=node_config, state=RecordDict(), run_config=self.run_config)

    def sent_to(self, node_id: int) -> list[str]:
        return [t for n, t in self.sent if n == node_id]

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        return SimpleNamespace(run_id=7)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.offline]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for m in messages:
            mid = uuid.uuid4().hex
            m.metadata.__dict__["_message_id"] = mid
            ids.append(mid)
            self.seen.append(m.metadata.message_type)
            nid = m.metadata.dst_node_id
            self.sent.append((nid, m.metadata.message_type))
            if nid in self.dead:
                continue
            try:
                self.replies[mid] = client_app.app(over_the_wire(m), self.contexts[nid])
            except Exception as ex:  # what Flower's ClientApp runner sends back
                self.replies[mid] = Message(Error(code=2, reason=f"{type(ex)}:<'{ex}'>"), reply_to=m)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        return list(self.pull_messages(ids))


def over_the_wire(message: Message) -> Message:
    """The message as a node receives it: serialized and rebuilt (its own copy of every record)."""
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    copy = inflate_object_from_contents(message.object_id, contents)
    assert isinstance(copy, Message)
    copy.metadata.__dict__["_message_id"] = message.metadata.message_id
    return copy


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """The identity a ServerApp process has (Message() needs it)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None  # type: ignore[assignment]


def loopback_nodes(n: int = 2, tmp: Path | None = None) -> dict[int, dict[str, Any]]:
    extra = {"state-dir": str(tmp / "nodes")} if tmp else {}
    return {100 + i: {"partition-id": i, "num-partitions": n, **extra} for i in range(n)}


def untimed(clients: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {c: {k: v for k, v in m.items() if k != "tokens_per_s"} for c, m in clients.items()}


def loopback_run(cfg: Config, out: Path, grid: LoopbackGrid, resume: bool = False) -> Any:
    from openpfi.engines.flower.server_app import FlowerRun
    from openpfi.engines.flower.settings import RUN_CONFIG_DEFAULTS, RunSettings

    context = Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=dict(RUN_CONFIG_DEFAULTS))
    return FlowerRun(grid, context, RunSettings(cfg, out, False, "", resume))


def loopback_run_config(cfg: Config, out: Path, resume: bool = False) -> dict[str, Any]:
    import tomllib

    from openpfi.engines.flower.settings import run_config_toml

    return tomllib.loads(run_config_toml(cfg, out, resume=resume))


@pytest.fixture
def loopback() -> SimpleNamespace:
    """The ServerApp and ClientApp in this process (``LoopbackGrid``): Grid, run, run_config, nodes, untimed."""
    return SimpleNamespace(
        Grid=LoopbackGrid, run=loopback_run, run_config=loopback_run_config, nodes=loopback_nodes,
        untimed=untimed, over_the_wire=over_the_wire,
    )
