from __future__ import annotations

import pytest

from openpfi.bench.round_flower import deployment_summary, simulation_summary


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


def _row(r: int, round_s: float, period_s: float, clients: dict[str, dict[str, float]], nodes: dict | None = None) -> dict:
    timings = {"round_s": round_s, "train_s": round_s - 2.0, "aggregate_s": 0.5, "evaluate_s": 1.0, "monitor_s": 4.0,
               "previous_round_period_s": period_s, "previous_close_wait_s": 0.0}
    flower = {"clients": clients} | ({"startup": {"server_s": 1.0, "nodes": nodes}} if nodes is not None else {})
    return {"round": r, "timings": timings, "sampled": sorted(clients), "failed": [], "flower": flower}


def test_simulation_summary_takes_the_workers_highest_peak_against_their_smallest_budget() -> None:
    # Prepare: 3 virtual nodes identified (each reports its worker's peak and budget), 2 sampled per round;
    # round 1 took 30 s to round 2's start, round 2 closed at once in 25 s, 100 s in all
    gib = float(1 << 30)
    nodes = {f"c{i}": {"flower_peak_rss_bytes": 1.0 * gib, "flower_budget_bytes": 1.5 * gib} for i in range(3)}
    r1 = {"c0": {"fit_peak_rss_bytes": 1.2 * gib, "fit_budget_bytes": 1.4 * gib, "fit_process_s": 0.1},
          "c2": {"fit_peak_rss_bytes": 1.3 * gib, "fit_budget_bytes": 1.4 * gib, "fit_process_s": 0.3}}
    r2 = {"c1": {"fit_peak_rss_bytes": 1.3 * gib, "fit_budget_bytes": 1.45 * gib, "fit_process_s": 0.2}}
    rows = [_row(1, 40.0, 0.0, r1, nodes), _row(2, 25.0, 30.0, r2)]
    # Execute
    out = simulation_summary(rows, 100.0)
    over = simulation_summary([_row(1, 40.0, 0.0, r1 | {"c1": {"fit_peak_rss_bytes": 1.5 * gib, "fit_budget_bytes": 1.4 * gib}}, nodes)], 50.0)
    # Assert
    assert out["identified_nodes"] == 3 and [r["sampled"] for r in out["per_round"]] == [2, 1]
    assert out["startup_s"] == 100.0 - 30.0 - 25.0
    assert out["per_round"][0]["fit_process_s"] == pytest.approx(0.2) and out["per_round"][1]["monitor_s"] == 4.0
    m = out["memory"]
    assert m["reports"] == 6 and m["worker_peak_rss_bytes_max"] == 1.3 * gib and m["worker_budget_bytes_min"] == 1.4 * gib
    assert m["within_budget"] is True
    assert over["memory"]["within_budget"] is False  # one worker past the smallest budget
