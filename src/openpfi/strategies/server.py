"""The server side of federated training: sample, aggregate, step the server optimizer.

A strategy is configure/aggregate for fit and for evaluate (as in Flower's
``Strategy``), over the pure functions of ``openpfi.algorithms``. The server
sees ``ClientUpdate`` objects and the sum of the clients' held-out evaluations
(``EvalSum``) only; it holds no reference to a client, its data or its personal state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openpfi.algorithms.aggregate import weighted_mean
from openpfi.algorithms.server_opt import ServerOptConfig, init_server_state, server_step
from openpfi.algorithms.state import StateDict, clone, l2_norm, nbytes, sub
from openpfi.client.messages import ClientUpdate
from openpfi.errors import UserError
from openpfi.strategies.lora_aggregation import LoraAggregation
from openpfi.strategies.round_result import EvalSum


@dataclass(frozen=True)
class SamplingConfig:
    clients_per_round: int
    min_fit_clients: int
    seed: int


def sample_clients(client_ids: Sequence[str], k: int, seed: int, round_num: int) -> list[str]:
    """Uniform sampling without replacement, seeded per round (same seed and round, same clients)."""
    if k >= len(client_ids):
        return list(client_ids)
    rng = np.random.default_rng([seed, round_num])
    picked = sorted(rng.choice(len(client_ids), size=k, replace=False).tolist())
    return [client_ids[i] for i in picked]


class FedServer:
    """Global adapter + server optimizer state; FedAvg-family aggregation of shared deltas."""

    def __init__(self, opt: ServerOptConfig, sampling: SamplingConfig, aggregation: LoraAggregation | None = None):
        self.opt = opt
        self.sampling = sampling
        self.aggregation = aggregation
        """LoRA-aware aggregation (strategies/lora_aggregation.py); None = weighted mean + server optimizer."""
        self.params: StateDict = {}
        self.opt_state: StateDict = {}
        self._bytes_down: dict[int, float] = {}

    def init(self, params: StateDict, opt_state: StateDict | None = None, meta: dict[str, Any] | None = None) -> None:
        self.params = clone(params)
        self.opt_state = clone(opt_state) if opt_state is not None else init_server_state(self.opt, self.params)
        if self.aggregation is not None:
            self.aggregation.load_meta((meta or {}).get("aggregation"))

    def meta(self) -> dict[str, Any]:
        """Small server-side bookkeeping saved with each checkpoint (restored by ``init``)."""
        return {"aggregation": self.aggregation.meta()} if self.aggregation is not None else {}

    def configure_fit(self, round_num: int, client_ids: Sequence[str]) -> list[str]:
        sampled = sample_clients(client_ids, self.sampling.clients_per_round, self.sampling.seed, round_num)
        if self.aggregation is None:
            self._bytes_down[round_num] = float(nbytes(self.params) * len(sampled))
        else:
            self._bytes_down[round_num] = float(
                sum(self.aggregation.download_bytes(self.params, cid, round_num) for cid in sampled)
            )
        return sampled

    def broadcast(self) -> StateDict:
        """What a sampled client receives (the shared global adapter)."""
        return self.params

    def aggregate_fit(
        self,
        round_num: int,
        updates: Sequence[ClientUpdate],
        failures: int = 0,
        mean_delta: StateDict | None = None,
    ) -> dict[str, float]:
        """Aggregate the updates and step the server optimizer.

        ``mean_delta``: secure aggregation (Flower SecAgg+) gives the server only the weighted
        mean of the deltas; then ``updates`` carry counts and scalars but no delta.
        """
        secure = mean_delta is not None
        if len(updates) < self.sampling.min_fit_clients:
            raise RuntimeError(
                f"round {round_num}: only {len(updates)} clients answered ({failures} failed), "
                f"fewer than federation.min_fit_clients = {self.sampling.min_fit_clients}"
            )
        shared = set(self.params)
        for u in updates:
            if set(u.delta) - shared:
                raise UserError(f"client {u.client_id} sent tensors the server does not share; update rejected")
        bytes_down = self._bytes_down.pop(round_num, float(nbytes(self.params) * (len(updates) + failures)))
        if mean_delta is not None:
            self.params, self.opt_state = server_step(self.opt, self.params, mean_delta, self.opt_state)
        elif self.aggregation is None:
            mean_delta = weighted_mean([u.delta for u in updates], [u.num_examples for u in updates])
            self.params, self.opt_state = server_step(self.opt, self.params, mean_delta, self.opt_state)
        else:
            new = self.aggregation.aggregate(self.params, updates, round_num)
            mean_delta, self.params = sub(new, self.params), new
        losses = [u.scalars.get("train_loss", float("nan")) for u in updates]
        return {
            "train_loss": float(np.average(losses, weights=[u.num_examples for u in updates])),
            "clients_answered": float(len(updates)),
            "clients_failed": float(failures),
            "update_norm_mean": float("nan") if secure else float(np.mean([l2_norm(u.delta) for u in updates])),
            "global_delta_norm": l2_norm(mean_delta),
            "bytes_up": float(sum(u.bytes_up for u in updates)),
            "bytes_down": bytes_down,
            "tokens": float(sum(u.scalars.get("tokens", 0.0) for u in updates)),
            "train_compute_s": float(sum(u.scalars.get("compute_seconds", 0.0) for u in updates)),
        }

    def aggregate_evaluate(self, round_num: int, evals: EvalSum) -> dict[str, float]:
        """Means of the clients' held-out loss, from their sum (no single client's figure: the
        spread and the worst clients come from the monitor's DP utility histogram)."""
        if not evals.clients:
            return {}
        out = {"eval_loss_mean": evals.loss_sum / evals.clients, "eval_ppl_mean": evals.ppl_sum / evals.clients}
        if evals.personal_clients:
            out["personal_loss_mean"] = evals.personal_loss_sum / evals.personal_clients
        return out
