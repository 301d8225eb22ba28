"""`openpfi bench align` end to end on tiny-random (a seconds-long plan), and its analysis maths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from openpfi.bench.align import FULL, FULL3, QUICK, QUICK3, expected_seconds, plan_for, run_align_bench, tiny_plan
from openpfi.bench.align_analysis import analyse, monotone, spearman
from openpfi.errors import UserError


def test_plans_meet_the_brief() -> None:
    assert len(FULL.preferences) >= 5 and len(FULL.seeds) >= 2
    assert expected_seconds(FULL) <= 2 * 3600 and expected_seconds(QUICK) <= 10 * 60
    assert expected_seconds(QUICK3) <= 15 * 60
    for plan in (FULL, QUICK, FULL3, QUICK3):
        assert all(abs(sum(p) - 1) < 1e-12 and len(p) == len(plan.objectives) for p in plan.preferences)
    assert plan_for(False, 3) is FULL3 and plan_for(True, 2) is QUICK
    with pytest.raises(UserError, match="--objectives 4"):
        plan_for(True, 4)


def test_tiny_bench_writes_json_png_and_docs(tmp_path: Path) -> None:
    # Prepare
    plan = replace(tiny_plan(), preferences=((0.2, 0.8), (0.8, 0.2)), judge_prompts=1)
    out = tmp_path / "bench-align.json"
    # Execute
    run_align_bench(out, console=Console(file=open(tmp_path / "log.txt", "w")), model="tiny-random",
                    docs=tmp_path / "docs", plan=plan)
    # Assert
    result = json.loads(out.read_text())
    assert len(result["runs"]) == len(plan.jobs()) == 6
    checks = result["analysis"]["checks"]
    assert checks["upload_ratio_fmgda_over_firm"] == pytest.approx(2.0)
    assert checks["drift"]["drift_disagreement"]["pairs"] == 2
    assert len(result["analysis"]["per_method"]["firm"]["drift_disagreement_per_round"]) == plan.rounds
    assert (tmp_path / "bench-align.png").stat().st_size > 1000
    section = (tmp_path / "docs" / "align-full.md").read_text()
    assert "| firm |" in section and "align-full.png" in section and "steering, firm, seed 0" in section
    assert set(result["judge_check"]) == {"base", "firm_p_mid_seed0"}


def test_tiny_bench_three_objectives_uploads_three_adapters(tmp_path: Path) -> None:
    # Prepare: one p per method, no generation
    plan = replace(tiny_plan(3), preferences=((0.6, 0.2, 0.2),), fixed_methods=("fmgda",), judge_prompts=0,
                   pairs_per_client=12)  # every client holds every objective
    # Execute
    result = run_align_bench(tmp_path / "b3.json", console=Console(file=open(tmp_path / "log.txt", "w")),
                             model="tiny-random", plan=plan)
    # Assert
    assert result["analysis"]["checks"]["upload_ratio_fmgda_over_firm"] == pytest.approx(3.0)
    assert all("pref_acc_honest" in r for r in result["runs"])
    assert result["command"].endswith("--objectives 3")


def test_rank_helpers_hand_cases() -> None:
    assert spearman([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == pytest.approx(1.0)
    assert spearman([0.1, 0.5, 0.9], [0.8, 0.4, 0.2]) == pytest.approx(-1.0)
    assert spearman([0.2, 0.2, 0.6], [0.1, 0.3, 0.5]) == pytest.approx(0.8660254, rel=1e-6)  # tied p: mid-ranks
    assert monotone([0.1, 0.5, 0.9], [0.2, 0.2, 0.3]) and not monotone([0.1, 0.5, 0.9], [0.2, 0.3, 0.25])
    assert monotone([0.2, 0.2, 0.6], [0.3, 0.1, 0.4])  # equal p may order either way


def _run(method: str, p: list[float] | None, acc: tuple[float, float], drift: list[float], up: float,
         seed: int = 0) -> dict:
    return {"method": method, "seed": seed, "preference": p, "pref_acc_harmless": acc[0], "pref_acc_helpful": acc[1],
            "refusal_rate": acc[0] - 0.4, "over_refusal_rate": 0.1, "bytes_up": up,
            "drift_disagreement": sum(drift) / len(drift), "drift_disagreement_rounds": drift,
            "drift_cosine_dispersion": 2 * drift[0], "drift_cosine_dispersion_rounds": [2 * drift[0]],
            "drift_lambda_spread": None, "round_seconds": 1.0}


def test_analysis_hypervolume_steering_dominance_and_drift() -> None:
    # Prepare: three p for firm and scalarized, one run each of the fixed methods, one seed
    runs = [{**_run("firm", [0.2, 0.8], (0.6, 0.8), [0.5, 0.3], 100), "lambda_harmless_mean": 0.5}, _run("firm", [0.5, 0.5], (0.7, 0.7), [0.4, 0.4], 100),
            _run("firm", [0.8, 0.2], (0.8, 0.6), [0.4, 0.2], 100),
            _run("scalarized", [0.2, 0.8], (0.4, 0.9), [0.6, 0.2], 100),
            _run("scalarized", [0.5, 0.5], (0.75, 0.75), [0.3, 0.3], 100),
            _run("scalarized", [0.8, 0.2], (1.0, 0.1), [0.5, 0.5], 100),
            _run("fmgda", None, (0.6, 0.6), [0.3, 0.3], 200), _run("dpo", None, (0.5, 0.5), [0.2, 0.2], 100)]
    # Execute
    a = analyse(runs, {"refusal_rate": 0.1, "over_refusal_rate": 0.05}, (0,), ("harmless", "helpful"),
                ("firm", "scalarized", "fmgda", "dpo"))
    # Assert: firm front (0.6,0.8),(0.7,0.7),(0.8,0.6) above (0.5,0.5): 0.1*0.3 + 0.1*0.2 + 0.1*0.1 = 0.06
    c = a["checks"]
    assert a["per_method"]["firm"]["hv_acc"] == pytest.approx(0.06)
    assert a["per_method"]["dpo"]["hv_acc"] == 0.0
    assert c["upload_ratio_fmgda_over_firm"] == pytest.approx(2.0)
    # spans: firm harmless 0.2 vs scalarized 0.6; helpful 0.2 vs 0.8
    s = c["steering"]["firm"]["0"]
    assert s["harmless"]["monotone"] and s["helpful"]["monotone"]
    assert s["harmless"]["span_vs_reference"] == pytest.approx(1 / 3)
    assert s["helpful"]["span_vs_reference"] == pytest.approx(0.25)
    assert c["firm_dominated_at"]["0"] == [[0.5, 0.5]]  # (0.7, 0.7) < (0.75, 0.75)
    # drift means: firm 0.4, 0.4, 0.3 vs scalarized 0.4, 0.3, 0.5 -> lower in 1 of 3; by round 2 and 1
    d = c["drift"]["drift_disagreement"]
    assert d["pairs"] == 3 and d["firm_lower"] == 1 and d["firm_lower_by_round"] == [2, 1]
    assert d["mean_difference"] == pytest.approx((0.0 + 0.1 - 0.2) / 3)
    assert a["per_method"]["firm"]["drift_disagreement_per_round"] == pytest.approx([13 / 30, 0.3])
    # matched weights: firm lambda 0.5 at p = 0.2 -> scalarized drift interpolated at 0.5 = 0.3; firm 0.4 is above
    assert c["drift_matched_weights"]["drift_disagreement"] == {"pairs": 1, "firm_lower": 0, "mean_difference":
                                                                pytest.approx(0.1)}
    assert c["refusal_vs_base"]["firm"]["refusal_gain"] == pytest.approx(0.7 - 0.4 - 0.1)
