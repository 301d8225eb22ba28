"""`openpfi monitor plan`: the verdicts of a config before training, against a run's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openpfi.assembly.monitor_forecast import forecast
from openpfi.assembly.monitor_plan import plan_monitor
from openpfi.cli import app
from openpfi.config import load_config
from openpfi.recipes import federated_sft as fs

TINY = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=2",
    "client.local_steps=1", "client.batch_size=2", "client.max_length=64", "client.max_eval_examples=4",
    "monitor.enabled=true", "monitor.utility_examples=2", "monitor.server_blocks=1",
    "monitor.suite_sizes={bbq = 24, crows = 12, harmful = 130, benign = 12, ood = 12, capability = 12}",
    "monitor.server_items={bbq = 24, crows = 12, harmful = 130, benign = 12, ood = 12, capability = 12}",
]
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


@pytest.fixture(scope="module")
def planned_and_run(tmp_path_factory):
    cfg = load_config(DEMO, TINY)
    plan = forecast(plan_monitor(cfg))
    out = tmp_path_factory.mktemp("plan") / "run"
    fs.start(load_config(DEMO, TINY), out)
    return plan, json.loads((out / "report.json").read_text())


def test_the_plan_gives_every_mode_the_verdict_the_run_reports(planned_and_run):
    # Prepare
    plan, report = planned_and_run
    # Execute
    planned = {m: v["verdict"] for m, v in plan["modes"].items()}
    reported = report["summary"]["verdicts"]
    # Assert: same verdicts, some modes watching (the paired tests on tiny-random), some blind (2 clients)
    assert planned == reported
    assert "watching" in planned.values() and "blind" in planned.values()
    assert planned["adaptation_misalignment"] == "blind"


def test_the_plan_and_the_report_name_the_same_deciding_stream_and_change(planned_and_run):
    plan, report = planned_and_run
    for mode in report["modes"]:
        p, r = plan["modes"][mode["id"]], mode["verdict"]
        assert p["stream"] == r["stream"], mode["id"]
        if p["verdict"] == "watching":
            assert p["detectable"] <= 1.5 * p["margin"] and r["detectable"] <= 1.5 * r["margin"]


def test_cli_plan_prints_a_verdict_per_mode(tmp_path):
    res = CliRunner().invoke(app, ["monitor", "plan", str(DEMO), *[a for s in TINY for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    for mode in ("amplified_bias", "confidence_miscalibration", "fairness_collapse", "adaptation_misalignment",
                 "out_of_domain_degradation", "alignment_erosion"):
        line = next(x for x in res.output.splitlines() if f" {mode} " in x)
        assert any(v in line for v in ("watching", "weak", "blind")), line
    assert "modes watching" in res.output


@pytest.mark.parametrize("bad", ["federation.rounds=0", "monitor.server_blocks=0", "privacy.delta=2"])
def test_a_bad_config_gets_the_same_one_line_error_as_run(tmp_path, bad):
    runner = CliRunner()
    planned = runner.invoke(app, ["monitor", "plan", str(DEMO), "--set", bad])
    ran = runner.invoke(app, ["run", str(DEMO), "--out", str(tmp_path / "r"), "--set", bad])
    assert planned.exit_code == ran.exit_code == 2
    assert planned.output.strip() == ran.output.strip() and planned.output.count("\n") == 1
    assert not (tmp_path / "r").exists()
