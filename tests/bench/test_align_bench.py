"""`openpfi bench align` end to end on tiny-random (a seconds-long plan), and its analysis maths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from openpfi.bench.align import FULL, QUICK, analyse, expected_seconds, run_align_bench, tiny_plan


def test_plans_meet_the_brief() -> None:
    assert len(FULL.preferences) >= 5 and len(FULL.seeds) >= 2
    assert expected_seconds(FULL) <= 2 * 3600 and expected_seconds(QUICK) <= 10 * 60
    assert all(abs(sum(p) - 1) < 1e-12 for p in FULL.preferences)


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
    assert (tmp_path / "bench-align.png").stat().st_size > 1000
    section = (tmp_path / "docs" / "BENCHMARKS-align.md").read_text()
    assert "| firm |" in section and "align-pareto.png" in section
    assert set(result["judge_check"]) == {"base", "firm_p_mid_seed0"}


def test_analysis_hypervolume_and_checks() -> None:
    # Prepare: two p for firm, one run each of the fixed methods, one seed
    plan = replace(tiny_plan(), seeds=(0,), preferences=((0.2, 0.8), (0.8, 0.2)))

    def run(method: str, p: list[float] | None, acc: tuple[float, float], drift: float, up: float) -> dict:
        return {"method": method, "seed": 0, "preference": p, "pref_acc_harmless": acc[0], "pref_acc_helpful": acc[1],
                "reward_margin_harmless": acc[0] - 0.5, "refusal_rate": acc[0] - 0.4, "over_refusal_rate": 0.1,
                "bytes_up": up, "drift_cosine_dispersion": drift, "drift_disagreement": drift / 2,
                "drift_lambda_spread": None, "round_seconds": 1.0}

    runs = [run("firm", [0.2, 0.8], (0.6, 0.8), 0.5, 100), run("firm", [0.8, 0.2], (0.8, 0.6), 0.4, 100),
            run("scalarized", [0.2, 0.8], (0.55, 0.7), 0.7, 100), run("scalarized", [0.8, 0.2], (0.7, 0.55), 0.6, 100),
            run("fmgda", None, (0.6, 0.6), 0.3, 200), run("dpo", None, (0.5, 0.5), 0.2, 100)]
    # Execute
    a = analyse(runs, {"refusal_rate": 0.1, "over_refusal_rate": 0.05}, plan)
    # Assert: firm front (0.6,0.8),(0.8,0.6) above (0.5,0.5): 0.3*0.1 + 0.1*0.2 = 0.05
    assert a["per_method"]["firm"]["hv_acc"] == pytest.approx(0.05)
    assert a["per_method"]["dpo"]["hv_acc"] == 0.0
    assert a["checks"]["upload_ratio_fmgda_over_firm"] == pytest.approx(2.0)
    assert a["checks"]["firm_minus_scalarized_drift_cosine_dispersion"] == pytest.approx(-0.2)
    assert a["checks"]["firm_below_scalarized_drift_cosine_dispersion_share"] == 1.0
    assert a["per_method"]["firm"]["on_joint_front"] == 2
    assert a["checks"]["refusal_vs_base"]["firm"]["refusal_gain"] == pytest.approx(0.7 - 0.4 - 0.1)
