"""One change detector per client-report stream (the recursions and their calibration: ``cusum.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor import modes
from openpfi.monitor.detection.cusum import (
    calibrate_threshold,
    check_detector_args,
    init_state,
    interval_std,
    one_sided,
    step,
)
from openpfi.monitor.types import Alarm, MetricPoint, StreamName


def direction_for(table: Mapping[str, str], stream: str) -> str:
    """The bad direction of ``stream`` in a bank's ``table``: the entry for the stream itself, else
    for its ``<mode>.<metric>``, else for its mode; ``both`` for a stream of no known mode."""
    name = StreamName.parse(stream)
    for key in (str(name), name.key, name.mode):
        if key in table:
            return table[key]
    return "both"


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
        state = init_state()
        state.update({k: np.asarray(float(v)) for k, v in d["state"].items()})
        return cls(float(d["reference"]), float(d["reference_std"]), int(d["last_round"]), state)


class DetectorBank:
    """One detector per stream, created on the stream's first point (its reference).

    ``threshold`` applies to one-sided streams and ``threshold_two_sided``
    (default: ``threshold``) to streams whose direction is ``"both"``;
    calibrate each with :func:`calibrate_threshold` (``direction`` matters:
    two-sided needs a higher ``h``). ``directions`` maps a mode, a ``<mode>.<metric>`` or
    a stream to ``increase`` / ``decrease`` / ``both`` (:func:`direction_for`; default: the
    modes' own, ``modes.directions()``); streams of no known mode are two-sided.
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
            if key.partition(".")[0] not in modes.MODES:
                raise UserError(f"detector direction key '{key}' does not start with a mode ({', '.join(modes.MODES)})")
        if not (math.isfinite(threshold) and threshold >= 0):
            raise UserError(f"detector threshold must be >= 0, got {threshold}")
        if not (min_std > 0):
            raise UserError(f"min_std must be positive, got {min_std}")
        self.detector = detector
        self.threshold = float(threshold)
        self.threshold_two_sided = float(threshold if threshold_two_sided is None else threshold_two_sided)
        self.drift_k = float(drift_k)
        self.directions = dict(modes.directions() if directions is None else directions)
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
                self.streams[name] = _Stream(float(p.value), s_t, int(round), init_state())
                self.last_statistics[name] = 0.0
                continue
            if round <= st.last_round:
                raise ValueError(f"stream {name}: round {round} after round {st.last_round}")
            st.last_round = int(round)
            scale = math.sqrt(s_t**2 + st.reference_std**2) if self.reference == "estimated" else s_t
            z = (float(p.value) - st.reference) / scale
            pos, neg = step(self.detector, st.state, np.asarray(z), self.drift_k)
            direction = self.direction(name)
            stat = float(one_sided(pos, neg, direction))
            self.last_statistics[name] = stat
            h = self.threshold_for(name)
            if stat > h:
                alarms.append(
                    Alarm(
                        mode=StreamName.parse(name).mode,
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
                st.state = init_state()
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
