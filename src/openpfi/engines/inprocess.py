"""The default engine: one process, one shared base model, clients one after another.

The CPU is already fully used by one client's matmuls, so clients run in
sequence. A client that fails is logged and skipped; the round goes on when at
least ``federation.min_fit_clients`` answered. The server object receives only
``ClientUpdate`` values and the sum of the clients' evaluations (``EvalSum``), never a client;
its round hooks get the round's ``RoundResult``. After a round the sampled clients release what they loaded
for it (``FederatedClient.release``), so memory follows the clients sampled per round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openpfi.client.federated import FederatedClient, SharedModel
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.engines.rounds import close_round, round_result
from openpfi.errors import UserError
from openpfi.runfolder import RunFolder
from openpfi.strategies.round_result import EvalSum, RoundHook
from openpfi.strategies.server import FedServer

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None: ...
    def client_start(self, round_num: int, client_id: str, index: int, count: int, steps: int) -> None: ...
    def step(self, step: int, total: int, loss: float, tokens_per_s: float) -> None: ...
    def client_end(self, client_id: str, scalars: dict[str, float]) -> None: ...
    def phase(self, name: str) -> None: ...
    def round_end(self, row: dict[str, Any]) -> None: ...


class SilentReporter:
    def round_start(self, round_num: int, rounds: int, sampled: Sequence[str]) -> None:
        pass

    def client_start(self, round_num: int, client_id: str, index: int, count: int, steps: int) -> None:
        pass

    def step(self, step: int, total: int, loss: float, tokens_per_s: float) -> None:
        pass

    def client_end(self, client_id: str, scalars: dict[str, float]) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def round_end(self, row: dict[str, Any]) -> None:
        pass


ClientSideHook = Callable[[int, list[FederatedClient]], None]
"""Simulation scaffolding run before a round on the client side only (e.g. a benchmark's injected
failure changing some clients' local data); the server never sees it."""


@dataclass
class InProcessEngine:
    shared: SharedModel
    clients: list[FederatedClient]
    server: FedServer
    run: RunFolder
    rounds: int
    seed: int
    reporter: Reporter = field(default_factory=SilentReporter)
    hooks: list[RoundHook] = field(default_factory=list)
    before_round: list[ClientSideHook] = field(default_factory=list)
    validate_monitor: Callable[[Any], str | None] | None = None
    """Checks each client's monitor report before it enters the sum (see engines/rounds.py)."""
    eval_every: int = 1
    """Held-out evaluation every this many rounds and at the last one (``federation.eval_every``)."""
    share_client_metrics: bool = False
    """Write per-client figures into the server's metrics rows (``privacy.share_client_metrics``)."""

    def run_rounds(self, start_round: int = 1) -> list[dict[str, Any]]:
        by_id = {c.client_id: c for c in self.clients}
        rows = []
        for r in range(start_round, self.rounds + 1):
            rows.append(self._round(r, by_id))
        return rows

    def _round(self, r: int, by_id: dict[str, FederatedClient]) -> dict[str, Any]:
        for prepare_clients in self.before_round:
            prepare_clients(r, self.clients)
        t0 = time.perf_counter()
        sampled = self.server.configure_fit(r, sorted(by_id))
        self.reporter.round_start(r, self.rounds, sampled)
        global_state = self.server.broadcast()
        updates: list[ClientUpdate] = []
        failed: list[str] = []
        for i, cid in enumerate(sampled):
            client = by_id[cid]
            self.reporter.client_start(r, cid, i, len(sampled), client.settings.steps_for(len(client.train)))
            try:
                update = client.fit(self.shared, global_state, r, self.seed, on_step=self.reporter.step)
            except UserError:
                raise
            except Exception as err:  # one client's crash must not end the round
                log.warning("round %d: client %s failed: %s", r, cid, err)
                failed.append(cid)
                continue
            update.check()  # only the allow-listed scalars and a typed report cross to the server
            updates.append(update)
            self.reporter.client_end(cid, update.scalars)
        t_train = time.perf_counter() - t0

        self.reporter.phase("aggregate")
        t1 = time.perf_counter()
        fit_metrics = self.server.aggregate_fit(r, updates, failures=len(failed))
        t_agg = time.perf_counter() - t1

        self.reporter.phase("evaluate")
        t2 = time.perf_counter()
        new_global = self.server.broadcast()
        evals: list[EvalResult] = []
        if r % self.eval_every == 0 or r == self.rounds:
            for u in updates:
                if by_id[u.client_id].heldout:  # a client with a single example holds nothing out
                    evals.append(by_id[u.client_id].evaluate(self.shared, new_global, round_num=r))
        eval_metrics = self.server.aggregate_evaluate(r, EvalSum.of(evals))
        t_eval = time.perf_counter() - t2
        for cid in sampled:  # memory follows the clients sampled, not all clients
            by_id[cid].release()

        result = round_result(r, sampled, failed, fit_metrics, eval_metrics, updates, evals, self.validate_monitor,
                              self.share_client_metrics)
        probing = sum(u.scalars.get("monitor_seconds", 0.0) for u in updates)  # inside client.fit
        timings = {"train_s": t_train - probing, "aggregate_s": t_agg, "evaluate_s": t_eval, "client_monitor_s": probing}
        return close_round(
            self.run,
            self.server,
            result,
            seed=self.seed,
            hooks=self.hooks,
            reporter=self.reporter,
            timings=timings,
            started=t0,
            meta={"server": self.server.meta()},
        )
