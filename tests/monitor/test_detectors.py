from __future__ import annotations

import json
import math

import numpy as np
import pytest

from openpfi.errors import UserError
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.detection.cusum import calibrate_threshold, false_alarm_rate, interval_std
from openpfi.monitor.types import MetricPoint

STREAM = "amplified_bias.bias_score.gender"


def pt(x: float, std: float = 1.0) -> MetricPoint:
    """A point whose 95% interval corresponds to ``std``."""
    return MetricPoint(x, x - 1.96 * std, x + 1.96 * std)


def feed(bank: DetectorBank, values: list[float], stream: str = STREAM, std: float = 1.0):
    stats, alarms = [], []
    for r, x in enumerate(values):
        alarms += bank.update(r, {stream: pt(x, std)})
        stats.append(bank.last_statistics[stream])
    return stats, alarms


def test_interval_std_and_floor() -> None:
    assert interval_std(MetricPoint(0.0, -1.96, 1.96), 1e-6) == pytest.approx(1.0)
    assert interval_std(MetricPoint(0.3, 0.3, 0.3), 1e-6) == 1e-6  # zero width is floored


def test_cusum_hand_computed_one_sided() -> None:
    # Prepare: reference 0 with known std 1 -> z_t = x_t; k = 0.5, h = 2.4
    bank = DetectorBank("cusum", 2.4, 0.5, {"amplified_bias": "increase"}, reference="known")
    # Execute: z = 0.2, 1.5, 2.0, -3.0, 1.0 after the reference
    stats, alarms = feed(bank, [0.0, 0.2, 1.5, 2.0, -3.0, 1.0])
    # Assert: S = max(0, S + z - k): 0, 0, 1.0, 2.5 (alarm, reset), 0, 0.5
    np.testing.assert_allclose(stats, [0.0, 0.0, 1.0, 2.5, 0.0, 0.5])
    assert len(alarms) == 1
    a = alarms[0]
    assert (a.mode, a.stream, a.round, a.detector) == ("amplified_bias", STREAM, 3, "cusum")
    assert a.magnitude == pytest.approx(2.5) and a.threshold == 2.4
    assert a.evidence["value"] == 2.0 and a.evidence["reference"] == 0.0
    assert a.evidence["z"] == pytest.approx(2.0) and a.evidence["statistic"] == pytest.approx(2.5)
    assert a.evidence["threshold"] == 2.4


def test_cusum_decrease_and_two_sided() -> None:
    down = DetectorBank("cusum", 10.0, 0.5, {"alignment_erosion": "decrease"}, reference="known")
    stats, _ = feed(down, [0.0, -1.0, -2.0, 1.0], stream="alignment_erosion.refusal_rate")
    np.testing.assert_allclose(stats, [0.0, 0.5, 2.0, 0.5])  # S- = max(0, S- - z - k)
    both = DetectorBank("cusum", 10.0, 0.5, {"alignment_erosion": "both"}, reference="known")
    stats, _ = feed(both, [0.0, -1.0, 3.0], stream="alignment_erosion.refusal_rate")
    np.testing.assert_allclose(stats, [0.0, 0.5, 2.5])  # max(S+, S-): S+ = 2.5, S- = 0


def test_estimated_reference_includes_the_reference_noise() -> None:
    # reference std 1, point std 1 -> z = (x - mu_0) / sqrt(2)
    bank = DetectorBank("cusum", 0.1, 0.0, {"amplified_bias": "increase"})
    _, alarms = feed(bank, [1.0, 3.0])
    assert alarms[0].evidence["z"] == pytest.approx(2.0 / math.sqrt(2.0))
    assert alarms[0].evidence["std"] == pytest.approx(math.sqrt(2.0))


def test_page_hinkley_hand_computed() -> None:
    # Prepare: k = 0; running mean starts with z_0 = 0 of the reference
    up = DetectorBank("page_hinkley", 100.0, 0.0, {"amplified_bias": "increase"}, reference="known")
    down = DetectorBank("page_hinkley", 100.0, 0.0, {"amplified_bias": "decrease"}, reference="known")
    # Execute: z = 1, 1, -2
    up_stats, _ = feed(up, [0.0, 1.0, 1.0, -2.0])
    down_stats, _ = feed(down, [0.0, 1.0, 1.0, -2.0])
    # Assert: means 1/2, 2/3, 0; m+ = .5, .8333, -1.1667; m- = -.5, -.8333, 1.1667
    np.testing.assert_allclose(up_stats, [0.0, 0.5, 5 / 6, 0.0])
    np.testing.assert_allclose(down_stats, [0.0, 0.0, 0.0, 2.0])


