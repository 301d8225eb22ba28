"""The privacy ledger of the adapter updates (client-level DP, DP-FedAvg), and ``privacy.json`` as a whole.

Each round whose updates were clipped to ``C`` and noised is one mechanism on the clients'
data. Its RDP (algorithms/privacy.py ``round_rdp``) is the Sampled Gaussian Mechanism of the
noised SUM at sampling rate ``q`` (Poisson sampling of clients; ``q = 1`` when every client
takes part), or, when a robust aggregator needs each client's noised update on its own
("local" noise), the sampled mixture of per-client Gaussians. Rounds compose additively in
RDP and convert to ``(eps, delta)`` like the monitor's ledger. When fewer noise shares arrive
than planned (distributed noise under SecAgg+, client dropouts) the round is charged at the
effective multiplier ``z * sqrt(n_received / n_planned)``.

Adjacency: one client's data replaced by none (the client then contributes a zero update),
McMahan et al. 2018's user-level adjacency; the guarantee is for whoever sees the global
adapters, not the server's own records (which list the sampled clients).

``privacy.json`` holds the monitor's ledger at its top level (monitor/privacy.py), this ledger
under ``"updates"`` and, under ``"combined"``, the epsilon of both together: the two
mechanisms touch the same clients, so their RDP curves add order by order before the
conversion (same delta, same orders). Each writer keeps the other's part
(:func:`merge_privacy_file`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.algorithms.privacy import DEFAULT_ORDERS, gaussian_rdp, rdp_to_epsilon, round_rdp
from openpfi.errors import UserError
from openpfi.monitor.audit import atomic_write_text

LEDGER_FILE = "privacy.json"
UPDATES = "updates"
COMBINED = "combined"
MODES = ("central", "distributed", "local")


@dataclass(frozen=True)
class UpdateRound:
    """One released round of the updates' mechanism."""

    round: int
    noise_multiplier: float
    """Configured z: noise std on the sum is z * clip."""
    effective_noise_multiplier: float
    """z * sqrt(n_received / n_planned): what the ledger charged."""
    sampling_rate: float
    """q: each client took part with this probability (Poisson); 1 = every client."""
    clip: float
    mode: str
    """central (the server noises the sum), distributed (per-client shares, summed), local (each update noised)."""
    n_clients: int
    """Valid updates in the release."""
    epsilon_round: float
    epsilon_total: float


