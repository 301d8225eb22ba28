"""Distributed differential privacy for monitor reports, and the privacy ledger.

A client's monitor report is a fixed-length vector ``v`` of bounded counts and
sums. Before it leaves the client::

    v_clip  = clip_l2(clamp(v, lo, hi), C)          # ||v_clip||_2 <= C
    report  = v_clip + N(0, (z C)^2 / n  I)          # client_noise

so the server-side sum of ``n`` reports is ``sum_i v_clip_i + N(0, (z C)^2 I)``:
one Gaussian mechanism with L2 sensitivity ``C`` under add/remove-one-client
adjacency and noise multiplier ``z`` (distributed DP; Kairouz, Liu & Steinke
2021, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", here with continuous Gaussian shares). No single report
carries the full noise, so the individual reports must only be seen summed
(SecAgg+ on Flower; the in-process engine only ever hands the server the sum).

Slots with their own budget (``ReportSchema.own_budget``, e.g. the within-round degradation
indicator of adaptation misalignment) stay outside the clip: bounded by ``B`` on their own, they
get noise std ``z B / sqrt(f)`` and the clipped slots ``z C / sqrt(1 - f)`` (``split_noise``,
``f = privacy.adaptation_share``). Two Gaussian mechanisms on one report compose in RDP to
``alpha / 2 (C^2 / sigma_C^2 + B^2 / sigma_B^2) = alpha / (2 z^2)``: the round costs what one
mechanism with multiplier ``z`` costs, and the ledger below is unchanged.

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
from openpfi.monitor.update_ledger import merge_privacy_file

LEDGER_FILE = "privacy.json"
LEDGER_VERSION = 1

ArrayLike = float | Sequence[float] | np.ndarray


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive number, got {value}")


def clip_vector(v: ArrayLike, lo: ArrayLike, hi: ArrayLike, l2_max: float,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Clamp each slot to ``[lo, hi]``, then clip the L2 norm to ``l2_max``.

    ``u = clamp(v, lo, hi)``; ``out = u * min(1, l2_max / ||u||_2)`` (the
    clipping of Abadi et al. 2016 / McMahan et al. 2018); with ``mask``, the norm and the
    scaling cover only the slots where it is True (the others are only clamped). A zero vector is
    returned unchanged (no division by a zero norm). NaN slots cannot be
    bounded and raise ``UserError``. When ``0`` lies in every ``[lo, hi]`` the
    L2 step keeps every slot inside its bounds. Returns float64.
    """
    _check_positive("l2_max", l2_max)
    x = np.asarray(v, dtype=np.float64)
    if np.isnan(x).any():
        raise UserError("monitor report has NaN values: cannot clip it")
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64), x.shape)
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64), x.shape)
    if np.any(lo_a > hi_a):
        raise UserError("monitor report bounds have lo > hi in some slot")
    u = np.clip(x, lo_a, hi_a)
    inside = np.ones(u.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    norm = float(np.linalg.norm(u[inside]))
    if norm > l2_max:
        u = np.where(inside, u * (l2_max / norm), u)
    return u


def split_noise(noise_multiplier: float, l2_clip: float, own_bound: float, share: float) -> tuple[float, float]:
    """(std on the sum of the clipped slots, std on the sum of the own-budget slots).

    Without own-budget slots (``own_bound`` = 0) the clipped slots take the whole budget: ``z C``.
    Otherwise ``z C / sqrt(1 - share)`` and ``z B / sqrt(share)`` (module docstring).
    """
    if not 0 < share < 1:
        raise UserError(f"privacy.adaptation_share must be in (0, 1), got {share}")
    if own_bound <= 0:
        return noise_multiplier * l2_clip, 0.0
    return noise_multiplier * l2_clip / math.sqrt(1 - share), noise_multiplier * own_bound / math.sqrt(share)


def client_noise(dim: int, noise_std_sum: ArrayLike, n_clients: int, generator: np.random.Generator) -> np.ndarray:
    """One client's noise share: ``N(0, noise_std_sum^2 / n_clients  I_dim)``.

    The sum of ``n_clients`` independent shares is ``N(0, noise_std_sum^2 I)``; a vector
    ``noise_std_sum`` gives each slot its own std.
    ``noise_std_sum = noise_multiplier * l2_max`` (see :func:`noise_std_sum`).
    Drawn from the passed generator only (never the global random state).
    """
    if dim < 0:
        raise UserError(f"report length must be >= 0, got {dim}")
    if n_clients < 1:
        raise UserError(f"n_clients must be >= 1, got {n_clients}")
    std = np.asarray(noise_std_sum, dtype=np.float64)
    if not (np.all(np.isfinite(std)) and np.all(std >= 0)):
        raise UserError(f"noise std must be >= 0, got {noise_std_sum}")
    return generator.normal(0.0, std / math.sqrt(n_clients), size=dim)


def noise_std_sum(noise_multiplier: float, l2_max: float) -> float:
    """Standard deviation of the noise on the summed reports: ``sigma = z * C``."""
    return noise_multiplier * l2_max


def privatize_report(
    v: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    *,
    l2_max: float,
    noise_multiplier: float,
    n_clients: int,
    generator: np.random.Generator,
) -> np.ndarray:
    """Client side in one call: ``clip_vector(v) + client_noise(...)``."""
    clipped = clip_vector(v, lo, hi, l2_max)
    noise = client_noise(clipped.size, noise_std_sum(noise_multiplier, l2_max), n_clients, generator)
    return clipped + noise.reshape(clipped.shape)


def release_allowed(n_clients: int, min_clients: int) -> bool:
    """The ``min_clients`` rule: an aggregate is released only if ``n_clients >= min_clients``."""
    if min_clients < 1:
        raise UserError(f"privacy.min_clients must be >= 1, got {min_clients}")
    return n_clients >= min_clients


def validate_report(
    vec: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    expected_len: int,
    noise_std_client: ArrayLike,
    k: float = 6.0,
) -> str | None:
    """Why a received client report must be rejected (one line), or ``None``.

    A report is rejected when it has the wrong length, non-finite values, or a
    slot outside ``[lo - k * std, hi + k * std]`` where ``std`` is the client's
    noise share ``noise_std_sum / sqrt(n)``. The exact bounds ``[lo, hi]``
    cannot be enforced on a noised value: Gaussian noise is unbounded, so an
    honest report only lies within ``k`` standard deviations of its bounds
    with probability ``1 - 2 Phi(-k)`` per slot (``k = 6``: about ``2e-9``
    false rejections per slot). The check stops gross corruption and scaled
    or shifted reports, not a careful poisoner that stays inside the band.
    """
    x = np.asarray(vec, dtype=np.float64).reshape(-1)
    if x.size != expected_len:
        return f"report has {x.size} values, expected {expected_len}"
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        return f"report has non-finite values in {bad.size} slot(s), first at slot {int(bad[0])}"
    std = np.maximum(np.asarray(noise_std_client, dtype=np.float64).reshape(-1), 0.0)
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1), x.shape) - k * std
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1), x.shape) + k * std
    out = np.flatnonzero((x < lo_a) | (x > hi_a))
    if out.size:
        i = int(out[0])
        return (
            f"report value {x[i]:.6g} at slot {i} is outside [{lo_a[i]:.6g}, {hi_a[i]:.6g}] "
            f"(bounds widened by {k:g} noise std); {out.size} slot(s) out of range"
        )
    return None


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
        _check_positive("privacy.noise_multiplier", noise_multiplier)
        _check_positive("privacy.l2_max", l2_max)
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
