from __future__ import annotations

import pytest

from openpfi.bench.round_flower import deployment_summary


def test_deployment_summary_puts_the_ratio_and_the_overheads_at_the_top() -> None:
    # Prepare: a Flower bench result of one round, by hand
    per_message = {f"{p}_{q}_s": v for (p, q), v in zip(
        [(p, q) for p in ("fit", "evaluate") for q in ("process", "channel", "slot_wait")],
        [2.0, 0.01, 30.0, 1.5, 0.02, 4.0], strict=True
    )}
    flower = {"round_s": 60.0, "startup_s": 40.0, "per_round": [{"round": 1, **per_message}],
              "startup": {"nodes_within_budget": True}}
    # Execute
    out = deployment_summary(50.0, flower)
    # Assert
    assert out["inprocess_round_s"] == 50.0 and out["deployment_round_s"] == 60.0
    assert out["deployment_ratio"] == pytest.approx(1.2)
    assert out["deployment_startup_s"] == 40.0 and out["deployment_message_overhead_s"] == per_message
    assert out["deployment_nodes_within_budget"] is True
    assert "deployment_round_critical_s" not in out  # one round: nothing overlapped


def test_two_rounds_give_round_one_on_the_critical_path_its_period_plus_what_round_two_waited() -> None:
    # Prepare: round 1 took 45 s from its start to round 2's (its close overlapped round 2's training),
    # and round 2 waited 3 s for that close after its clients answered; round 2 closed at once (60 s)
    zeros = {f"{p}_{q}_s": 0.0 for p in ("fit", "evaluate") for q in ("process", "channel", "slot_wait")}
    rounds = [{"round": 1, **zeros, "previous_round_period_s": 0.0, "previous_close_wait_s": 0.0},
              {"round": 2, **zeros, "previous_round_period_s": 45.0, "previous_close_wait_s": 3.0}]
    flower = {"round_s": 60.0, "startup_s": 40.0, "per_round": rounds, "startup": {"nodes_within_budget": False}}
    # Execute
    out = deployment_summary(40.0, flower)
    # Assert: 45 + 3 = 48 s on the critical path, 1.2x the in-process 40 s; the serial round stays 60 / 40
    assert out["deployment_round_critical_s"] == 48.0 and out["deployment_critical_ratio"] == pytest.approx(1.2)
    assert out["deployment_close_wait_s"] == 3.0 and out["deployment_ratio"] == pytest.approx(1.5)
