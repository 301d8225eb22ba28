"""The server's gap across groups in a monitored run on the tiny random model (chatterbot, 2 languages)."""

from __future__ import annotations

import json
import shutil

import pytest

from openpfi.assembly.clients import load_clients
from openpfi.config import load_config
from openpfi.errors import UserError
from openpfi.monitor import probes
from openpfi.monitor.audit import read_entries, verify
from openpfi.monitor.detection.sequential import block_schedule, calibrate_threshold
from openpfi.recipes import dispatch
from openpfi.recipes import federated_sft as fs
from openpfi.runfolder import client_store_dir

GROUPS = ["english", "korean"]
CFG = [
    "model.name=tiny-random",
    "data.source=chatterbot",
    f"data.languages={json.dumps(GROUPS)}",
    "data.partition=iid",
    "data.num_clients=2",
    "data.max_examples=12",
    "federation.clients_per_round=2",
    "federation.rounds=2",
    "client.local_steps=1",
    "client.batch_size=2",
    "client.max_length=48",
    "client.max_eval_examples=2",
    "monitor.enabled=true",
    "monitor.utility_examples=2",
    "monitor.judge_check_prompts=0",
    f"monitor.groups={json.dumps(GROUPS)}",
    "monitor.group_items=6",
    'monitor.server_items={bbq = 2, crows = 2, harmful = 130, benign = 2, ood = 3, capability = 110}',
    'monitor.suite_sizes={bbq = 44, crows = 18, harmful = 130, benign = 12, ood = 12, capability = 110}',
    "monitor.server_blocks=1",
    "monitor.paired_min_verdict=weak",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups") / "run"
    fs.start(load_config(None, CFG), out)
    return out


def test_the_global_model_is_tested_for_a_gap_across_groups_every_round(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        e = row["monitor"]["global_change"]["fairness_collapse.global_group_gap"]
        assert e["change"] >= 0 and e["se"] >= 0 and e["margin"] == 0.1 and e["threshold"] > 0
        assert row["fairness_collapse"]["global_group_gap"]["value"] == pytest.approx(e["change"])
    setup = json.loads((run / "monitor" / "setup.json").read_text())
    assert sorted(setup["round0_group_losses"]) == GROUPS
    assert all(len(v) == 6 for v in setup["round0_group_losses"].values())
    report = json.loads((run / "report.json").read_text())
    fair = next(m for m in report["modes"] if m["id"] == "fairness_collapse")
    [metric] = [x for x in fair["metrics"] if x["name"] == "fairness_collapse.global_group_gap"]
    assert metric["direction"] == "increase" and metric["detector"] == "paired_cusum"
    assert [p["round"] for p in metric["streams"][0]["series"]] == [0, 1, 2]
    assert verify(run).ok


def test_the_gap_shares_the_paired_tests_part_of_the_false_alarm_budget(run):
    cfg = load_config(run / "config.toml")
    m = cfg.monitor
    g = next(e for e in read_entries(run) if e["kind"] == "action")["payload"]["global_tests"]
    assert g["group_gap"] is True and g["budget_share"] == pytest.approx(m.global_test_share)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    e = rows[0]["monitor"]["global_change"]["fairness_collapse.global_group_gap"]
    alpha = m.target_false_alarm_rate * m.global_test_share / g["streams"]
    blocks = block_schedule(cfg.federation.rounds, m.server_blocks)
    assert e["threshold"] == pytest.approx(calibrate_threshold(blocks, m.paired_k, alpha, float(m.group_items - 1)))


def test_no_client_trains_or_evaluates_on_the_public_group_texts(run):
    cfg = load_config(run / "config.toml")
    _, clients = load_clients(cfg)
    probed = {(i.prompt.strip(), i.continuation.strip()) for g in GROUPS for i in probes.group_items(g, 6)}
    seen = {(e.prompt.strip(), e.response.strip()) for c in clients for e in [*c.train, *c.heldout]}
    assert probed and not probed & seen
    # without the monitor the same pairs are ordinary data again
    off = load_config(None, [*CFG, "monitor.enabled=false", "data.max_examples=100000", "data.num_clients=1",
                                 "federation.clients_per_round=1"])
    _, everything = load_clients(off)
    assert probed & {(e.prompt.strip(), e.response.strip()) for c in everything for e in [*c.train, *c.heldout]}


def test_resume_refuses_changed_group_texts(run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    shutil.copytree(client_store_dir(run), client_store_dir(d))  # the clients' side of the run
    shutil.rmtree(d / "checkpoints" / "round-2")
    setup = json.loads((d / "monitor" / "setup.json").read_text())
    setup["group_suite_sha256"] = "0" * 64
    (d / "monitor" / "setup.json").write_text(json.dumps(setup))
    with pytest.raises(UserError, match="public group texts"):
        dispatch.resume_job(d, fs.SilentReporter())
