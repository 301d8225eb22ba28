"""The default engine: one process, one shared base model, clients one after another.

The CPU is already fully used by one client's matmuls, so clients run in
sequence. A client that raises or runs past ``client.timeout_s`` is dropped for
the round (``row["dropped"]``); every update that arrives passes the server's
validation (``FedServer.screen_fit``, ``row["rejected"]``) before aggregation,
and the round goes on when enough valid updates remain. Each update passes the
client-side ``uplink`` (DP noise, compression; client/uplink.py) before it is
handed over. The server object receives only ``ClientUpdate`` values and the sum
of the clients' evaluations (``EvalSum``), never a client; its round hooks get the
round's ``RoundResult``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openpfi.client.federated import FederatedClient, SharedModel
from openpfi.client.messages import ClientUpdate, EvalResult
from openpfi.client.uplink import Uplink
from openpfi.engines.rounds import close_round, round_result
from openpfi.engines.timeout import ClientTimeout, over_limit, time_limit
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
    uplink: Uplink | None = None
    """Client-side DP noise and compression of each update (client/uplink.py)."""
    timeout_s: float = 0.0
    """``client.timeout_s``: a client's fit and upload past this are dropped (0 = no limit)."""
    share_client_metrics: bool = False
    """Write per-client figures into the server's metrics rows (``privacy.share_client_metrics``)."""

    def run_rounds(self, start_round: int = 1) -> list[dict[str, Any]]:
        by_id = {c.client_id: c for c in self.clients}
        rows = []
        for r in range(start_round, self.rounds + 1):
            rows.append(self._round(r, by_id))
        return rows

    def _fit_one(self, client: FederatedClient, global_state: Any, r: int,
                 peers: int) -> tuple[ClientUpdate | None, dict[str, str] | None]:
        """(the uploaded update, None) or (None, why the client is out of the round)."""
        cid = client.client_id
        t = time.perf_counter()
        try:
            with time_limit(self.timeout_s):
                update = client.fit(self.shared, global_state, r, self.seed, on_step=self.reporter.step)
                if self.uplink is not None:
                    try:
                        update = self.uplink.apply(update, client, r, peers)
                    except UserError as err:  # an update the uplink cannot encode (fp16 overflow) fails the client
                        raise RuntimeError(f"upload failed: {err}") from None
        except ClientTimeout as err:
            return None, {"client_id": cid, "reason": "timeout", "detail": str(err)}
        except UserError:
            raise  # bad input (data, config) is the user's to fix, not a client failure
        except Exception as err:  # one client's crash must not end the round
            return None, {"client_id": cid, "reason": "raised", "detail": f"{type(err).__name__}: {err}"[:300]}
        if over_limit(time.perf_counter() - t, self.timeout_s):
            return None, {"client_id": cid, "reason": "timeout", "detail": f"answered after client.timeout_s = "
                                                                            f"{self.timeout_s:g} s"}
        return update, None

    def _round(self, r: int, by_id: dict[str, FederatedClient]) -> dict[str, Any]:
        for prepare_clients in self.before_round:
            prepare_clients(r, self.clients)
        t0 = time.perf_counter()
        sampled = self.server.configure_fit(r, sorted(by_id))
        self.reporter.round_start(r, self.rounds, sampled)
        global_state = self.server.broadcast()
        updates: list[ClientUpdate] = []
        dropped: list[dict[str, str]] = []
        for i, cid in enumerate(sampled):
            client = by_id[cid]
            self.reporter.client_start(r, cid, i, len(sampled), client.settings.steps_for(len(client.train)))
            update, problem = self._fit_one(client, global_state, r, len(sampled))
            if problem is not None:
                log.warning("round %d: client %s dropped (%s): %s", r, cid, problem["reason"], problem["detail"])
                dropped.append(problem)
                continue
            assert update is not None
            update.check()  # only the allow-listed scalars and a typed report cross to the server
            updates.append(update)
            self.reporter.client_end(cid, update.scalars)
        t_train = time.perf_counter() - t0

        self.reporter.phase("aggregate")
        t1 = time.perf_counter()
        valid, rejections = self.server.screen_fit(r, updates)
        rejected = [x.record() for x in rejections]
        for x in rejected:
            log.warning("round %d: update of client %s rejected (%s): %s", r, x["client_id"], x["reason"], x["detail"])
        failed = [x["client_id"] for x in dropped + rejected]
        fit_metrics = self.server.aggregate_fit(r, valid, failures=len(failed))
        t_agg = time.perf_counter() - t1
        updates = valid

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
        result.row["dropped"], result.row["rejected"] = dropped, rejected
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
