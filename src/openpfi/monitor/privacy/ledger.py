"""The privacy ledger of the monitor's releases, and the noise planned for a budget.

Accounting (:class:`PrivacyLedger`): each *released* round is one Gaussian
mechanism, RDP ``alpha / (2 z^2)`` (Mironov 2017), composed additively over
released rounds and converted to ``(eps, delta)`` by
:func:`openpfi.algorithms.privacy.rdp_to_epsilon`. When fewer reports arrive
than the noise shares were sized for (``n_received < n_expected``, client
dropouts) the sum carries only ``n_received / n_expected`` of the planned
variance, and the ledger charges the effective multiplier
``z_eff = z * sqrt(n_received / n_expected)``. A withheld round (fewer clients
than ``min_clients``, :func:`release_allowed`) is never shown to anyone and
costs nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from openpfi.algorithms.privacy import (
    DEFAULT_ORDERS,
    MAX_NOISE_MULTIPLIER,
    epsilon_after,
    gaussian_rdp,
    noise_multiplier_for,
    rdp_to_epsilon,
)
from openpfi.errors import UserError
from openpfi.monitor.privacy.mechanism import check_positive
from openpfi.monitor.update_ledger import merge_privacy_file

LEDGER_FILE = "privacy.json"
LEDGER_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One round of the monitor's privacy ledger."""

    round: int
    noise_multiplier: float
    """Configured ``z``: noise std on the sum is ``z * l2_max``."""
    l2_max: float
    """Per-client L2 clipping bound = sensitivity of the sum."""
    n_clients: int
    """Reports summed this round."""
    released: bool
    epsilon_round: float
    """``eps`` of this round's mechanism alone (0 when withheld)."""
    epsilon_total: float
    """``eps`` of all released rounds so far, composed in RDP."""
    delta: float
    n_expected: int
    """Clients the noise shares were sized for (``>= n_clients``)."""
    effective_noise_multiplier: float
    """``z * sqrt(n_clients / n_expected)``: what the ledger charged."""


