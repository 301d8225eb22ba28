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
