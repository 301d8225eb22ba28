"""Trustworthy adaptation end to end on tiny-random, through the CLI: DP + a robust rule + compression with the
monitor on, the ledgers apart and together, the audit anchors, and the bad input refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openpfi.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo.toml")
TINY = [
    "--set", "model.name=tiny-random", "--set", "data.num_clients=3", "--set", "federation.clients_per_round=3",
    "--set", "federation.rounds=2", "--set", "client.local_steps=1", "--set", "client.max_length=48",
    "--set", "client.batch_size=2", "--set", "data.max_examples=30", "--set", "data.min_examples=10",
]
runner = CliRunner()


def test_dp_median_int8_with_the_monitor(tmp_path: Path) -> None:
    # Execute
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY, "--set", "federation.aggregator=median",
                              "--set", "privacy.update_clip=0.5", "--set", "privacy.update_target_epsilon=20",
                              "--set", "federation.compression=int8"])
    assert res.exit_code == 0, res.output
    # Assert: both ledgers and their composition, in privacy.json and in the report
    data = json.loads((out / "privacy.json").read_text())
    c = data["combined"]
    assert data["updates"]["epsilon_total"] <= 20 * (1 + 1e-6) and data["updates"]["rounds"][0]["mode"] == "local"
    assert c["epsilon_total"] > max(c["epsilon_updates"], c["epsilon_monitor"])
    report = json.loads((out / "report.json").read_text())
    assert report["privacy"]["combined"]["epsilon_total"] == c["epsilon_total"]
    assert "together" in res.output
    # int8: about a quarter of the float32 bytes of the deltas go up
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["rejected"] == [] and r["dropped"] == [] for r in rows)
    # the audit head printed by `openpfi run` verifies, and every checkpoint's head is in the chain
    head = next(line.split()[2] for line in res.output.splitlines() if line.startswith("audit head:"))
    ok = runner.invoke(app, ["audit", "verify", str(out), "--head", head])
    assert ok.exit_code == 0 and "2 checkpoint heads" in ok.output, ok.output
    bad = runner.invoke(app, ["audit", "verify", str(out), "--head", "0" * 64])
    assert bad.exit_code == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["federation.aggregator=krum", "flower.secagg=updates"], "hides"),
        (["federation.aggregator=mean_of_medians"], "federation.aggregator"),
        (["federation.compression=zip"], "federation.compression"),
        (["federation.aggregator=trimmed_mean", "federation.trim_fraction=0.5"], "leaves no client"),
        (["privacy.update_clip=1", "privacy.update_target_epsilon=0.001"], "update_max_noise_multiplier"),
        (["privacy.update_clip=1", "federation.aggregator=median", "lora.aggregation=product"], "lora.aggregation"),
    ],
)
def test_bad_trust_settings_exit_2_before_any_work(tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "run"
    args = [x for e in extra for x in ("--set", e)]
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY, *args])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not out.exists()
