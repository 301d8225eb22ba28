from __future__ import annotations

import pytest

from openpfi.bench.round import round_split


def test_round_split_by_hand():
    t = {"round_s": 10.0, "train_compute_s": 6.0, "evaluate_s": 1.0, "monitor_s": 0.5, "train_s": 7.0}
    out = round_split(t)
    assert out == pytest.approx({"overhead_s": 2.5, "overhead_share": 0.25, "monitor_share": 0.05})
    assert set(out) == {"overhead_s", "overhead_share", "monitor_share"}


def test_round_split_overhead_is_zero_when_all_time_is_forward_backward():
    out = round_split({"round_s": 4.0, "train_compute_s": 2.0, "evaluate_s": 1.0, "monitor_s": 1.0})
    assert out == pytest.approx({"overhead_s": 0.0, "overhead_share": 0.0, "monitor_share": 0.25})


def test_round_split_refuses_an_empty_round():
    with pytest.raises(ValueError, match="round_s"):
        round_split({"round_s": 0.0, "train_compute_s": 0.0, "evaluate_s": 0.0, "monitor_s": 0.0})