@pytest.mark.parametrize("detector", ["cusum", "page_hinkley"])
def test_no_alarm_on_a_constant_stream(detector: str) -> None:
    bank = DetectorBank(detector, 0.01, 0.5, {"amplified_bias": "both"})
    stats, alarms = feed(bank, [0.37] * 60, std=0.02)
    assert alarms == [] and max(stats) == 0.0


def test_zero_width_interval_does_not_divide_by_zero() -> None:
    bank = DetectorBank("cusum", 5.0, 0.5, {"amplified_bias": "increase"}, min_std=1e-3)
    bank.update(0, {STREAM: MetricPoint(0.5, 0.5, 0.5)})
    alarms = bank.update(1, {STREAM: MetricPoint(0.51, 0.51, 0.51)})
    # z = 0.01 / sqrt(2e-6) = 7.07 -> S = 6.57 > 5
    assert alarms[0].evidence["z"] == pytest.approx(0.01 / math.sqrt(2e-6))
    assert all(math.isfinite(v) for v in alarms[0].evidence.values())


@pytest.mark.parametrize("detector", ["cusum", "page_hinkley"])
def test_step_change_alarms_at_the_expected_round(detector: str) -> None:
    # Prepare: stream at 0 for rounds 0..5, then +3 std from round 6; k = 0.5, h = 4
    bank = DetectorBank(detector, 4.0, 0.5, {"amplified_bias": "increase"}, reference="known")
    values = [0.0] * 6 + [3.0] * 6
    # Execute
    stats, alarms = feed(bank, values)
    # Assert: CUSUM 2.5 at round 6, 5.0 > 4 at round 7. PH: mean after round 6 = 3/7,
    # m = 3 - 3/7 - .5 = 2.07; round 7 mean 6/8, m = 2.07 + 3 - .75 - .5 = 3.82; round 8 mean 1, +1.5 -> 5.32
    expected = 7 if detector == "cusum" else 8
    assert alarms[0].round == expected
    assert alarms[0].stream == STREAM and alarms[0].mode == "amplified_bias"
    assert all(s <= 4.0 for s in stats[:expected])


def test_calibration_hits_the_target_on_fresh_simulations() -> None:
    for detector in ("cusum", "page_hinkley"):
        for direction in ("increase", "both"):
            # Execute: calibrate on seed 0, check on seed 99
            h = calibrate_threshold(detector, 0.5, 20, 0.05, np.random.default_rng(0), 100_000, direction=direction)
            rate = false_alarm_rate(detector, h, 0.5, 20, np.random.default_rng(99), 100_000, direction=direction)
            # Assert: binomial error of both runs (the quantile's error is about that of its run)
            se = math.sqrt(2 * 0.05 * 0.95 / 100_000)
            assert abs(rate - 0.05) < 4 * se, (detector, direction, rate)


def test_calibration_matches_the_bank_end_to_end() -> None:
    # Prepare: h for one stream at 5% over 12 rounds; then 3000 null streams through a real bank
    h = calibrate_threshold("cusum", 0.5, 12, 0.05, np.random.default_rng(1))
    bank = DetectorBank("cusum", h, 0.5, {"amplified_bias": "increase"})
    rng = np.random.default_rng(2)
    n = 3000
    # Execute: every stream is pure noise of std 0.1 around 0.4 (interval from that std)
    alarmed: set[str] = set()
    for r in range(13):
        x = 0.4 + 0.1 * rng.standard_normal(n)
        pts = {f"amplified_bias.score.s{i}": pt(x[i], 0.1) for i in range(n)}
        alarmed |= {a.stream for a in bank.update(r, pts)}
    # Assert
    rate = len(alarmed) / n
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)
    assert rate >= 0.05 - 3 * math.sqrt(0.05 * 0.95 / n)


def test_iid_calibration_under_covers_a_noisy_reference() -> None:
    # The reason the default simulates the shared reference error.
    h_iid = calibrate_threshold("cusum", 0.5, 20, 0.05, np.random.default_rng(0), reference="known")
    rate = false_alarm_rate("cusum", h_iid, 0.5, 20, np.random.default_rng(1), reference="estimated")
    assert rate > 0.1  # about 0.2: four times the 0.05 it was calibrated for


