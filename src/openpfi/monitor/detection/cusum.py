"""Sequential change detection on the monitor's aggregate streams.

Each stream ``<mode>.<metric>[.<group>]`` is a sequence of
:class:`~openpfi.monitor.types.MetricPoint` ``(value, lo, hi)``. Its first point
(round 0 when measured) is the reference ``mu_0``. Every later point is
standardised::

    s_t = max((hi_t - lo_t) / (2 * 1.96), min_std)     # sampling + DP noise std
    z_t = (x_t - mu_0) / sqrt(s_t^2 + s_0^2)          # reference="estimated"
    z_t = (x_t - mu_0) / s_t                           # reference="known"

``s_0`` is the reference's own std: the reference is a noisy estimate too, so
``x_t - mu_0`` has variance ``s_t^2 + s_0^2``. Under no change every ``z_t`` is
``N(0, 1)`` but they share the reference error (correlation ``1/2`` at equal
widths); the threshold calibration simulates exactly that.

Detectors (both one-sided per direction; two-sided = both sides, alarm on
either):

- CUSUM (Page 1954, "Continuous inspection schemes", Biometrika 41)::

      S+_t = max(0, S+_{t-1} + z_t - k)      S-_t = max(0, S-_{t-1} - z_t - k)

- Page-Hinkley (Page 1954; Hinkley 1971; the running-mean form of Mouss et
  al. 2004 used in stream mining)::

      zbar_t = mean(z_0..z_t)                m+_t = m+_{t-1} + (z_t - zbar_t - k)
      PH+_t = m+_t - min_{i<=t} m+_i         (PH- with z_t - zbar_t negated)

An alarm is raised when the statistic exceeds the threshold ``h``
(``statistic > h``). After an alarm the stream **resets** (it does not latch):
its recursion restarts from the initial state against the same reference
(Page-Hinkley's running mean restarts from ``z_0 = 0``), so a persisting shift
alarms again every few rounds ("still out of control") and each alarm is a
fresh, dated piece of evidence. The false-alarm guarantee of
:func:`calibrate_threshold` is for the first alarm of a stream.
"""

from __future__ import annotations

import math

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.types import MetricPoint

DETECTORS: tuple[str, ...] = ("cusum", "page_hinkley")
DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "both")
REFERENCES: tuple[str, ...] = ("estimated", "known")
Z_95 = 1.96

def interval_std(point: MetricPoint, min_std: float) -> float:
    """``max(max(hi - x, x - lo) / 1.96, min_std)``: the std behind a ~95% interval, floored.

    The larger side is used: an interval clipped to the metric's natural range on one side
    (e.g. a noisy rate at 1.0, ``[0.6, 1.0]``) keeps its full half-width on the other, so
    clipping does not shrink the std (for a symmetric interval this is ``(hi - lo) / 3.92``).
    """
    x, lo, hi = float(point.value), float(point.lo), float(point.hi)
    half = max(hi - x, x - lo)
    s = half / Z_95 if math.isfinite(half) else math.inf
    return max(s, min_std)


def check_detector_args(detector: str, direction: str | None = None, reference: str | None = None) -> None:
    if detector not in DETECTORS:
        raise UserError(f"monitor detector must be one of {', '.join(DETECTORS)}, got '{detector}'")
    if direction is not None and direction not in DIRECTIONS:
        raise UserError(f"detector direction must be one of {', '.join(DIRECTIONS)}, got '{direction}'")
    if reference is not None and reference not in REFERENCES:
        raise UserError(f"detector reference must be one of {', '.join(REFERENCES)}, got '{reference}'")


# ----------------------------------------------------------------------------
# The recursions, on numpy arrays so one code path serves a stream (shape ())
# and the Monte Carlo calibration (shape (n_sim,)).


