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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.types import MODES, Alarm, MetricPoint, stream_mode

DETECTORS: tuple[str, ...] = ("cusum", "page_hinkley")
DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "both")
REFERENCES: tuple[str, ...] = ("estimated", "known")
Z_95 = 1.96

DEFAULT_DIRECTIONS: dict[str, str] = {
    # mode defaults, then the streams of ``derive.py`` whose bad direction differs
    "amplified_bias": "increase",  # BBQ bias scores, CrowS stereotype preference grow
    "confidence_miscalibration": "increase",  # ECE grows
    "confidence_miscalibration.accuracy": "decrease",
    "confidence_miscalibration.confidence": "both",
    "fairness_collapse": "increase",  # client loss: mean, worst decile, spread, group gap grow
    "adaptation_misalignment": "increase",  # share of clients that dropped grows
    "adaptation_misalignment.capability_change": "decrease",
    "adaptation_misalignment.refusal_change": "decrease",
    "out_of_domain_degradation": "increase",  # out-of-domain NLL (and its change vs base) grows
    "out_of_domain_degradation.capability_accuracy": "decrease",
    "out_of_domain_degradation.capability_change": "decrease",
    "alignment_erosion": "decrease",  # refusal of harmful prompts falls
    "alignment_erosion.over_refusal_rate": "increase",  # refusal of benign prompts grows
    "alignment_erosion.over_refusal_change": "increase",
}
"""Which change is bad, by mode or by stream prefix (the longest matching key wins)."""


def direction_for(directions: Mapping[str, str], stream: str) -> str:
    """Longest key of ``directions`` equal to ``stream`` or a dotted prefix of it; else ``both``."""
    parts = stream.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in directions:
            return directions[key]
    return "both"


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


