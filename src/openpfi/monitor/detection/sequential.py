"""Evidence accumulated across rounds for the global model's paired tests: a CUSUM over the standardized
excess change of each round, on a fresh block of public items each round.

The server's public sample of a suite is split into ``B`` blocks (``monitor.server_blocks``); round t
scores block ``b(t) = (t - 1) mod B`` of every suite, and round 0 scores them all. A stream's paired
change at round t is taken on the items of that round's block, against the same items at round 0
(``paired.py``: jackknife error ``se_t`` over the block), and standardized beyond the margin::

    x_t = (s * D_t - delta) / se_t            (s = +1 increase, -1 decrease; |D_t| for "both")

Under the least favourable null (a bad-direction change of exactly ``delta``), x_t is Student t with
``n_b - 1`` degrees of freedom. The blocks hold different items, so rounds on different blocks have
independent sampling errors: that is what makes evidence add up. A block used again (rounds > B)
carries the same sampling error as before at worst; the simulation below uses exactly that, the
most correlated case, so the threshold stays valid. The statistic is Page's CUSUM (Page 1954)::

    S_t = max(0, S_{t-1} + x_t - k)           alarm when S_t > h, then S_t = 0

``h`` is calibrated by Monte Carlo so that P(any alarm within the run's R rounds | null) <= alpha
(:func:`calibrate_threshold`); before a change x_t sits far below 0 (the margin is many standard
errors away), so S_t stays at 0 and a change is met with a fresh statistic.

Power (:func:`detectable_excess`): a bad-direction change of ``delta + mu * se`` from the onset on is
flagged within ``w`` rounds (default 3) with probability ``P(mu)``; the even-odds ``mu*`` turns into a
detectable change ``delta + mu* se`` in the metric's units (``power.py``). Two cases by hand, with
normal noise (``df=None``): one round, ``k = 0``: ``h = z_{1-alpha}`` and ``mu* = h``; one block used
for R rounds, ``k = 0``: every x_t is the same draw, ``S_R = R x``, so ``h = R z_{1-alpha}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from openpfi.errors import UserError

DEFAULT_K = 0.5
"""Allowance in standard errors: tuned for excesses of about 2k per round (a change half a margin
beyond the margin at ``delta / se = 4``)."""


def block_schedule(rounds: int, blocks: int) -> tuple[int, ...]:
    """The block each round 1..``rounds`` scores: ``(t - 1) mod blocks``."""
    if rounds < 1 or blocks < 1:
        raise UserError(f"rounds ({rounds}) and monitor.server_blocks ({blocks}) must be >= 1")
    return tuple((t - 1) % blocks for t in range(1, rounds + 1))


def _noise(rng: np.random.Generator, n_sim: int, blocks: int, df: float | None) -> np.ndarray:
    shape = (n_sim, blocks)
    return rng.standard_normal(shape) if df is None else rng.standard_t(df, shape)


def max_statistic(schedule: Sequence[int], k: float, noise: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """The largest CUSUM statistic over the rounds of ``schedule`` (block per round), per simulation:
    ``x_t = noise[:, b(t)] + shift`` (``noise``: (n_sim, blocks), one draw per block, reused when a block
    is)."""
    s = np.zeros(noise.shape[0])
    best = np.zeros(noise.shape[0])
    for b in schedule:
        s = np.maximum(0.0, s + noise[:, b] + shift - k)
        best = np.maximum(best, s)
    return best


def _check(k: float, alpha: float, n_sim: int) -> None:
    if not (math.isfinite(k) and k >= 0):
        raise UserError(f"the paired tests' allowance k must be >= 0, got {k}")
    if not 0 < alpha < 1:
        raise UserError(f"a false-alarm share must be in (0, 1), got {alpha}")
    if n_sim * alpha < 10:
        raise UserError(f"false-alarm share {alpha:.3g} is too small to calibrate with {n_sim} simulations; "
                        f"use at least {math.ceil(10 / alpha)}")


@lru_cache(maxsize=256)
def calibrate_threshold(schedule: tuple[int, ...], k: float, alpha: float, df: float | None = None,
                        n_sim: int | None = None, seed: int = 0) -> float:
    """``h`` with P(max_t S_t > h | null) <= ``alpha`` over the rounds of ``schedule``: the empirical
    1 - alpha quantile (method "higher") of :func:`max_statistic` in ``n_sim`` seeded simulations
    (default: enough for 50 exceedances)."""
    n = n_sim or max(20000, math.ceil(50 / alpha))
    _check(k, alpha, n)
    noise = _noise(np.random.default_rng(seed), n, max(schedule) + 1, df)
    return float(np.quantile(max_statistic(schedule, k, noise), 1.0 - alpha, method="higher"))


def detection_probability(window: Sequence[int], k: float, h: float, shift: float, df: float | None = None,
                          n_sim: int = 4000, seed: int = 1) -> float:
    """P(an alarm within the rounds of ``window`` | an excess of ``shift`` standard errors in each)."""
    noise = _noise(np.random.default_rng(seed), n_sim, max(window) + 1, df)
    return float(np.mean(max_statistic(window, k, noise, shift) > h))


@lru_cache(maxsize=1024)
def detectable_excess(window: tuple[int, ...], k: float, h: float, df: float | None = None,
                      power: float = 0.5, n_sim: int = 4000, seed: int = 1) -> float:
    """Smallest excess ``mu`` (standard errors per round beyond the margin) flagged within ``window``
    with probability >= ``power``: bisection to 1e-3 on common random numbers (P is monotone in mu)."""
    if not 0 < power < 1:
        raise UserError(f"power must be in (0, 1), got {power}")
    noise = _noise(np.random.default_rng(seed), n_sim, max(window) + 1, df)

    def p(mu: float) -> float:
        return float(np.mean(max_statistic(window, k, noise, mu) > h))

    lo, hi = -h - 10.0, 1.0
    while p(hi) < power:
        lo, hi = hi, 2 * hi + 1
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if p(mid) >= power else (mid, hi)
    return hi


def onset_window(schedule: Sequence[int], rounds: int = 3) -> tuple[int, ...]:
    """The blocks of the ``rounds`` rounds after the worst onset for detection: the onset whose window
    reuses most blocks (fewest independent rounds), at most the run's rounds."""
    n = min(rounds, len(schedule))
    windows = [tuple(schedule[i:i + n]) for i in range(len(schedule) - n + 1)]
    return min(windows, key=lambda w: len(set(w)))