def init_state(shape: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    zeros = np.zeros(shape)
    return {
        "s_pos": zeros.copy(),  # CUSUM S+
        "s_neg": zeros.copy(),  # CUSUM S-
        "count": np.ones(shape),  # PH: observations in the running mean (reference z_0 = 0)
        "total": zeros.copy(),  # PH: sum of z in the running mean
        "m_pos": zeros.copy(),
        "min_pos": zeros.copy(),
        "m_neg": zeros.copy(),
        "min_neg": zeros.copy(),
    }


def step(detector: str, st: dict[str, np.ndarray], z: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Advance ``st`` in place by one standardised value; return ``(stat_increase, stat_decrease)``."""
    if detector == "cusum":
        st["s_pos"] = np.maximum(0.0, st["s_pos"] + z - k)
        st["s_neg"] = np.maximum(0.0, st["s_neg"] - z - k)
        return st["s_pos"], st["s_neg"]
    st["count"] = st["count"] + 1.0
    st["total"] = st["total"] + z
    mean = st["total"] / st["count"]
    st["m_pos"] = st["m_pos"] + (z - mean - k)
    st["min_pos"] = np.minimum(st["min_pos"], st["m_pos"])
    st["m_neg"] = st["m_neg"] + (mean - z - k)
    st["min_neg"] = np.minimum(st["min_neg"], st["m_neg"])
    return st["m_pos"] - st["min_pos"], st["m_neg"] - st["min_neg"]


def one_sided(pos: np.ndarray, neg: np.ndarray, direction: str) -> np.ndarray:
    if direction == "increase":
        return pos
    if direction == "decrease":
        return neg
    return np.maximum(pos, neg)


def simulate_max_statistic(
    detector: str,
    drift_k: float,
    horizon_rounds: int,
    generator: np.random.Generator,
    n_sim: int,
    direction: str,
    reference: str,
    reference_std_ratio: float = 1.0,
    shift: float = 0.0,
) -> np.ndarray:
    """Max statistic over ``horizon_rounds`` rounds after the reference, per simulation.

    Null: ``x_0..x_H`` iid ``N(0, 1)``, ``r = s_0 / s_t``;
    ``z_t = (x_t - r x_0) / sqrt(1 + r^2)`` for an estimated reference,
    ``z_t = x_t`` for a known one. ``shift`` (monitor/detection/power.py): ``x_1..x_H`` move by
    ``shift`` standard deviations the way ``direction`` alarms on.
    """
    x = generator.standard_normal((n_sim, horizon_rounds + 1))
    if shift:
        x[:, 1:] += -shift if direction == "decrease" else shift
    if reference == "estimated":
        r = reference_std_ratio
        z = (x[:, 1:] - r * x[:, :1]) / math.sqrt(1.0 + r * r)
    else:
        z = x[:, 1:]
    st = init_state((n_sim,))
    best = np.zeros(n_sim)
    for t in range(horizon_rounds):
        pos, neg = step(detector, st, z[:, t], drift_k)
        best = np.maximum(best, one_sided(pos, neg, direction))
    return best


def calibrate_threshold(
    detector: str,
    drift_k: float,
    horizon_rounds: int,
    target_false_alarm_rate: float,
    generator: np.random.Generator,
    n_sim: int = 20000,
    *,
    streams: int = 1,
    direction: str = "increase",
    reference: str = "estimated",
    reference_std_ratio: float = 1.0,
) -> float:
    """Threshold ``h`` with ``P(any alarm within horizon_rounds | no change) <= alpha``.

    ``alpha = target_false_alarm_rate / streams``: the target is a false-alarm
    rate per stream per run; with ``streams = S`` the Bonferroni split
    ``target / S`` bounds the probability of any false alarm over all ``S``
    streams of a run by the target. ``h`` is the empirical ``1 - alpha``
    quantile (method "higher") of the largest statistic over the horizon in
    ``n_sim`` seeded Monte Carlo runs under the null (see
    :func:`simulate_max_statistic`): the DP noise enters through the
    standardisation, which divides by the std that includes it.
    ``reference_std_ratio = s_0 / s_t`` (1: the reference round is as noisy as
    the others; a larger ratio correlates the ``z_t`` more and needs a higher
    ``h``; a more precise reference buys detection power). Needs
    ``n_sim * alpha >= 10`` for a usable quantile.
    """
    check_detector_args(detector, direction, reference)
    if horizon_rounds < 1:
        raise UserError(f"detector horizon must be >= 1 round, got {horizon_rounds}")
    if not 0 < target_false_alarm_rate < 1:
        raise UserError(f"target false-alarm rate must be in (0, 1), got {target_false_alarm_rate}")
    if streams < 1:
        raise UserError(f"streams must be >= 1, got {streams}")
    if not (math.isfinite(drift_k) and drift_k >= 0):
        raise UserError(f"detector drift k must be >= 0, got {drift_k}")
    alpha = target_false_alarm_rate / streams
    if n_sim * alpha < 10:
        raise UserError(
            f"false-alarm rate {alpha:.3g} per stream is too small to calibrate with {n_sim} simulations: "
            f"use at least {math.ceil(10 / alpha)} simulations or a larger target"
        )
    if not (math.isfinite(reference_std_ratio) and reference_std_ratio >= 0):
        raise UserError(f"reference_std_ratio must be >= 0, got {reference_std_ratio}")
    best = simulate_max_statistic(
        detector, drift_k, horizon_rounds, generator, n_sim, direction, reference, reference_std_ratio
    )
    return float(np.quantile(best, 1.0 - alpha, method="higher"))


def false_alarm_rate(
    detector: str,
    threshold: float,
    drift_k: float,
    horizon_rounds: int,
    generator: np.random.Generator,
    n_sim: int = 20000,
    *,
    direction: str = "increase",
    reference: str = "estimated",
    reference_std_ratio: float = 1.0,
) -> float:
    """Monte Carlo ``P(any alarm within horizon_rounds | no change)`` for a given threshold."""
    check_detector_args(detector, direction, reference)
    best = simulate_max_statistic(
        detector, drift_k, horizon_rounds, generator, n_sim, direction, reference, reference_std_ratio
    )
    return float(np.mean(best > threshold))
