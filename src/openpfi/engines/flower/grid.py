"""A ``flwr.serverapp.Grid`` that collects replies every ``poll`` seconds.

Flower's deployment Grid (``flwr.superlink.grid.http_grid.HttpGrid.send_and_receive``)
sleeps a fixed 3 s between pulls, so every message exchange waits 1.5 s on average
after the last reply arrived; SecAgg+ makes four exchanges per round. This wrapper
pushes and pulls with the Grid's public ``push_messages`` / ``pull_messages`` and a
shorter interval, and counts the serialized bytes both ways; everything else is delegated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from openpfi.engines.flower.records import wire_bytes


class PollingGrid(Grid):
    def __init__(self, grid: Grid, poll: float = 0.5):
        self.grid = grid
        self.poll = poll
        self.bytes_down = 0
        """Serialized bytes of every message sent so far (``records.wire_bytes``)."""
        self.bytes_up = 0
        """... and of every reply received."""

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every message has a reply or ``timeout`` seconds passed."""
        return list(self.exchange(list(messages), timeout).values())

    def exchange(self, messages: list[Message], timeout: float | None = None) -> dict[int, Message]:
        """Replies by the node each message went to.

        Keyed by destination, not by a reply's sender: the SuperLink itself answers for a
        node that went offline (an error reply with its own node id as the sender).
        """
        self.bytes_down += sum(wire_bytes(m) for m in messages)
        waiting = {i for i in self.push_messages(messages) if i}  # a message that could not be pushed: no id
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}  # set by the push
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: dict[int, Message] = {}
        while waiting:
            for m in self.pull_messages(waiting):
                self.bytes_up += wire_bytes(m)
                replies[node_of[m.metadata.reply_to_message_id]] = m
                waiting.discard(m.metadata.reply_to_message_id)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll)
        return replies
