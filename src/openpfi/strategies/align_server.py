"""Server side of federated alignment: FedAvg-family aggregation plus drift, or FMGDA.

- sft, dpo, scalarized, firm: every client uploads ONE adapter delta; aggregation is the
  foundation's ``FedServer.aggregate_fit`` (weighted mean + server optimizer).
- fmgda (Yang et al. 2023): client i uploads one delta per objective, d_i^m. The server
  averages each objective over the clients that hold it (weighted by their pairs of that
  objective), ``D^m = sum_i w_i^m d_i^m``, solves MGDA on the Gram matrix of the D^m,
  ``lambda = argmin_{simplex} ||sum_m lambda_m D^m||^2``, and applies ``sum_m lambda_m D^m``
  through the same server optimizer (``FedServer.aggregate_fit`` with ``mean_delta``).

Drift metrics for every method, on each client's effective update (its delta; for FMGDA
``sum_m lambda_m d_i^m``): ``drift_cosine_dispersion``, ``drift_disagreement`` and
``drift_lambda_spread`` (from the clients' reported mean weights, see algorithms/drift.py).
``bytes_up`` is ``sum ClientUpdate.bytes_up``, counted the same way for every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openpfi.algorithms.aggregate import weighted_mean
from openpfi.algorithms.drift import cosine_dispersion, disagreement_share, lambda_spread
from openpfi.algorithms.mgda import gram_matrix, mgda_weights
from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.algorithms.state import StateDict, flatten, l2_norm, scale, zeros_like
from openpfi.algorithms.state import add as add_states
from openpfi.client.messages import ClientUpdate
from openpfi.client.objective_report import ObjectiveFigures
from openpfi.errors import UserError
from openpfi.strategies.server import FedServer, SamplingConfig


class AlignServer(FedServer):
    def __init__(self, opt: ServerOptConfig, sampling: SamplingConfig, objectives: Sequence[str], method: str):
        super().__init__(opt, sampling)
        self.objectives = list(objectives)
        self.method = method

    def aggregate_fit(self, round_num: int, updates: Sequence[ClientUpdate], failures: int = 0,
                      mean_delta: StateDict | None = None) -> dict[str, float]:
        if self.method != "fmgda":
            metrics = super().aggregate_fit(round_num, updates, failures, mean_delta=mean_delta)
            metrics.update(self._drift(updates, [u.delta for u in updates if u.delta]))
            return metrics
        if mean_delta is not None:
            raise UserError("FMGDA needs every client's per-objective deltas; it cannot run under secure "
                            "aggregation (use alignment.method = firm, which uploads one adapter)")
        combined, lam, effective = self._fmgda_direction(round_num, updates)
        # The foundation applies the combined direction through the server optimizer and counts bytes.
        metrics = super().aggregate_fit(round_num, updates, failures, mean_delta=combined)
        metrics["update_norm_mean"] = float(np.mean([l2_norm(e) for e in effective]))
        metrics.update({f"server_lambda_{m}": float(w) for m, w in lam.items()})
        metrics.update(self._drift(updates, effective))
        return metrics

    def _fmgda_direction(self, round_num: int, updates: Sequence[ClientUpdate]
                         ) -> tuple[StateDict, dict[str, float], list[StateDict]]:
        """(sum_m lambda_m D^m, lambda, each client's sum_m lambda_m d_i^m)."""
        shared = set(self.params)
        means: dict[str, StateDict] = {}
        for m in self.objectives:
            have = [u for u in updates if m in u.extra]
            for u in have:
                if set(u.extra[m]) != shared:
                    raise UserError(f"client {u.client_id} sent an FMGDA delta for {m!r} that does not match "
                                    f"the shared adapter; update rejected")
            if have:
                w = [max(float(ObjectiveFigures.from_scalars(u.scalars, [m]).pairs.get(m, 1)), 1e-12) for u in have]
                means[m] = weighted_mean([u.extra[m] for u in have], w)
        if not means:
            raise RuntimeError(f"round {round_num}: no client sent a per-objective delta (FMGDA)")
        names = list(means)
        weights = mgda_weights(gram_matrix([flatten(means[m]) for m in names]))
        lam = {m: float(w) for m, w in zip(names, weights, strict=True)}
        combined = zeros_like(self.params)
        for m in names:
            combined = add_states(combined, scale(means[m], lam[m]))
        effective = []
        for u in updates:
            eff = zeros_like(self.params)
            for m in names:
                if m in u.extra:
                    eff = add_states(eff, scale(u.extra[m], lam[m]))
            effective.append(eff)
        return combined, lam, effective

    def _drift(self, updates: Sequence[ClientUpdate], effective: Sequence[StateDict]) -> dict[str, float]:
        out = {
            "drift_cosine_dispersion": cosine_dispersion(effective),
            "drift_disagreement": disagreement_share(effective),
            "adapters_up_per_client": float(np.mean([1 + len(u.extra) if u.delta else len(u.extra) for u in updates])),
        }
        figures = [ObjectiveFigures.from_scalars(u.scalars, self.objectives) for u in updates]
        rows = [[f.weights[m] for m in self.objectives] for f in figures if set(f.weights) == set(self.objectives)]
        if rows:
            out["drift_lambda_spread"] = lambda_spread(rows)
            for k, m in enumerate(self.objectives):
                out[f"lambda_{m}_mean"] = float(np.mean([r[k] for r in rows]))
        for key in ("grad_cosine", "train_reward_acc"):
            vals = [u.scalars[key] for u in updates if key in u.scalars]
            if vals:
                out[f"{key}_mean"] = float(np.mean(vals))
        for m in self.objectives:
            losses = [f.losses[m] for f in figures if m in f.losses]
            if losses:
                out[f"loss_{m}_mean"] = float(np.mean(losses))
            out[f"clients_missing_{m}"] = float(sum(m in f.missing() for f in figures))
        out["solver_cap_hits"] = float(sum(f.solver_cap_hits for f in figures))
        return out
