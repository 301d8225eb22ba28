"""Which SuperNode holds which client: found at the start of a run, updated when a node rejoins.

At the start the ServerApp waits for ``data.num_clients`` SuperNodes and asks each
(``query.identify``) for its partition id; bad node configs (none, out of range, taken
twice) stop the run there, each node named, before anything is written. On the deployment
runtime the identify answer comes once the node's worker holds the model and the data, so
its costs (``startup``) are paid before round 1.

Before every later round the ServerApp looks for SuperNodes it does not know (a client's
host restarted its SuperNode: Flower gives it a new node id) and identifies them. A new
node takes over its client when the client's old node is gone or failed its last message;
a second live node claiming a partition is ignored and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

from openpfi.config import Config
from openpfi.engines.flower import records
from openpfi.engines.flower.settings import NODE_CONFIG_HELP
from openpfi.errors import UserError

log = logging.getLogger("openpfi.flower")

Send = Callable[[list[Message], float], dict[int, Message]]
"""Push messages, collect the replies within a timeout (seconds), by destination node."""


@dataclass
class Identified:
    client_id: str
    node_id: int
    partition_id: int
    num_examples: int | None
    costs: dict[str, float]


@dataclass
class NodeRegistry:
    grid: Any
    cfg: Config
    send: Send
    run_key: str
    partition_ids: list[str]
    """Client ids by partition when the SuperLink host has the data; empty: the nodes tell theirs."""
    node_of: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    startup: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per client: what its node reported while getting ready (worker start, import, prepare, memory)."""
    unhealthy: set[str] = field(default_factory=set)
    """Clients whose node did not answer its last message."""
    ignored: set[int] = field(default_factory=set)
    standby: dict[str, Identified] = field(default_factory=dict)
    """A second live node for a client whose node answers: it takes over if that node fails."""

    # -- the start of a run -------------------------------------------------------------------------
    def connect(self) -> dict[str, int]:
        """Wait for every SuperNode, identify them all; one UserError naming every bad node."""
        nodes = self._wait()
        found, problems = self._identify(nodes)
        node_of: dict[str, int] = {}
        for info in found:
            if info.client_id in node_of:
                problems.append(
                    f"SuperNodes {node_of[info.client_id]} and {info.node_id} both have partition-id "
                    f"{info.partition_id}; give each a different one"
                )
            node_of[info.client_id] = info.node_id
            self._keep(info)
        if problems:
            raise UserError("; ".join(problems))
        self.node_of = node_of
        return node_of

    def _wait(self) -> list[int]:
        want, deadline = self.cfg.data.num_clients, time.monotonic() + self.cfg.flower.node_wait
        nodes = sorted(self.grid.get_node_ids())
        while len(nodes) < want and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = sorted(self.grid.get_node_ids())
        if len(nodes) >= want:
            return nodes
        missing = ""
        if nodes:  # which partitions are missing, as far as the connected nodes tell
            found, _ = self._identify(nodes)
            gone = sorted(set(range(want)) - {f.partition_id for f in found})
            missing = f" (no SuperNode has partition-id {', '.join(map(str, gone))})" if gone else ""
        raise UserError(
            f"only {len(nodes)} of {want} SuperNodes connected within flower.node_wait = "
            f"{self.cfg.flower.node_wait:g} s{missing}; start one SuperNode per client (data.num_clients), check "
            f"that each reaches the SuperLink (its log names the reason: address, TLS CA, a key not registered "
            f"with `flwr supernode register`), and {NODE_CONFIG_HELP}"
        )

    def _identify(self, nodes: list[int]) -> tuple[list[Identified], list[str]]:
        ask = ConfigRecord({"client_id": not self.partition_ids, "run_key": self.run_key})
        msgs = [Message(RecordDict({"config": ask}), dst_node_id=n, message_type="query.identify", group_id="0") for n in nodes]
        replies = self.send(msgs, self.cfg.flower.node_wait)  # a node answers once its model is loaded
        found: list[Identified] = []
        problems: list[str] = []
        for nid in nodes:
            reply = replies.get(nid)
            if reply is None:
                problems.append(f"SuperNode {nid}: not ready within flower.node_wait = {self.cfg.flower.node_wait:g} s")
            elif reply.has_error():
                problems.append(f"SuperNode {nid}: {records.reply_error(reply)}")
            else:
                info = dict(reply.content.config_records["client"])
                pid = int(info.pop("partition_id"))  # type: ignore[call-overload]
                if "client_id" not in info and not 0 <= pid < len(self.partition_ids):
                    problems.append(f"SuperNode {nid}: partition-id {pid} but the data has {len(self.partition_ids)} clients")
                    continue
                cid = str(info.pop("client_id")) if "client_id" in info else self.partition_ids[pid]
                n = info.pop("num_examples", None)
                costs = {k: float(v) for k, v in info.items()}  # type: ignore[arg-type]
                found.append(Identified(cid, nid, pid, None if n is None else int(n), costs))  # type: ignore[call-overload]
        return found, problems

    def _keep(self, info: Identified) -> None:
        if info.num_examples is not None:
            self.sizes[info.client_id] = info.num_examples
        if info.costs:
            self.startup[info.client_id] = info.costs

    # -- later rounds -------------------------------------------------------------------------------
    def answered(self, client_ids: list[str], failed: list[str]) -> None:
        self.unhealthy = (self.unhealthy - set(client_ids)) | set(failed)

    def refresh(self, round_num: int) -> dict[str, int]:
        """Take in SuperNodes that (re)joined since the last round; returns client id -> new node id."""
        online = set(self.grid.get_node_ids())
        waiting = {s.node_id for s in self.standby.values()}
        new = sorted(online - set(self.node_of.values()) - self.ignored - waiting)
        found, problems = self._identify(new) if new else ([], [])
        for p in problems:
            log.warning("round %d: a new SuperNode was not taken in: %s", round_num, p)
        found += [s for s in self.standby.values() if s.node_id in online and s.client_id in self.unhealthy]
        rejoined: dict[str, int] = {}
        for info in found:
            old = self.node_of.get(info.client_id)
            if old is None:
                log.warning("round %d: SuperNode %d names client %s, not in this run; ignored", round_num, info.node_id, info.client_id)
                self.ignored.add(info.node_id)
            elif old in online and info.client_id not in self.unhealthy and info.client_id not in rejoined:
                log.warning(
                    "round %d: SuperNode %d also has partition-id %d, held by SuperNode %d which answers; kept on "
                    "standby (stop it, or give it another partition-id)", round_num, info.node_id, info.partition_id, old,
                )
                self.standby[info.client_id] = info
            else:
                log.info("round %d: client %s rejoined on SuperNode %d (was %d)", round_num, info.client_id, info.node_id, old)
                self.node_of[info.client_id] = info.node_id
                self.unhealthy.discard(info.client_id)
                self.standby.pop(info.client_id, None)
                self.ignored.add(old)
                rejoined[info.client_id] = info.node_id
                self._keep(info)
        return rejoined
