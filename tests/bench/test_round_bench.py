from __future__ import annotations

import pytest

from openpfi.bench.round import monitor_cost, round_split


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


def test_monitor_cost_serial_and_on_the_critical_path_by_hand():
    # Prepare: 8 clients trained 40 s, evaluated 8 s and probed 8 s in all; the server scored 20 s
    t = {"round_s": 80.0, "train_s": 40.0, "evaluate_s": 8.0, "monitor_s": 28.0, "client_monitor_s": 8.0,
         "aggregate_s": 1.0, "serialize_s": 1.0}
    # Execute
    out = monitor_cost(t, 8)
    # Assert: one client's phase (40 + 8 + 8) / 8 = 7 s; the server's 20 s exceed it by 13 s
    assert out["server_monitor_s"] == pytest.approx(20.0)
    assert out["monitor_share_serial"] == pytest.approx(28.0 / 80.0)
    assert out["critical_path_s"] == pytest.approx(7.0 + 1.0 + 1.0 + 13.0)
    assert out["monitor_share_critical_path"] == pytest.approx((1.0 + 13.0) / 22.0)
    # a server scoring shorter than the client phase is off the path: only the clients' probing counts
    quick = monitor_cost({**t, "monitor_s": 12.0}, 8)
    assert quick["monitor_share_critical_path"] == pytest.approx(1.0 / 9.0)