class UpdateLedger:
    """RDP accountant over the rounds whose updates were released under DP."""

    def __init__(self, delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        if not 0 < delta < 1:
            raise UserError(f"privacy.delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.orders = tuple(float(a) for a in orders)
        self.entries: list[UpdateRound] = []
        self.rdp = np.zeros(len(self.orders))

    @property
    def epsilon_total(self) -> float:
        return self.entries[-1].epsilon_total if self.entries else 0.0

    def record(self, round_index: int, noise_multiplier: float, sampling_rate: float, clip: float, mode: str,
               n_clients: int, effective_noise_multiplier: float | None = None) -> UpdateRound:
        if self.entries and round_index <= self.entries[-1].round:
            raise UserError(f"update privacy ledger already has round {self.entries[-1].round}; got {round_index}")
        if mode not in MODES:
            raise UserError(f"update noise mode must be one of {list(MODES)}, got {mode!r}")
        z_eff = noise_multiplier if effective_noise_multiplier is None else effective_noise_multiplier
        if not (math.isfinite(z_eff) and z_eff > 0 and math.isfinite(clip) and clip > 0 and n_clients >= 0):
            raise UserError(f"round {round_index}: bad update privacy parameters z = {z_eff}, C = {clip}")
        per_round = round_rdp(z_eff, sampling_rate, mode == "local", self.orders)
        self.rdp = self.rdp + per_round
        entry = UpdateRound(
            round=int(round_index),
            noise_multiplier=float(noise_multiplier),
            effective_noise_multiplier=float(z_eff),
            sampling_rate=float(sampling_rate),
            clip=float(clip),
            mode=mode,
            n_clients=int(n_clients),
            epsilon_round=rdp_to_epsilon(per_round, self.orders, self.delta)[0],
            epsilon_total=rdp_to_epsilon(self.rdp, self.orders, self.delta)[0],
        )
        self.entries.append(entry)
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "accountant": "rdp-sampled-gaussian (Mironov, Talwar & Zhang 2019)",
            "sampling": "poisson" if any(e.sampling_rate < 1 for e in self.entries) else "every client, every round",
            "adjacency": "one client's data replaced by none (user-level, zero-out)",
            "delta": self.delta,
            "orders": list(self.orders),
            "epsilon_total": self.epsilon_total,
            "rounds_released": len(self.entries),
            "rounds": [asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpdateLedger:
        """Rebuild by replaying the rounds (totals recomputed, not trusted)."""
        try:
            ledger = cls(float(data["delta"]), data.get("orders", DEFAULT_ORDERS))
            for r in data["rounds"]:
                ledger.record(int(r["round"]), float(r["noise_multiplier"]), float(r["sampling_rate"]),
                              float(r["clip"]), str(r["mode"]), int(r["n_clients"]),
                              float(r["effective_noise_multiplier"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"update privacy ledger is malformed ({type(e).__name__}: {e})") from e
        return ledger

    def truncated(self, last_round: int) -> UpdateLedger:
        """The ledger as it stood after ``last_round`` (a resume drops what followed)."""
        data = self.to_dict()
        data["rounds"] = [r for r in data["rounds"] if r["round"] <= last_round]
        return UpdateLedger.from_dict(data)


def _monitor_rdp(monitor: Mapping[str, Any], orders: Sequence[float]) -> np.ndarray:
    """The monitor's RDP curve replayed from its released rounds (plain Gaussian at z_eff each)."""
    total = np.zeros(len(orders))
    for r in monitor.get("rounds", []):
        if r.get("released"):
            total = total + gaussian_rdp(float(r["effective_noise_multiplier"]), orders)
    return total


def combined_section(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Both mechanisms together (None unless the updates' ledger is there)."""
    updates = data.get(UPDATES)
    if not updates:
        return None
    ledger = UpdateLedger.from_dict(updates)
    monitor_on = "rounds" in data and "delta" in data
    if monitor_on and not math.isclose(float(data["delta"]), ledger.delta):
        raise UserError("privacy.json: the monitor's and the updates' ledgers use different delta; restore the file")
    rdp = ledger.rdp + (_monitor_rdp(data, ledger.orders) if monitor_on else 0.0)
    eps = rdp_to_epsilon(rdp, ledger.orders, ledger.delta)[0] if np.any(rdp) else 0.0
    return {
        "epsilon_total": eps,
        "delta": ledger.delta,
        "epsilon_updates": ledger.epsilon_total,
        "epsilon_monitor": float(data["epsilon_total"]) if monitor_on else None,
        "what": "monitor reports and adapter updates composed in RDP (their curves add order by order)",
    }


def merge_privacy_file(path: Path, own: Mapping[str, Any], section: str | None = None) -> Path:
    """Write ``own`` into ``privacy.json`` (top level when ``section`` is None, else under it), keep the
    other writer's part, recompute ``"combined"``. ``path``: the file or its run folder."""
    p = path / LEDGER_FILE if path.is_dir() else path
    try:
        old = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, ValueError):
        old = {}  # a torn or edited file is rewritten from the in-memory ledgers
    if not isinstance(old, dict):
        old = {}
    if section is None:
        data = {**dict(own), **({UPDATES: old[UPDATES]} if UPDATES in old else {})}
    else:
        data = {k: v for k, v in old.items() if k != COMBINED}
        data[section] = dict(own)
    combined = combined_section(data)
    data.pop(COMBINED, None)
    if combined is not None:
        data[COMBINED] = combined
    atomic_write_text(p, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return p


def update_sections(run_dir: Path) -> dict[str, Any]:
    """The ``updates`` and ``combined`` parts of a run's privacy.json ({} without DP of the updates)."""
    try:
        data = json.loads((Path(run_dir) / LEDGER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in (UPDATES, COMBINED) if isinstance(data, dict) and k in data}


def save_update_ledger(run_dir: Path, ledger: UpdateLedger) -> Path:
    return merge_privacy_file(Path(run_dir), ledger.to_dict(), UPDATES)
