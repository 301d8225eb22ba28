"""Client-level DP of the adapter updates on the server (DP-FedAvg, McMahan et al. 2018).

With ``privacy.update_clip = C`` and noise multiplier ``z``, a round releases

    Delta = ( sum_{i in S} clip_C(delta_i) + N(0, (z C)^2 I) ) / m

where ``S`` are the round's valid updates, ``clip_C(x) = x min(1, C / ||x||)`` and ``m`` is the
EXPECTED number of clients per round (``federation.clients_per_round``), fixed so that one
client's update moves the sum by at most ``C`` and the mean by ``C / m`` (the estimator
``f~_f`` of McMahan et al. with unit weights: example counts do not weight the mean under DP).
Where the noise comes from (``mode``):

- ``central``: the server adds ``N(0, (z C)^2 I)`` once to the sum (this module);
- ``distributed``: each of the ``n`` sampled clients adds ``N(0, (z C)^2 / n I)`` to its clipped
  update and only the SecAgg+ sum reaches the server (client/uplink.py, Flower);
- ``local``: a robust aggregator needs each update, so each client adds the full
  ``N(0, (z C)^2 I)`` to its own clipped update and the robust rule is post-processing.

Client sampling. When ``clients_per_round < num_clients`` each client takes part in a round
independently with probability ``q = clients_per_round / num_clients`` (Poisson sampling, the
sampling the accountant covers), drawn from the server's secret (the config's seed is public);
otherwise every client takes part (``q = 1``). Every round is released, whatever the number of
valid updates. The noise is drawn from a generator seeded by the server's secret and the round,
so a resumed run draws the same noise and nobody holding the config can subtract it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openpfi.algorithms.privacy import add_gaussian_noise, clip_l2
from openpfi.algorithms.state import StateDict
from openpfi.client.federated import derive_seed
from openpfi.monitor.update_ledger import UpdateLedger


@dataclass(frozen=True)
class UpdateDP:
    clip: float
    noise_multiplier: float
    sampling_rate: float
    """q = clients_per_round / num_clients (1 = every client every round)."""
    expected_clients: float
    """m: the fixed denominator of the released mean."""
    mode: str
    """central | distributed | local (module docstring)."""
    delta: float

    @property
    def noise_std(self) -> float:
        """Std of the noise on the sum: z C."""
        return self.noise_multiplier * self.clip


class UpdatePrivacy:
    """The server's part of DP-FedAvg: Poisson sampling, the noised mean (central), the ledger."""

    def __init__(self, dp: UpdateDP, secret: bytes | None = None):
        self.dp = dp
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        """Seeds the sampling and the central noise; the run keeps it outside the run folder."""
        self.ledger = UpdateLedger(dp.delta)

    def _seed(self, *parts: object) -> int:
        return derive_seed(self.secret.hex(), *parts)

    def sample(self, client_ids: Sequence[str], round_num: int) -> list[str]:
        """Every client when q = 1; else each independently with probability q."""
        if self.dp.sampling_rate >= 1.0:
            return list(client_ids)
        rng = np.random.default_rng(self._seed("update-sampling", round_num))
        keep = rng.random(len(client_ids)) < self.dp.sampling_rate
        return [c for c, k in zip(client_ids, keep, strict=True) if k]

    def noised_mean(self, deltas: Sequence[StateDict], like: StateDict, round_num: int) -> StateDict:
        """``(sum_i clip_C(delta_i) + N(0, (z C)^2 I)) / m`` (central mode), float64 sum, ``like``'s dtypes."""
        total = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in like.items()}
        for d in deltas:
            clipped, _ = clip_l2(d, self.dp.clip)
            for k in total:
                total[k] += clipped[k].detach().to("cpu", torch.float64)
        gen = torch.Generator().manual_seed(self._seed("update-noise", round_num))
        noised = add_gaussian_noise({k: v.float() for k, v in total.items()}, self.dp.noise_std, gen)
        return {k: (noised[k].double() / self.dp.expected_clients).to(like[k].dtype) for k in like}

    def record(self, round_num: int, received: int, planned: int) -> dict[str, float]:
        """Charge the round; ``planned``: the clients the noise shares were sized for (distributed)."""
        z = self.dp.noise_multiplier
        z_eff = z * math.sqrt(received / planned) if self.dp.mode == "distributed" and 0 < received < planned else z
        e = self.ledger.record(round_num, z, self.dp.sampling_rate, self.dp.clip, self.dp.mode, received, z_eff)
        return {"update_epsilon_round": e.epsilon_round, "update_epsilon_total": e.epsilon_total}

    def meta(self) -> dict[str, Any]:
        return self.ledger.to_dict()

    def load_meta(self, meta: dict[str, Any] | None) -> None:
        self.ledger = UpdateLedger.from_dict(meta) if meta else UpdateLedger(self.dp.delta)