class PrivacyLedger:
    """RDP accountant over the monitor's released rounds.

    ``record`` appends one round; ``epsilon_total`` is
    ``rdp_to_epsilon(sum_r alpha / (2 z_r^2), delta)`` over released rounds.
    """

    def __init__(self, delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        if not 0 < delta < 1:
            raise UserError(f"privacy.delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.orders: tuple[float, ...] = tuple(float(a) for a in orders)
        self.entries: list[LedgerEntry] = []
        self._rdp = np.zeros(len(self.orders))

    @property
    def epsilon_total(self) -> float:
        return self.entries[-1].epsilon_total if self.entries else 0.0

    def record(
        self,
        round_index: int,
        noise_multiplier: float,
        l2_max: float,
        n_clients: int,
        released: bool,
        n_expected: int | None = None,
    ) -> LedgerEntry:
        """Charge one round. ``n_expected``: clients the noise shares were sized for."""
        if self.entries and round_index <= self.entries[-1].round:
            raise UserError(f"privacy ledger already has round {self.entries[-1].round}; got round {round_index} again")
        check_positive("privacy.noise_multiplier", noise_multiplier)
        check_positive("privacy.l2_max", l2_max)
        n_exp = n_clients if n_expected is None else n_expected
        if released and not 1 <= n_clients <= n_exp:
            raise UserError(f"round {round_index}: {n_clients} reports received but noise sized for {n_exp} clients")
        z_eff = noise_multiplier * math.sqrt(n_clients / n_exp) if released else noise_multiplier
        eps_round = 0.0
        if released:
            rdp_round = gaussian_rdp(z_eff, self.orders)
            self._rdp = self._rdp + rdp_round
            eps_round = rdp_to_epsilon(rdp_round, self.orders, self.delta)[0]
        eps_total = rdp_to_epsilon(self._rdp, self.orders, self.delta)[0] if self._rdp.any() else 0.0
        entry = LedgerEntry(
            round=int(round_index),
            noise_multiplier=float(noise_multiplier),
            l2_max=float(l2_max),
            n_clients=int(n_clients),
            released=bool(released),
            epsilon_round=float(eps_round),
            epsilon_total=float(eps_total),
            delta=self.delta,
            n_expected=int(n_exp),
            effective_noise_multiplier=float(z_eff),
        )
        self.entries.append(entry)
        return entry

    def to_dict(self) -> dict:
        """JSON-ready content of ``privacy.json``."""
        return {
            "version": LEDGER_VERSION,
            "accountant": "rdp-gaussian",
            "adjacency": "add/remove one client",
            "delta": self.delta,
            "orders": list(self.orders),
            "epsilon_total": self.epsilon_total,
            "rounds_released": sum(e.released for e in self.entries),
            "rounds_withheld": sum(not e.released for e in self.entries),
            "rounds": [asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PrivacyLedger:
        """Rebuild by replaying the rounds (the totals are recomputed, not trusted)."""
        try:
            ledger = cls(float(data["delta"]), data.get("orders", DEFAULT_ORDERS))
            for r in data["rounds"]:
                ledger.record(
                    int(r["round"]),
                    float(r["noise_multiplier"]),
                    float(r["l2_max"]),
                    int(r["n_clients"]),
                    bool(r["released"]),
                    int(r.get("n_expected", r["n_clients"])),
                )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"privacy ledger is malformed ({type(e).__name__}: {e}); restore {LEDGER_FILE}") from e
        stored = data.get("epsilon_total")
        if stored is not None and not math.isclose(float(stored), ledger.epsilon_total, rel_tol=1e-9, abs_tol=1e-12):
            raise UserError(
                f"privacy ledger says epsilon_total {stored} but its rounds add up to {ledger.epsilon_total}; "
                f"the file was edited: restore {LEDGER_FILE}"
            )
        return ledger

    def save(self, path: Path | str) -> Path:
        """Write JSON atomically (temp file in the same folder, fsync, ``os.replace``), keeping the
        updates' ledger that shares the file.

        ``path`` may be the run folder (writes ``privacy.json`` in it) or a file.
        """
        p = Path(path)
        if p.is_dir():
            p = p / LEDGER_FILE
        return merge_privacy_file(p, self.to_dict())  # keeps the updates' ledger (monitor/update_ledger.py)

    @classmethod
    def load(cls, path: Path | str) -> PrivacyLedger:
        p = Path(path)
        if p.is_dir():
            p = p / LEDGER_FILE
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise UserError(f"no privacy ledger at {p}") from e
        except json.JSONDecodeError as e:
            raise UserError(f"privacy ledger {p} is not valid JSON (line {e.lineno}): restore it") from e
        return cls.from_dict(data)


def plan_budget(
    target_epsilon: float,
    delta: float,
    rounds: int,
    *,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """Smallest noise multiplier ``z`` so ``rounds`` released rounds spend at most ``target_epsilon``.

    ``rounds`` counts releases (a reference round 0 plus one per federated
    round counts as ``federation.rounds + 1``). Raises ``UserError`` naming
    ``privacy.target_epsilon`` and ``federation.rounds`` when no
    ``z <= max_noise_multiplier`` meets the target, with the smallest
    reachable epsilon and the largest number of rounds that fits.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise UserError(f"privacy.target_epsilon must be a positive number, got {target_epsilon}")
    if not 0 < delta < 1:
        raise UserError(f"privacy.delta must be in (0, 1), got {delta}")
    if rounds < 1:
        raise UserError(f"federation.rounds must be >= 1 to plan a privacy budget, got {rounds}")
    eps_floor = epsilon_after(max_noise_multiplier, rounds, delta)
    if eps_floor > target_epsilon:
        fit = _max_rounds(target_epsilon, delta, max_noise_multiplier, rounds)
        fix = f"lower federation.rounds to at most {fit}" if fit else "no number of rounds fits"
        raise UserError(
            f"privacy budget cannot be met: privacy.target_epsilon = {target_epsilon:g} over "
            f"{rounds} monitor rounds (federation.rounds) at delta {delta:g} needs a noise multiplier "
            f"above {max_noise_multiplier:g}; raise privacy.target_epsilon to at least {eps_floor:.3g} or {fix}"
        )
    return min(noise_multiplier_for(target_epsilon, rounds, delta), max_noise_multiplier)


def _max_rounds(target: float, delta: float, z: float, upper: int) -> int:
    """Largest ``r < upper`` with ``epsilon_after(z, r) <= target`` (bisection; eps grows with r)."""
    lo, hi = 0, upper  # invariant: eps(lo) <= target < eps(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if epsilon_after(z, mid, delta) <= target:
            lo = mid
        else:
            hi = mid
    return lo