def test_bonferroni_split_over_streams() -> None:
    h1 = calibrate_threshold("cusum", 0.5, 10, 0.05, np.random.default_rng(0))
    h5 = calibrate_threshold("cusum", 0.5, 10, 0.05, np.random.default_rng(0), streams=5)
    assert h5 > h1
    rate = false_alarm_rate("cusum", h5, 0.5, 10, np.random.default_rng(3), 50000)
    assert rate == pytest.approx(0.01, abs=4 * math.sqrt(0.01 * 0.99 / 50000))


def test_calibration_rejects_bad_input() -> None:
    g = np.random.default_rng(0)
    with pytest.raises(UserError, match="too small to calibrate"):
        calibrate_threshold("cusum", 0.5, 10, 0.01, g, n_sim=1000, streams=10)
    with pytest.raises(UserError, match="cusum, page_hinkley"):
        calibrate_threshold("ewma", 0.5, 10, 0.05, g)
    with pytest.raises(UserError, match="horizon"):
        calibrate_threshold("cusum", 0.5, 0, 0.05, g)


def test_calibrated_bank_records_how() -> None:
    bank = DetectorBank.calibrated("page_hinkley", 0.25, 8, 0.1, np.random.default_rng(0), streams=4, n_sim=4000)
    assert bank.threshold_two_sided > bank.threshold > 0
    assert bank.config()["calibration"]["per_stream_rate"] == pytest.approx(0.025)
    assert DetectorBank.from_config(bank.config()).config() == bank.config()


def test_directions_longest_prefix_wins() -> None:
    bank = DetectorBank("cusum", 1.0, 0.5)  # defaults
    assert bank.direction("alignment_erosion.refusal_rate") == "decrease"
    assert bank.direction("alignment_erosion.over_refusal_rate") == "increase"
    assert bank.direction("out_of_domain_degradation.nll.shakespeare") == "increase"
    assert bank.direction("confidence_miscalibration.accuracy") == "decrease"
    assert bank.direction("amplified_bias.bbq.age") == "increase"
    with pytest.raises(UserError, match="does not start with a mode"):
        DetectorBank("cusum", 1.0, 0.5, {"bias": "increase"})


def test_state_round_trips_through_json_for_resume() -> None:
    # Prepare: one uninterrupted bank and one saved after round 4 and restored
    rng = np.random.default_rng(5)
    rounds = [
        {STREAM: pt(float(v), 0.3), "alignment_erosion.refusal_rate": pt(float(w), 0.3)}
        for v, w in zip(
            np.r_[np.zeros(5), np.full(5, 1.5)] + 0.1 * rng.standard_normal(10), -np.arange(10) * 0.2, strict=True
        )
    ]
    for detector in ("cusum", "page_hinkley"):
        whole = DetectorBank(detector, 3.0, 0.5)
        a_whole = [a for r, p in enumerate(rounds) for a in whole.update(r, p)]
        first = DetectorBank(detector, 3.0, 0.5)
        a_split = [a for r, p in enumerate(rounds[:5]) for a in first.update(r, p)]
        # Execute
        resumed = DetectorBank.from_dict(json.loads(json.dumps(first.to_dict())))
        a_split += [a for r, p in enumerate(rounds[5:], start=5) for a in resumed.update(r, p)]
        # Assert
        assert a_split == a_whole and a_whole
        assert resumed.to_dict() == whole.to_dict()
        with pytest.raises(ValueError, match="round 3 after round 9"):
            resumed.update(3, rounds[3])


def test_non_finite_points_are_skipped() -> None:
    bank = DetectorBank("cusum", 1.0, 0.5, reference="known")
    bank.update(0, {STREAM: pt(0.0)})
    assert bank.update(1, {STREAM: MetricPoint(float("nan"), 0.0, 1.0)}) == []
    assert bank.streams[STREAM].last_round == 0


def test_interval_clipped_on_one_side_keeps_its_std() -> None:
    # A noisy rate released at its bound 1.0 with half-width 0.4: [0.6, 1.0] is one side only.
    assert interval_std(MetricPoint(1.0, 0.6, 1.0), 1e-6) == pytest.approx(0.4 / 1.96)
    assert interval_std(MetricPoint(0.0, 0.0, 0.3), 1e-6) == pytest.approx(0.3 / 1.96)
