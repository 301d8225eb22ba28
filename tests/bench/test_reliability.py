"""The fast part of `openpfi bench reliability`: faults caught, hostile input refused cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.bench.reliability import ReliabilityPlan, _fuzz_base, run_reliability_bench
from openpfi.bench.reliability_faults import plan_faults, run_faults
from openpfi.bench.reliability_fuzz import run_fuzz


def test_fault_plan_takes_the_kinds_in_turn() -> None:
    plan = plan_faults([f"c{i}" for i in range(10)], 2, 0.3, seed=0)
    assert [len(p) for p in plan.values()] == [3, 3]
    assert sorted(k for p in plan.values() for k in p.values()) == sorted(
        ["raise", "hang", "nan", "shape", "norm", "raise"])


def test_faulty_clients_never_change_the_global_adapter(tmp_path: Path) -> None:
    # Execute: 3 rounds, 2 of 5 clients faulty each round (one hangs past a 1 s timeout)
    r = run_faults(tmp_path, rounds=3, clients=5, share=0.4, timeout_s=1.0)
    # Assert: every round completed, every fault caught, the adapter equals the clean run's
    assert r["fault_rounds_completed"] == r["fault_rounds_planned"] == 3
    assert r["faults_caught"] == sum(r["faults_injected"].values()) == 6
    assert set(r["rejected_by_reason"]) == {"raised", "timeout", "nonfinite", "shape", "norm"}
    assert r["final_adapter_equals_clean"]


def test_hostile_input_ends_in_no_traceback_or_hang(tmp_path: Path) -> None:
    tally = run_fuzz(_fuzz_base(tmp_path), per_target=12, seed=3)
    assert sum(tally.cases.values()) == 60
    assert tally.tracebacks == [] and tally.hangs == [] and tally.violations == []
    assert tally.refused["resume"] > 0  # damaged run folders are refused with one line


@pytest.mark.slow
def test_campaign_json_has_the_issue_keys(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    small_monitor = ("monitor.server_items={bbq = 6, crows = 6, harmful = 6, benign = 6, ood = 6, capability = 6}",
                     "monitor.calibration_sims=1000", "monitor.judge_check_prompts=0")  # still every file a run writes
    plan = ReliabilityPlan(fault_rounds=2, crashes=1, fuzz_per_target=5, fault_clients=5, fault_timeout_s=1.0,
                           crash_sets=small_monitor)
    run_reliability_bench(out, plan=plan, crash_process="subprocess")
    r = json.loads(out.read_text())
    for key in ("fault_rounds_planned", "fault_rounds_completed", "rejected_by_reason", "resumes_tried",
                "resumes_bit_identical", "fuzz_cases", "fuzz_tracebacks", "fuzz_hangs"):
        assert key in r
    assert r["resumes_bit_identical"] == r["resumes_tried"] == 1