def cusum_step(state: float, x: float, k: float) -> float:
    """``max(0, state + x - k)``."""
    return max(0.0, state + x - k)


class StreamCusums:
    """The CUSUMs of a set of paired streams over one run: state per stream, thresholds per stream's
    degrees of freedom, restarts after an alarm (resume saves and restores ``state``)."""

    def __init__(self, schedule: tuple[int, ...], k: float = DEFAULT_K, alpha: float = 0.0) -> None:
        self.schedule, self.k, self.alpha = schedule, float(k), float(alpha)
        self.state: dict[str, float] = {}

    def block_of(self, round_num: int) -> int:
        """The block round ``round_num`` scores (round 0 scores every block)."""
        return self.schedule[(int(round_num) - 1) % len(self.schedule)] if round_num >= 1 else 0

    def threshold(self, items: int) -> float:
        """The threshold of a stream over ``items`` items a block (Student t, ``items - 1`` df)."""
        return calibrate_threshold(self.schedule, self.k, self.alpha, float(max(items - 1, 1)))

    def step(self, stream: str, excess: float, items: int) -> tuple[float, float]:
        """Advance ``stream`` by one round's standardized excess; (statistic, threshold)."""
        self.state[stream] = cusum_step(self.state.get(stream, 0.0), excess, self.k)
        return self.state[stream], self.threshold(items)

    def restart(self, stream: str) -> None:
        self.state[stream] = 0.0
