"""The paired tests' CUSUM over blocks (monitor/detection/sequential.py) against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from openpfi.errors import UserError
from openpfi.monitor.detection.sequential import (
    StreamCusums,
    block_schedule,
    calibrate_threshold,
    detectable_excess,
    detection_probability,
    max_statistic,
    onset_window,
)


def test_block_schedule_cycles_through_the_blocks():
    assert block_schedule(5, 3) == (0, 1, 2, 0, 1)
    assert block_schedule(2, 4) == (0, 1)
    with pytest.raises(UserError, match="server_blocks"):
        block_schedule(3, 0)


def test_max_statistic_by_hand():
    # Prepare: two simulations, two blocks; rounds use blocks 0, 1, 0 (block 0's draw comes back)
    noise = np.array([[1.0, 2.0], [-1.0, 0.5]])
    # Execute
    best = max_statistic((0, 1, 0), 0.5, noise)
    # Assert: S = max(0, S + x - 0.5): sim 0: 0.5, 2.0, 2.5; sim 1: 0, 0, 0
    np.testing.assert_allclose(best, [2.5, 0.0])


def test_one_round_threshold_is_the_normal_quantile_less_k():
    # one round: P(max(0, x - k) > h) = P(x > h + k) = alpha
    h = calibrate_threshold((0,), 0.5, 0.01, None, n_sim=200_000)
    assert h == pytest.approx(stats.norm.ppf(0.99) - 0.5, abs=0.03)


def test_a_block_used_every_round_adds_the_same_draw():
    # one block for R = 3 rounds, k = 0: S_3 = 3 x, so h = 3 z_{1 - alpha}
    h = calibrate_threshold((0, 0, 0), 0.0, 0.01, None, n_sim=200_000)
    assert h == pytest.approx(3 * stats.norm.ppf(0.99), abs=0.1)


def test_independent_blocks_need_a_lower_threshold_than_one_repeated_block():
    same = calibrate_threshold((0, 0, 0), 0.5, 0.01, None, n_sim=100_000)
    fresh = calibrate_threshold((0, 1, 2), 0.5, 0.01, None, n_sim=100_000)
    assert fresh < same


def test_detectable_excess_of_one_round_is_h_plus_k():
    # one round, normal noise: P(x + mu - k > h) = 1/2 at mu = h + k
    assert detectable_excess((0,), 0.5, 2.0, None, n_sim=20_000) == pytest.approx(2.5, abs=0.03)
    assert detection_probability((0,), 0.5, 2.0, 2.5, None, n_sim=20_000) == pytest.approx(0.5, abs=0.02)


def test_three_fresh_blocks_need_a_smaller_excess_each_than_one_round():
    h3 = calibrate_threshold((0, 1, 2), 0.5, 0.001, None)
    h1 = calibrate_threshold((0,), 0.5, 0.001, None)
    assert detectable_excess((0, 1, 2), 0.5, h3) < detectable_excess((0,), 0.5, h1) - 1.0


def test_onset_window_takes_the_fewest_distinct_blocks():
    assert onset_window((0, 1, 2, 0), 3) == (0, 1, 2)
    assert onset_window((0, 1, 0, 1), 3) == (0, 1, 0)
    assert onset_window((0, 1), 3) == (0, 1)


def test_stream_cusums_step_restart_and_block_of_round():
    c = StreamCusums((0, 1, 2), k=0.5, alpha=0.01)
    assert [c.block_of(r) for r in (0, 1, 2, 3, 4)] == [0, 0, 1, 2, 0]
    assert c.step("s", 2.0, 30)[0] == 1.5 and c.step("s", 1.0, 30)[0] == 2.0
    c.restart("s")
    assert c.state["s"] == 0.0 and c.step("s", -3.0, 30)[0] == 0.0
