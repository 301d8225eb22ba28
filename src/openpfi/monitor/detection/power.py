"""How large a change the monitor can see: the detectable shift of a change-detector stream.

A stream's points have a per-round std ``s`` (sampling plus DP noise: its interval's half-width
/ 1.96, ``detectors.interval_std``). A constant shift ``d`` from the onset on is detected within
``R`` rounds with probability ``P(d) = P(max_{t <= R} statistic_t > h)`` under the null model
of ``detectors.calibrate_threshold`` with the shift added: ``x_0 ~ N(0, 1)`` (the reference
round), ``x_t ~ N(d / s, 1)`` after onset, ``z_t = (x_t - r x_0) / sqrt(1 + r^2)`` for an
estimated reference (``r = s_0 / s``), ``z_t = x_t`` for a known one.

:func:`detectable_shift` is the smallest ``d / s`` with ``P >= power`` (Monte Carlo with common
random numbers, so ``P`` is monotone in ``d`` and bisection is exact on the sample). One case
is exact by hand: CUSUM, known reference, ``R = 1``: the statistic is ``max(0, x_1 - k)`` with
``x_1 ~ N(d / s, 1)``, so ``P = Phi(d / s - h - k)`` and the even-odds shift is ``h + k``.

:func:`stream_detectability` turns that into the stream's own units for the streams of a run:
with the client count and privacy budget of a run fixed, it says which changes its client
streams could have seen at all (e.g. at 12 clients and epsilon 8 the DP noise on a client
mean in [-1, 1] is ~0.3 per round, and the even-odds shift within 3 rounds is larger than
the range: such a stream cannot alarm on anything real).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.detection.cusum import check_detector_args, interval_std, simulate_max_statistic
from openpfi.monitor.types import MetricPoint

DETECTION_ROUNDS = 3
"""Rounds after onset the detectable shift is computed for (the silent benchmark's target)."""


def detection_probability(detector: str, threshold: float, drift_k: float, rounds: int, shift: float, *,
                          direction: str = "increase", reference: str = "estimated",
                          reference_std_ratio: float = 1.0, n_sim: int = 4000, seed: int = 0) -> float:
    """``P(an alarm within rounds | a constant shift of shift standard deviations from round 1)``.

    ``shift`` is signed in the bad direction's sense: > 0 moves the stream the way
    ``direction`` alarms on ("increase" / "both": up, "decrease": down).
    """
    check_detector_args(detector, direction, reference)
    if rounds < 1 or n_sim < 1:
        raise UserError(f"rounds ({rounds}) and n_sim ({n_sim}) must be >= 1")
    best = simulate_max_statistic(detector, drift_k, rounds, np.random.default_rng(seed), n_sim, direction,
                                   reference, reference_std_ratio, shift)
    return float(np.mean(best > threshold))


@lru_cache(maxsize=256)
def detectable_shift(detector: str, threshold: float, drift_k: float, rounds: int = DETECTION_ROUNDS, *,
                     power: float = 0.5, direction: str = "increase", reference: str = "estimated",
                     reference_std_ratio: float = 1.0, n_sim: int = 4000, seed: int = 0) -> float:
    """Smallest constant shift, in standard deviations of one round's point, that is detected
    within ``rounds`` rounds of onset with probability >= ``power`` (bisection to 1e-3)."""
    if not 0 < power < 1:
        raise UserError(f"power must be in (0, 1), got {power}")

    def p(d: float) -> float:
        return detection_probability(detector, threshold, drift_k, rounds, d, direction=direction,
                                     reference=reference, reference_std_ratio=reference_std_ratio,
                                     n_sim=n_sim, seed=seed)

    lo, hi = 0.0, 1.0
    if p(lo) >= power:
        return 0.0
    while p(hi) < power:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if p(mid) >= power else (mid, hi)
    return hi


def _std(point: Mapping[str, Any], min_std: float) -> float | None:
    if any(point.get(k) is None for k in ("value", "lo", "hi")):
        return None
    s = interval_std(MetricPoint(float(point["value"]), float(point["lo"]), float(point["hi"]), 1), min_std)
    return s if math.isfinite(s) else None


def stream_detectability(series: Sequence[Mapping[str, Any]], detector: Mapping[str, Any], threshold: float,
                         direction: str, rounds: int = DETECTION_ROUNDS, power: float = 0.5) -> dict[str, Any] | None:
    """The even-odds (``power``) detectable shift of one change-detector stream, in its own units.

    ``series``: its points ``[{round, value, lo, hi}]`` (the first finite one is the reference);
    ``detector``: a ``DetectorBank.config()`` dict; ``threshold``, ``direction``: the stream's.
    The round std is the median over the points after the reference. None when the stream has
    fewer than two points.
    """
    min_std = float(detector.get("min_std", 1e-6))
    stds = [s for s in (_std(p, min_std) for p in series) if s is not None]
    if len(stds) < 2:
        return None
    s_t = statistics.median(stds[1:])
    ratio = stds[0] / s_t
    d = detectable_shift(str(detector["detector"]), float(threshold), float(detector["drift_k"]), rounds,
                         power=power, direction=direction, reference=str(detector.get("reference", "estimated")),
                         reference_std_ratio=round(ratio, 2))
    return {"round_std": s_t, "reference_std": stds[0], "shift_in_std": d, "shift": d * s_t,
            "rounds": rounds, "power": power}

