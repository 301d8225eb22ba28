"""Detectable shifts (monitor/detection/power.py) against the cases worked out by hand."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from openpfi.errors import UserError
from openpfi.monitor.detection.cusum import calibrate_threshold
from openpfi.monitor.detection.power import detectable_shift, detection_probability, stream_detectability

N = 20000
SE = 3 * math.sqrt(0.25 / N)  # 3 standard errors of a Monte Carlo probability


@pytest.mark.parametrize("d", [1.0, 2.5, 3.3])
def test_one_round_cusum_known_reference_is_a_normal_tail(d: float):
    # statistic = max(0, x_1 - k), x_1 ~ N(d, 1): P(alarm) = P(x_1 > h + k) = Phi(d - h - k)
    h, k = 2.0, 0.5
    p = detection_probability("cusum", h, k, 1, d, reference="known", n_sim=N)
    assert p == pytest.approx(norm.cdf(d - h - k), abs=SE)


def test_even_odds_shift_of_one_known_round_is_threshold_plus_drift():
    assert detectable_shift("cusum", 2.0, 0.5, 1, reference="known", n_sim=N) == pytest.approx(2.5, abs=0.03)
    # 80% power: Phi(d - 2.5) = 0.8 -> d = 2.5 + 0.8416
    assert detectable_shift("cusum", 2.0, 0.5, 1, reference="known", power=0.8, n_sim=N) == pytest.approx(
        2.5 + norm.ppf(0.8), abs=0.04)


def test_one_estimated_round_halves_the_signal_to_noise_by_sqrt_two():
    # z_1 = (x_1 - x_0) / sqrt(2) with x_1 ~ N(d, 1): z_1 ~ N(d / sqrt(2), 1) -> even odds at d = sqrt(2) (h + k)
    assert detectable_shift("cusum", 2.0, 0.5, 1, n_sim=N) == pytest.approx(math.sqrt(2) * 2.5, abs=0.05)


def test_no_shift_alarms_at_the_calibrated_false_alarm_rate():
    import numpy as np

    h = calibrate_threshold("cusum", 1.5, 3, 0.05, np.random.default_rng(1), n_sim=N)
    assert detection_probability("cusum", h, 1.5, 3, 0.0, n_sim=N, seed=2) == pytest.approx(0.05, abs=0.01)


def test_a_decrease_detector_sees_a_fall_and_more_rounds_need_less_shift():
    down = detectable_shift("cusum", 5.7, 1.5, 3, direction="decrease")
    up = detectable_shift("cusum", 5.7, 1.5, 3)
    assert down == pytest.approx(up, abs=0.1)  # the same test mirrored
    assert detectable_shift("cusum", 5.7, 1.5, 6) < up < detectable_shift("cusum", 5.7, 1.5, 2)


def test_detectable_shift_rejects_bad_settings():
    with pytest.raises(UserError, match="power"):
        detectable_shift("cusum", 2.0, 0.5, 1, power=1.0)
    with pytest.raises(UserError, match="detector"):
        detection_probability("ewma", 2.0, 0.5, 1, 1.0)


def test_stream_detectability_in_the_streams_units():
    # points with interval half-width 1.96 * 0.3 -> round std 0.3; the reference as noisy (ratio 1)
    pts = [{"round": r, "value": 0.5, "lo": 0.5 - 1.96 * 0.3, "hi": 0.5 + 1.96 * 0.3} for r in (1, 2, 3, 4)]
    det = {"detector": "cusum", "drift_k": 1.5, "reference": "estimated", "min_std": 1e-6}
    got = stream_detectability(pts, det, 5.7, "increase")
    assert got is not None
    assert got["round_std"] == pytest.approx(0.3) and got["reference_std"] == pytest.approx(0.3)
    assert got["shift"] == pytest.approx(0.3 * detectable_shift("cusum", 5.7, 1.5, 3))
    assert stream_detectability(pts[:1], det, 5.7, "increase") is None
