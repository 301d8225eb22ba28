"""The report's power entry of a client stream: the planned std until the run has observed enough rounds."""

from __future__ import annotations

import pytest

from openpfi.monitor.detection.client_power import ClientPlan, client_std
from openpfi.monitor.reporting.power_section import MIN_OBSERVED, stream_power

PLAN = ClientPlan(margin=0.1, direction="increase", span=1.0, sampling_std=0.2, dp_std=0.01, clients=8,
                  noise_multiplier=1.0, detector="cusum", threshold=5.0, drift_k=0.5, rounds=3, delta=1e-5)
NAME = "amplified_bias.bbq_ambig"


def _points(n: int, std: float) -> list[dict]:
    # an interval of half-width 1.96 std around 0.5: interval_std gives back std
    return [{"round": r, "value": 0.5, "lo": 0.5 - 1.96 * std, "hi": 0.5 + 1.96 * std} for r in range(1, n + 1)]


def test_a_client_stream_keeps_its_planned_std_with_few_observed_rounds():
    got = stream_power(NAME, _points(MIN_OBSERVED, 0.05), [], {"clients": {NAME: PLAN.to_dict()}})
    assert got is not None
    assert got["round_std"] == pytest.approx(client_std(PLAN))  # one noisy interval does not move the verdict


def test_a_client_stream_takes_the_observed_std_once_it_has_enough_rounds():
    got = stream_power(NAME, _points(MIN_OBSERVED + 1, 0.05), [], {"clients": {NAME: PLAN.to_dict()}})
    assert got is not None
    assert got["round_std"] == pytest.approx(0.05, rel=1e-6)
    low = stream_power(NAME, _points(MIN_OBSERVED + 1, 0.001), [], {"clients": {NAME: PLAN.to_dict()}})
    assert low["round_std"] == pytest.approx(PLAN.dp_std)  # never below the DP noise's own part
