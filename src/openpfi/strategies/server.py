"""The server side of federated training: sample, screen, aggregate, step the server optimizer.

A strategy is configure/aggregate for fit and for evaluate (as in Flower's
``Strategy``), over the pure functions of ``openpfi.algorithms``. The server
sees ``ClientUpdate`` objects and the sum of the clients' held-out evaluations
(``EvalSum``) only; it holds no reference to a client, its data or its personal state.
A round is::

    configure_fit   sample clients (uniform without replacement, or Poisson under update DP)
    screen_fit      decode and validate every upload (strategies/screening.py)
    aggregate_fit   combine the valid deltas -- mean, a robust rule (strategies/robust.py) or the
                    DP noised mean (strategies/update_privacy.py) -- then step the server optimizer
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openpfi.algorithms.lora_rank import slice_rank
from openpfi.algorithms.server_opt import ServerOptConfig, init_server_state, server_step
from openpfi.algorithms.state import StateDict, clone, l2_norm, nbytes, sub
from openpfi.algorithms.wire import Like, like_of
from openpfi.client.messages import ClientUpdate
from openpfi.models.merged import is_merged_key
from openpfi.strategies.lora_aggregation import LoraAggregation
from openpfi.strategies.robust import RobustRule
from openpfi.strategies.round_result import EvalSum
from openpfi.strategies.screening import Rejection, ScreenRules, norm_bound, screen
from openpfi.strategies.update_privacy import UpdatePrivacy

log = logging.getLogger(__name__)


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

    def __init__(self, opt: ServerOptConfig, sampling: SamplingConfig, aggregation: LoraAggregation | None = None,
                 rules: ScreenRules | None = None, robust: RobustRule | None = None,
                 privacy: UpdatePrivacy | None = None):
        self.opt = opt
        self.sampling = sampling
        self.aggregation = aggregation
        """LoRA-aware aggregation (strategies/lora_aggregation.py); None = weighted mean + server optimizer."""
        self.rules = rules or ScreenRules()
        self.robust = robust or RobustRule()
        self.privacy = privacy
        """Client-level DP of the updates (None = off)."""
        self.params: StateDict = {}
        self.opt_state: StateDict = {}
        self._bytes_down: dict[int, float] = {}
        self._bytes_up: dict[int, float] = {}
        self._sampled: dict[int, int] = {}

    def init(self, params: StateDict, opt_state: StateDict | None = None, meta: dict[str, Any] | None = None) -> None:
        self.params = clone(params)
        self.opt_state = clone(opt_state) if opt_state is not None else init_server_state(self.opt, self.params)
        if self.aggregation is not None:
            self.aggregation.load_meta((meta or {}).get("aggregation"))

        if self.privacy is not None:
            self.privacy.load_meta((meta or {}).get("update_privacy"))

    def meta(self) -> dict[str, Any]:
        """Small server-side bookkeeping saved with each checkpoint (restored by ``init``)."""
        out: dict[str, Any] = {"aggregation": self.aggregation.meta()} if self.aggregation is not None else {}
        if self.privacy is not None:
            out["update_privacy"] = self.privacy.meta()
        return out

    def configure_fit(self, round_num: int, client_ids: Sequence[str]) -> list[str]:
        if self.privacy is not None:
            sampled = self.privacy.sample(client_ids, round_num)
        else:
            sampled = sample_clients(client_ids, self.sampling.clients_per_round, self.sampling.seed, round_num)
        self._sampled[round_num] = len(sampled)
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

    def expected(self, client_id: str) -> Like:
        """Names, shapes and dtypes of the delta this client must send (its rank's slice of the factors)."""
        factors = {k: v for k, v in self.params.items() if not is_merged_key(k)}
        plan = getattr(self.aggregation, "plan", None)
        if plan is not None and plan.rank(client_id) < plan.model_rank:
            factors = slice_rank(factors, plan.rank(client_id))
        return like_of(factors)

    def screen_fit(self, round_num: int, updates: Sequence[ClientUpdate],
                   secure: bool = False) -> tuple[list[ClientUpdate], list[Rejection]]:
        """Decode and validate the uploads; only the valid ones may reach ``aggregate_fit``.
        Bytes up count every upload received, the rejected ones too."""
        self._bytes_up[round_num] = float(sum(u.bytes_up for u in updates))
        return screen(updates, self.expected, self.rules, secure)

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
        dp = self.privacy
        need = self.robust.min_updates() if dp is None or dp.dp.mode == "local" else 0
        if dp is None:
            need = max(need, self.sampling.min_fit_clients)
        if len(updates) < need:
            rule = (f"federation.min_fit_clients = {need}" if need == self.sampling.min_fit_clients
                    else f"the {need} that federation.aggregator = {self.robust.name!r} needs")
            raise RuntimeError(
                f"round {round_num}: only {len(updates)} clients answered ({failures} failed), fewer than {rule}"
            )
        bytes_down = self._bytes_down.pop(round_num, float(nbytes(self.params) * (len(updates) + failures)))
        bytes_up = self._bytes_up.pop(round_num, float(sum(u.bytes_up for u in updates)))
        extra: dict[str, float] = {}
        if secure:
            assert mean_delta is not None
            problem = self._sum_problem(mean_delta)
            if problem is None:
                self.params, self.opt_state = server_step(self.opt, self.params, mean_delta, self.opt_state)
            else:  # no single update can be told apart under SecAgg+: the whole sum is discarded
                extra = {"secure_sum_rejected": 1.0}
                log.warning("round %d: secure sum discarded (%s); the global adapter stays", round_num, problem)
                mean_delta = {k: torch.zeros_like(t) for k, t in mean_delta.items()}
        elif self.aggregation is None:
            deltas = [u.delta for u in updates]
            if dp is not None and dp.dp.mode != "local":
                mean_delta = dp.noised_mean(deltas, self.params, round_num)
            else:
                mean_delta = self.robust.combine(deltas, [u.num_examples for u in updates])
            self.params, self.opt_state = server_step(self.opt, self.params, mean_delta, self.opt_state)
        else:
            new = self.aggregation.aggregate(self.params, updates, round_num)
            mean_delta, self.params = sub(new, self.params), new
        if dp is not None:
            extra.update(dp.record(round_num, len(updates), self._sampled.pop(round_num, len(updates)) or 1))
        weights = [u.num_examples for u in updates]
        losses = [u.scalars.get("train_loss", float("nan")) for u in updates]
        return {
            "train_loss": float(np.average(losses, weights=weights)) if updates else float("nan"),
            "clients_answered": float(len(updates)),
            "clients_failed": float(failures),
            "update_norm_mean": float(np.mean([l2_norm(u.delta) for u in updates]))
            if updates and not secure else float("nan"),
            "global_delta_norm": l2_norm(mean_delta),
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "tokens": float(sum(u.scalars.get("tokens", 0.0) for u in updates)),
            "train_compute_s": float(sum(u.scalars.get("compute_seconds", 0.0) for u in updates)),
            **extra,
        }

    def _sum_problem(self, mean_delta: StateDict) -> str | None:
        """Why a secure mean must be discarded: non-finite values, or (without DP noise in it) a norm
        beyond ``federation.max_update_norm``, which no mean of valid updates can exceed."""
        if not all(bool(torch.isfinite(t).all()) for t in mean_delta.values()):
            return "NaN or infinite values"
        if self.privacy is None and l2_norm(mean_delta) > norm_bound(self.rules, 0):
            return "norm above federation.max_update_norm"
        return None

    def aggregate_evaluate(self, round_num: int, evals: EvalSum) -> dict[str, float]:
        """Means of the clients' held-out loss, from their sum (no single client's figure: the
        spread and the worst clients come from the monitor's DP utility histogram)."""
        if not evals.clients:
            return {}
        out = {"eval_loss_mean": evals.loss_sum / evals.clients, "eval_ppl_mean": evals.ppl_sum / evals.clients}
        if evals.personal_clients:
            out["personal_loss_mean"] = evals.personal_loss_sum / evals.personal_clients
        return out
