"""What an engine hands the server's round hooks: the typed result of one round.

An engine (in-process, Flower) runs a round, then builds a ``RoundResult``: the clients it
sampled and the ones that failed, the SUM of the clients' monitor reports (plain in-process,
the SecAgg+ sum on Flower; ``MonitorSum``), the reports left out of that sum and why
(``RejectedReport``), the sum of the clients' held-out evaluations (``EvalSum``), and the
metrics row that will be written to metrics.jsonl. Hooks (the monitor, an alignment recipe's
public evaluation) read the typed fields and add their own figures to ``row``; nothing but
the row is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openpfi.client.messages import EvalResult


@dataclass(frozen=True)
class MonitorSum:
    """The sum of the valid monitor reports of a round and how many reports are in it."""

    vector: np.ndarray
    clients: int


@dataclass(frozen=True)
class RejectedReport:
    """A client's monitor report left out of the sum (wrong length, non-finite, out of bounds)."""

    client_id: str
    reason: str


@dataclass(frozen=True)
class EvalSum:
    """Sums of the clients' held-out evaluations: what the server needs for the federation's means.

    ``loss_sum`` / ``ppl_sum`` add up one held-out loss / perplexity per client; the
    ``personal_*`` fields the same over the clients with a personal model. A client without
    held-out tokens (one that has a single example) has no loss and is not counted.
    """

    clients: int = 0
    loss_sum: float = 0.0
    ppl_sum: float = 0.0
    personal_clients: int = 0
    personal_loss_sum: float = 0.0

    @classmethod
    def of(cls, results: Sequence[EvalResult]) -> EvalSum:
        results = [r for r in results if r.target_tokens > 0]
        personal = [r.personal_loss for r in results if r.personal_loss is not None]
        return cls(len(results), float(sum(r.loss for r in results)), float(sum(r.perplexity for r in results)),
                   len(personal), float(sum(personal)))


@dataclass
class RoundResult:
    """One round as the server saw it (see the module docstring)."""

    round: int
    sampled: list[str]
    failed: list[str]
    row: dict[str, Any]
    """The metrics row of the round; hooks add their figures to it."""
    monitor: MonitorSum | None = None
    rejected: list[RejectedReport] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Sampled clients that sent an update."""
        return len(self.sampled) - len(self.failed)


RoundHook = Callable[[RoundResult], None]
"""Called after aggregation and evaluation with the round's result; may add keys to its row."""
