"""`openpfi bench silent` end to end on tiny-random: runs, ground truth, JSON, table, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openpfi.cli import app
from openpfi.monitor.modes import MODES

SUITE = """
[quick]
seeds = 1
start_round = 2

[quick.config.model]
name = "tiny-random"

[quick.config.data]
num_clients = 2
min_examples = 10
max_examples = 16

[quick.config.federation]
rounds = 2
clients_per_round = 2

[quick.config.client]
local_steps = 1
batch_size = 2
max_length = 48
max_eval_examples = 2

[quick.config.monitor]
utility_examples = 2
judge_check_prompts = 2
judge_check_max_new_tokens = 4
client_items = { bbq = 1, crows = 1, harmful = 1, benign = 1, ood = 1, capability = 1 }
suite_sizes = { bbq = 6, crows = 4, harmful = 4, benign = 4, ood = 6, capability = 4 }
server_items = { bbq = 6, crows = 4, harmful = 4, benign = 4, ood = 6, capability = 4 }

[quick.config.privacy]
target_epsilon = 8.0
"""

INJECTED = """
[injection]
kind = "noisy_targets"
clients = 1
start_round = 1
steps_scale = 2.0

[expect]
mode = "confidence_miscalibration"
"""

CONTROL = """
[injection]
kind = "none"

[expect]
mode = "none"
"""

runner = CliRunner()


@pytest.fixture()
def scenarios(tmp_path: Path) -> Path:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "_suite.toml").write_text(SUITE)
    (d / "miscal.toml").write_text(INJECTED)
    (d / "quiet.toml").write_text(CONTROL)
    return d


def test_quick_suite_runs_records_truth_and_resumes(tmp_path: Path, scenarios: Path):
    out = tmp_path / "s.json"
    args = ["bench", "silent", "--quick", "--scenarios", str(scenarios), "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 scenarios x 1 seeds = 2 runs on tiny-random" in res.output
    b = json.loads(out.read_text())
    # the profile's start_round (2) overrides the file's (1), and the truth in the run folder says so
    truth = json.loads((tmp_path / "s.runs" / "miscal" / "seed-0" / "ground_truth.json").read_text())
    assert truth["start_round"] == 2 and len(truth["clients"]) == 1
    runs = {r["scenario"]: r for r in b["runs"]}
    injected = runs["miscal"]["injected_examples"]  # round -> client -> examples
    assert set(injected) == {"2"}  # nothing injected before onset
    assert list(injected["2"]) == truth["clients"] and injected["2"][truth["clients"][0]] > 0
    assert runs["miscal"]["onset"] == 2 and runs["miscal"]["injected_clients"] == truth["clients"]
    assert runs["quiet"]["injected_examples"] == {}
    # one row per scenario, a coverage cell per mode, the figures the issue asks for
    assert [r["scenario"] for r in b["scenarios"]] == ["miscal", "quiet"]
    assert set(b["coverage"]) == set(MODES) and set(b["coverage"].values()) <= {"direct", "proxy", "none"}
    assert b["coverage_row"].startswith("| openpfi (measured) |")
    assert 0 < b["epsilon_max"] <= 8.0 + 1e-9
    assert b["false_alarms_total"] == sum(r["false_alarms"] for r in b["scenarios"])
    assert "| miscal | confidence_miscalibration |" in b["table_markdown"]
    # how close each mode came, and what its closest stream could have seen (monitor/detection/power.py)
    closest = [c for r in b["runs"] for c in r["closest_to_threshold"].values()]
    assert closest and all(c["ratio"] == pytest.approx(c["statistic"] / c["threshold"]) for c in closest)
    assert any(isinstance(c["detectable_shift"], float) and c["detectable_shift"] > 0 for c in closest)
    # a second call refuses to mix suites, --resume reuses both finished runs
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.count("finished earlier, skipped") == 2
    assert json.loads(out.read_text())["runs"] == b["runs"]


def test_malformed_scenario_is_refused_before_anything_runs(tmp_path: Path, scenarios: Path):
    (scenarios / "miscal.toml").write_text(INJECTED.replace("clients = 1", "clients = 3"))
    out = tmp_path / "s.json"
    res = runner.invoke(app, ["bench", "silent", "--quick", "--scenarios", str(scenarios), "--out", str(out)])
    assert res.exit_code != 0
    assert "miscal.toml: injection.clients: 3 exceeds data.num_clients = 2" in res.output
    assert not out.exists() and not (tmp_path / "s.runs").exists()


def test_an_injection_file_with_a_corrupt_row_is_refused_with_file_and_line(tmp_path: Path, scenarios: Path):
    (scenarios / "rows.jsonl").write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q"}\n')
    (scenarios / "miscal.toml").write_text(INJECTED.replace('kind = "noisy_targets"', 'kind = "jsonl"\npath = "rows.jsonl"'))
    out = tmp_path / "s.json"
    res = runner.invoke(app, ["bench", "silent", "--quick", "--scenarios", str(scenarios), "--out", str(out)])
    assert res.exit_code == 2
    text = res.output.replace("\n", "")
    assert "rows.jsonl, line 2" in text and '"response" is missing' in text and "Traceback" not in text
    assert not out.exists() and not (tmp_path / "s.runs").exists()