def _init_state(shape: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
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


def _step(detector: str, st: dict[str, np.ndarray], z: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
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


def _statistic(pos: np.ndarray, neg: np.ndarray, direction: str) -> np.ndarray:
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
    ``z_t = x_t`` for a known one. ``shift`` (monitor/power.py): ``x_1..x_H`` move by
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
    st = _init_state((n_sim,))
    best = np.zeros(n_sim)
    for t in range(horizon_rounds):
        pos, neg = _step(detector, st, z[:, t], drift_k)
        best = np.maximum(best, _statistic(pos, neg, direction))
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


# ----------------------------------------------------------------------------


@dataclass
class _Stream:
    reference: float
    reference_std: float
    last_round: int
    state: dict[str, np.ndarray]

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "reference_std": self.reference_std,
            "last_round": self.last_round,
            "state": {k: float(v) for k, v in self.state.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> _Stream:
        state = _init_state()
        state.update({k: np.asarray(float(v)) for k, v in d["state"].items()})
        return cls(float(d["reference"]), float(d["reference_std"]), int(d["last_round"]), state)


class DetectorBank:
    """One detector per stream, created on the stream's first point (its reference).

    ``threshold`` applies to one-sided streams and ``threshold_two_sided``
    (default: ``threshold``) to streams whose direction is ``"both"``;
    calibrate each with :func:`calibrate_threshold` (``direction`` matters:
    two-sided needs a higher ``h``). ``directions`` maps a mode or a stream
    prefix to ``increase`` / ``decrease`` / ``both``; the longest matching key
    wins, unknown streams are two-sided.
    """

    def __init__(
        self,
        detector: str,
        threshold: float,
        drift_k: float,
        directions: Mapping[str, str] | None = None,
        *,
        threshold_two_sided: float | None = None,
        min_std: float = 1e-6,
        reference: str = "estimated",
    ) -> None:
        check_detector_args(detector, reference=reference)
        for key, d in (directions or {}).items():
            check_detector_args(detector, d)
            if key.split(".", 1)[0] not in MODES:
                raise UserError(f"detector direction key '{key}' does not start with a mode ({', '.join(MODES)})")
        if not (math.isfinite(threshold) and threshold >= 0):
            raise UserError(f"detector threshold must be >= 0, got {threshold}")
        if not (min_std > 0):
            raise UserError(f"min_std must be positive, got {min_std}")
        self.detector = detector
        self.threshold = float(threshold)
        self.threshold_two_sided = float(threshold if threshold_two_sided is None else threshold_two_sided)
        self.drift_k = float(drift_k)
        self.directions = dict(DEFAULT_DIRECTIONS if directions is None else directions)
        self.min_std = float(min_std)
        self.reference = reference
        self.calibration: dict[str, float | int | str] = {}
        self.streams: dict[str, _Stream] = {}
        self.last_statistics: dict[str, float] = {}

    @classmethod
    def calibrated(
        cls,
        detector: str,
        drift_k: float,
        horizon_rounds: int,
        target_false_alarm_rate: float,
        generator: np.random.Generator,
        *,
        streams: int = 1,
        directions: Mapping[str, str] | None = None,
        n_sim: int = 20000,
        reference: str = "estimated",
        min_std: float = 1e-6,
    ) -> DetectorBank:
        """A bank whose one- and two-sided thresholds come from :func:`calibrate_threshold`.

        The calibration settings are kept in ``self.calibration`` (and in
        :meth:`config`) so the report can state how ``h`` was set.
        """
        args = (detector, drift_k, horizon_rounds, target_false_alarm_rate, generator, n_sim)
        h1 = calibrate_threshold(*args, streams=streams, reference=reference)
        h2 = calibrate_threshold(*args, streams=streams, reference=reference, direction="both")
        bank = cls(detector, h1, drift_k, directions, threshold_two_sided=h2, min_std=min_std, reference=reference)
        bank.calibration = {
            "method": "monte_carlo_null",
            "target_false_alarm_rate": float(target_false_alarm_rate),
            "streams": int(streams),
            "per_stream_rate": float(target_false_alarm_rate) / streams,
            "horizon_rounds": int(horizon_rounds),
            "n_sim": int(n_sim),
        }
        return bank

    def direction(self, stream: str) -> str:
        return direction_for(self.directions, stream)

    def threshold_for(self, stream: str) -> float:
        return self.threshold_two_sided if self.direction(stream) == "both" else self.threshold

    def update(self, round: int, points: Mapping[str, MetricPoint]) -> list[Alarm]:
        """Feed one round; return the alarms it raised (sorted by stream).

        A stream's first finite point becomes its reference and cannot alarm.
        Points with a non-finite value are skipped. A round already seen for a
        stream raises ``ValueError`` (resume must not replay).
        """
        alarms: list[Alarm] = []
        for name in sorted(points):
            p = points[name]
            if not math.isfinite(float(p.value)):
                continue
            s_t = interval_std(p, self.min_std)
            st = self.streams.get(name)
            if st is None:
                self.streams[name] = _Stream(float(p.value), s_t, int(round), _init_state())
                self.last_statistics[name] = 0.0
                continue
            if round <= st.last_round:
                raise ValueError(f"stream {name}: round {round} after round {st.last_round}")
            st.last_round = int(round)
            scale = math.sqrt(s_t**2 + st.reference_std**2) if self.reference == "estimated" else s_t
            z = (float(p.value) - st.reference) / scale
            pos, neg = _step(self.detector, st.state, np.asarray(z), self.drift_k)
            direction = self.direction(name)
            stat = float(_statistic(pos, neg, direction))
            self.last_statistics[name] = stat
            h = self.threshold_for(name)
            if stat > h:
                alarms.append(
                    Alarm(
                        mode=stream_mode(name),
                        stream=name,
                        round=int(round),
                        magnitude=stat,
                        detector=self.detector,
                        threshold=h,
                        evidence={
                            "value": float(p.value),
                            "reference": st.reference,
                            "z": z,
                            "std": scale,
                            "statistic": stat,
                            "threshold": h,
                        },
                    )
                )
                st.state = _init_state()
        return alarms

    def config(self) -> dict:
        """The settings (no per-stream state): enough to rebuild an empty bank."""
        return {
            "detector": self.detector,
            "threshold": self.threshold,
            "threshold_two_sided": self.threshold_two_sided,
            "drift_k": self.drift_k,
            "directions": dict(self.directions),
            "min_std": self.min_std,
            "reference": self.reference,
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_config(cls, cfg: Mapping) -> DetectorBank:
        bank = cls(
            cfg["detector"],
            float(cfg["threshold"]),
            float(cfg["drift_k"]),
            cfg.get("directions"),
            threshold_two_sided=cfg.get("threshold_two_sided"),
            min_std=float(cfg.get("min_std", 1e-6)),
            reference=cfg.get("reference", "estimated"),
        )
        bank.calibration = dict(cfg.get("calibration", {}))
        return bank

    def to_dict(self) -> dict:
        """JSON-ready state for resume: settings plus every stream's recursion."""
        return {
            **self.config(),
            "streams": {k: v.to_dict() for k, v in sorted(self.streams.items())},
            "last_statistics": dict(sorted(self.last_statistics.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> DetectorBank:
        try:
            bank = cls.from_config(data)
            bank.streams = {k: _Stream.from_dict(v) for k, v in data.get("streams", {}).items()}
            bank.last_statistics = {k: float(v) for k, v in data.get("last_statistics", {}).items()}
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"detector state is malformed ({type(e).__name__}: {e})") from e
        return bank
