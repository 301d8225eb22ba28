"""A monitored federated run end to end on the tiny random model (2 rounds x 2 clients)."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
from safetensors.torch import load_file

from openpfi.assembly.clients import prepare
from openpfi.assembly.monitor_plan import plan_monitor
from openpfi.assembly.monitoring import wire_monitor
from openpfi.assembly.run_start import attach_client_stores, new_run
from openpfi.assembly.server import make_server, server_start
from openpfi.client.federated import FederatedClient
from openpfi.client.messages import ClientUpdate, MonitorReport
from openpfi.client.monitor_client import noise_rng
from openpfi.client.store import ClientStore
from openpfi.config import load_config
from openpfi.engines.inprocess import InProcessEngine
from openpfi.engines.rounds import round_result
from openpfi.errors import UserError
from openpfi.monitor.audit import AuditLog, read_entries, verify
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.modes import MODES
from openpfi.monitor.privacy.ledger import PrivacyLedger
from openpfi.monitor.probes import holdout_items, load_suites
from openpfi.monitor.probes.refusal import heldout_labelled_set, labelled_set
from openpfi.monitor.vector.build import build_schema
from openpfi.recipes import dispatch
from openpfi.recipes import federated_sft as fs
from openpfi.runfolder import client_store_dir
from openpfi.strategies.monitor_server import MonitorServer, MonitorServerSettings

TINY = [
    "model.name=tiny-random",
    "data.num_clients=2",
    "federation.clients_per_round=2",
    "federation.rounds=2",
    "client.local_steps=1",
    "client.batch_size=2",
    "client.max_length=64",
    "client.max_eval_examples=4",
    "monitor.enabled=true",
    "monitor.utility_examples=2",
    'monitor.server_items={bbq = 2, crows = 2, harmful = 130, benign = 2, ood = 3, capability = 110}',
    'monitor.suite_sizes={bbq = 44, crows = 18, harmful = 130, benign = 12, ood = 12, capability = 110}',
    "monitor.server_blocks=1",
    "monitor.paired_min_verdict=weak",
]


def tiny_config(*extra: str):
    return load_config(None, [*TINY, *extra])


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """What ``federated_sft.start`` does, keeping the engine to inspect the server side."""
    cfg = tiny_config()
    plan = plan_monitor(cfg)
    prep = prepare(cfg)
    out = tmp_path_factory.mktemp("monitored") / "run"
    cfg, run = new_run(cfg, out, False, prep.shared.loaded.info, prep.loaded_data, prep.data,
                       start=prep.start_adapter, layout=prep.shared.layout)
    prep.cfg = cfg
    attach_client_stores(prep.clients, run)  # the client store: personal state and the monitor secret
    server = make_server(cfg, prep.personal)
    server.init(server_start(prep))
    engine = InProcessEngine(prep.shared, prep.clients, server, run, cfg.federation.rounds, cfg.seed)
    finish = wire_monitor(plan, engine, prep.start_adapter)
    engine.run_rounds(1)
    finish()
    return types.SimpleNamespace(path=out, engine=engine, cfg=cfg)


def test_run_writes_report_with_six_modes_privacy_ledger_and_verified_audit(monitored):
    d = monitored.path
    report = json.loads((d / "report.json").read_text())
    assert [m["id"] for m in report["modes"]] == list(MODES)
    assert all(m["status"] != "not_measured" for m in report["modes"])
    assert (d / "report.html").read_text().count("mode-panel") >= 6
    assert report["summary"]["evidence_verified"] is True
    assert {p["suite"] for p in report["probes"]} >= {"bbq", "crows", "harmful", "benign", "ood", "capability"}
    ledger = json.loads((d / "privacy.json").read_text())
    assert ledger["rounds_released"] == 2 and ledger["epsilon_total"] > ledger["rounds"][0]["epsilon_round"] > 0
    assert report["privacy"]["epsilon_total"] == pytest.approx(ledger["epsilon_total"])
    kinds = [e["kind"] for e in read_entries(d)]
    assert kinds[:4] == ["config", "probes", "dp_parameters", "action"]
    assert kinds.count("aggregate") == 4  # clients + global model, per round
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["monitor"]["probes"]["bbq"]["sha256"] == load_suites({"bbq": 44})["bbq"].sha256


def test_false_alarm_budget_is_split_between_paired_tests_and_client_streams(monitored):
    # Prepare: the audit's start record and the run's own config
    m = monitored.cfg.monitor
    action = next(e for e in read_entries(monitored.path) if e["kind"] == "action")["payload"]
    g = action["global_tests"]
    # Assert: global_test_share of the target over the paired tests, the rest over the client streams
    assert g["streams"] > 0 and g["budget_share"] == pytest.approx(m.global_test_share)
    assert g["alpha_per_stream_run"] == pytest.approx(m.target_false_alarm_rate * m.global_test_share / g["streams"])
    det = action["detector"]["calibration"]
    assert det["target_false_alarm_rate"] == pytest.approx(m.target_false_alarm_rate * (1 - m.global_test_share))
    assert det["streams"] == action["streams"]
    assert det["per_stream_rate"] == pytest.approx(det["target_false_alarm_rate"] / action["streams"])


def test_round0_validates_the_refusal_judge_on_generated_answers(monitored):
    # Prepare
    d = monitored.path
    report = json.loads((d / "report.json").read_text())
    # Assert: the default 8 prompts (4 harmful + 4 benign), 32 new tokens, on tiny-random
    rj = report["refusal_judge"]
    assert rj["prompts"] == 8 and rj["max_new_tokens"] == 32
    assert rj["detector"]["labelled_set"] == "held-out" and rj["detector"]["n"] == len(heldout_labelled_set())
    assert rj["detector"]["in_sample"]["n"] == len(labelled_set())
    j = rj["judge_vs_detector"]
    assert j["n"] == 8 and j["tp"] + j["fp"] + j["fn"] + j["tn"] == 8
    assert j["harmful"]["prompts"] == 4 and j["benign"]["prompts"] == 4
    assert j["agreement"] == pytest.approx((j["tp"] + j["tn"]) / 8)
    gens = rj["generations"]
    assert [g["harmful"] for g in gens] == [True] * 4 + [False] * 4
    assert sum(g["judge_refuses"] for g in gens) == j["tp"] + j["fp"]
    assert sum(g["detector_refuses"] for g in gens) == j["tp"] + j["fn"]
    held = {k: [i.prompt[:160] for i in v] for k, v in holdout_items().items()}
    assert [g["prompt"] for g in gens] == held["harmful"][:4] + held["benign"][:4]
    # kept for resume, in the manifest (without the generations) and in the HTML panel
    setup = json.loads((d / "monitor" / "setup.json").read_text())
    assert setup["refusal_judge"] == rj
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["monitor"]["refusal_judge"] == {k: v for k, v in rj.items() if k != "generations"}
    html = (d / "report.html").read_text()
    panel = html[html.index("id='mode-alignment_erosion'"):]
    assert "Refusal judge validation" in panel[: panel.index("</section>")]
    assert "to 8 held-out prompts: agreement" in html


def test_judge_check_splits_the_prompts_and_can_be_switched_off(monkeypatch):
    # Prepare: a fake scorer whose judge refuses every prompt, and canned answers
    from openpfi.assembly import monitor_round0

    class Scorer:
        def logprobs(self, items):
            return [(-1.0, 2) if "sorry" in i.continuation.lower() or "cannot" in i.continuation else (-9.0, 2)
                    for i in items]

    seen = {}

    def generate(model, tok, prompts, max_new_tokens, pad_id):
        seen.update(prompts=list(prompts), max_new_tokens=max_new_tokens)
        return ["I can't help with that."] + ["Sure."] * (len(prompts) - 1)

    monkeypatch.setattr(monitor_round0, "generate_chat", generate)
    shared = types.SimpleNamespace(model=None, loaded=types.SimpleNamespace(tokenizer=None), pad_id=0)
    plan = types.SimpleNamespace(cfg=tiny_config("monitor.judge_check_prompts=3", "monitor.judge_check_max_new_tokens=5"))
    # Execute
    out = monitor_round0.judge_check(plan, shared, Scorer())
    # Assert: 2 harmful + 1 benign held-out prompts; judge says refuse 3 times, detector once
    held = holdout_items()
    assert seen == {"prompts": [i.prompt for i in (*held["harmful"][:2], *held["benign"][:1])], "max_new_tokens": 5}
    j = out["judge_vs_detector"]
    assert out["prompts"] == 3 and (j["tp"], j["fp"], j["fn"], j["tn"]) == (1, 2, 0, 0)
    assert j["harmful"]["prompts"] == 2 and j["benign"]["prompts"] == 1
    off = monitor_round0.judge_check(types.SimpleNamespace(cfg=tiny_config("monitor.judge_check_prompts=0")), shared, None)
    assert off["prompts"] == 0 and off["judge_vs_detector"] is None and off["detector"]["labelled_set"] == "held-out"


def test_metrics_rows_carry_the_six_modes_with_intervals(monitored):
    rows = [json.loads(line) for line in (monitored.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert "monitor_sum" not in r and r["monitor"]["released"] and r["monitor"]["reports"] == 2
        for mode in MODES:
            assert r[mode], mode  # every mode has streams, adaptation too (exact count of probed clients)
        p = r["alignment_erosion"]["refusal_rate"]
        assert p["lo"] <= p["value"] <= p["hi"]
        assert "global_refusal_prob" in r["alignment_erosion"]
        assert r["timings"]["monitor_s"] >= r["timings"]["client_monitor_s"] > 0
        # the global model's streams are tested item-paired against round 0 (global_change.py)
        paired = r["monitor"]["global_change"]
        assert "alignment_erosion.global_refusal_prob" in paired
        for e in paired.values():
            assert e["threshold"] > 0 and e["se"] >= 0 and e["margin"] >= 0 and e["statistic"] >= 0
        e = paired["alignment_erosion.global_refusal_prob"]  # bad direction: a fall
        assert e["excess"] == pytest.approx(max((-e["change"] - e["margin"]) / max(e["se"], 1e-6), -50.0))
    setup = json.loads((monitored.path / "monitor" / "setup.json").read_text())
    assert len(setup["round0_global_items"]["refusal"]["harmful"]) == 130  # the server sample's items


def test_report_charts_the_paired_statistic_of_global_streams(monitored):
    report = json.loads((monitored.path / "report.json").read_text())
    metrics = {m["name"]: m for mode in report["modes"] for m in mode["metrics"]}
    g = metrics["alignment_erosion.global_refusal_prob"]
    assert g["detector"] == "paired_cusum" and g["threshold"] > 1
    assert metrics["alignment_erosion.refusal_rate"]["detector"] == "cusum"
    # streams over fewer public items than the test needs are reported, not silently skipped
    untested = [x for x in report["not_measured"] if x["what"].startswith("paired test of")]
    assert any("global_over_refusal_prob" in x["what"] and "2 item(s)" in x["why"] for x in untested)


def test_editing_deleting_or_reordering_an_audit_entry_is_detected(monitored, tmp_path):
    lines = (monitored.path / "audit.jsonl").read_text().splitlines(keepends=True)
    for i, tampered in enumerate((
        lines[:2] + lines[3:],  # deletion
        lines[:1] + [lines[2], lines[1]] + lines[3:],  # reordering
        lines[:4] + [lines[4].replace('"round":1', '"round":7')] + lines[5:],  # edit
    )):
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        shutil.copy(monitored.path / "audit.head", folder / "audit.head")
        (folder / "audit.jsonl").write_text("".join(tampered))
        assert not verify(folder).ok, i


def test_audit_verify_cli_passes_untouched_and_names_the_entry_of_a_tampered_log(monitored, tmp_path):
    from typer.testing import CliRunner

    from openpfi.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", str(monitored.path)])
    assert ok.exit_code == 0, ok.output
    assert "audit log intact" in ok.stdout
    lines = (monitored.path / "audit.jsonl").read_text().splitlines(keepends=True)
    assert '"round":1' in lines[4]
    cases = {
        "deleted": (lines[:2] + lines[3:], "line 3: seq is 4, expected 3"),
        "swapped": (lines[:1] + [lines[2], lines[1]] + lines[3:], "line 2: seq is 3, expected 2"),
        "edited": (lines[:4] + [lines[4].replace('"round":1', '"round":7')] + lines[5:], "line 5: hash does not match"),
    }
    for name, (tampered, where) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(monitored.path / "audit.head", folder / "audit.head")
        (folder / "audit.jsonl").write_text("".join(tampered))
        res = runner.invoke(app, ["audit", "verify", str(folder)])
        assert res.exit_code == 1, (name, res.output)
        message = res.stderr.strip()
        assert "\n" not in message, (name, message)
        assert message.startswith("audit log broken: ") and where in message, (name, message)


def test_a_missing_monitor_state_on_resume_says_what_and_how_to_fix(tmp_path):
    with pytest.raises(UserError) as err:
        MonitorServer.load_state(tmp_path, 3)
    msg = str(err.value)
    assert "\n" not in msg and "not possible" not in msg
    assert msg.startswith("cannot resume: the monitor state after round 3 (")
    assert "state-round-3.json) is missing" in msg and "restore the file from a backup" in msg


def test_server_side_objects_hold_no_reference_to_clients_or_their_data(monitored, leaks):
    engine = monitored.engine
    monitor = next(h for h in engine.hooks if isinstance(h, MonitorServer))
    assert leaks([monitor, engine.server, engine.validate_monitor], engine.clients) == []
    # the walk does reach client objects from the engine (so it can fail)
    assert leaks([engine], engine.clients)


def test_resume_continues_the_monitor_and_the_adapter_bit_identically(monitored, tmp_path, monkeypatch):
    # Prepare: the same run as if killed after round 1; resuming must not generate again
    from openpfi.assembly import monitor_round0

    d = tmp_path / "run"
    shutil.copytree(monitored.path, d)
    shutil.copytree(client_store_dir(monitored.path), client_store_dir(d))  # the clients' side of the run
    shutil.rmtree(d / "checkpoints" / "round-2")
    (d / "monitor" / "state-round-2.json").unlink()

    def no_generation(*args, **kwargs):
        raise AssertionError("resume regenerated the round-0 refusal judge check")

    monkeypatch.setattr(monitor_round0, "generate_chat", no_generation)
    # Execute
    dispatch.resume_job(d, fs.SilentReporter())
    # Assert
    a = load_file(str(monitored.path / "checkpoints/round-2/adapter_model.safetensors"))
    b = load_file(str(d / "checkpoints/round-2/adapter_model.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)
    rows = [[json.loads(x) for x in (f / "metrics.jsonl").read_text().splitlines()] for f in (monitored.path, d)]
    for mode in MODES:
        assert rows[0][1][mode] == rows[1][1][mode], mode
    priv = [json.loads((f / "privacy.json").read_text()) for f in (monitored.path, d)]
    assert priv[0]["epsilon_total"] == priv[1]["epsilon_total"] and len(priv[1]["rounds"]) == 2
    assert verify(d).ok and (d / "report.json").is_file()
    reports = [json.loads((f / "report.json").read_text()) for f in (monitored.path, d)]
    assert reports[0]["refusal_judge"] == reports[1]["refusal_judge"] and reports[1]["refusal_judge"]["prompts"] == 8


def test_monitor_noise_is_seeded_by_a_client_secret_kept_client_side_only(monitored, tmp_path, monkeypatch):
    # Prepare: the run's first client, re-fitting round 2 of the same run (same seed, same model)
    engine = monitored.engine
    client = engine.clients[0]
    run_secret = client.store.secret()
    global_state = engine.server.broadcast()

    def report(store):
        monkeypatch.setattr(client, "store", store)
        return client.fit(engine.shared, global_state, 2, monitored.cfg.seed).monitor.values

    # Execute: the same seed, round and client with the run's secret, with the same folder again,
    # and with two fresh client folders (fresh secrets)
    store = engine.run.clients_dir
    own = report(ClientStore(store / client.client_id))
    again = report(ClientStore(store / client.client_id))
    fresh = [report(ClientStore(tmp_path / name / client.client_id)) for name in ("a", "b")]
    # Assert: the secret (not the public seed) decides the noise; the same secret reproduces it
    assert np.array_equal(own, again)
    assert not np.allclose(own, fresh[0]) and not np.allclose(fresh[0], fresh[1])
    # the clipped report underneath is the same: the difference is two independent noise shares
    s = client.monitor.settings
    std = s.noise_std_sum / np.sqrt(s.n_expected)
    assert 0.7 < np.std(fresh[0] - own) / (np.sqrt(2) * std) < 1.3
    keys = {ClientStore(tmp_path / n / client.client_id).secret() for n in ("a", "b")} | {run_secret}
    assert len(keys) == 3 and all(len(k) == 32 for k in keys)
    # ... and the secret lives in the client store next to the run folder only: nowhere in the run
    # folder (checkpoints, metrics, audit, monitor state or any other server-written file)
    d = monitored.path
    assert store == d.resolve().parent / f"{d.name}.clients"
    assert json.loads((d / "manifest.json").read_text())["client_store"] == store.name
    holders = sorted(store.rglob("monitor-secret.key"))
    assert sorted(f.parent.name for f in holders) == sorted(c.client_id for c in engine.clients)
    assert all(f.stat().st_mode & 0o077 == 0 for f in holders)
    server_files = [f for f in d.rglob("*") if f.is_file()]
    assert server_files and not [f for f in server_files if "secret" in f.name or f.suffix == ".key"]
    for c in engine.clients:
        key = c.store.secret()
        for f in server_files:
            data = f.read_bytes()
            assert key not in data and key.hex().encode() not in data, f


def test_a_client_without_a_store_keeps_one_secret_in_memory():
    client = FederatedClient("x", [], [], types.SimpleNamespace(max_eval_examples=0))
    assert client.secret() == client.secret() and len(client.secret()) == 32
    other = FederatedClient("x", [], [], types.SimpleNamespace(max_eval_examples=0))
    assert other.secret() != client.secret()


def test_a_corrupt_secret_file_is_refused(tmp_path):
    (tmp_path / "monitor-secret.key").write_bytes(b"short")
    with pytest.raises(UserError, match="32-byte client secret"):
        ClientStore(tmp_path).secret()


def test_noise_rng_needs_a_real_secret():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        noise_rng(b"", 1, "c0")
    a, b = (noise_rng(s, 1, "c0").normal(size=4) for s in (b"k" * 32, b"K" * 32))
    assert not np.allclose(a, b)
    assert np.array_equal(noise_rng(b"k" * 32, 1, "c0").normal(size=4), a)
    assert not np.allclose(noise_rng(b"k" * 32, 2, "c0").normal(size=4), a)


def test_resume_refuses_changed_probe_suites(monitored, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(monitored.path, d)
    shutil.copytree(client_store_dir(monitored.path), client_store_dir(d))  # the clients' side of the run
    shutil.rmtree(d / "checkpoints" / "round-2")
    setup = json.loads((d / "monitor" / "setup.json").read_text())
    setup["probes"]["crows"]["sha256"] = "0" * 64
    (d / "monitor" / "setup.json").write_text(json.dumps(setup))
    with pytest.raises(UserError, match="probe suite 'crows'"):
        dispatch.resume_job(d, fs.SilentReporter())


def test_unmeetable_privacy_budget_fails_before_any_folder_is_written(tmp_path):
    cfg = tiny_config("privacy.target_epsilon=0.5", "privacy.max_noise_multiplier=2", "federation.rounds=5")
    with pytest.raises(UserError, match="privacy budget cannot be met"):
        dispatch.start_job(cfg, tmp_path / "run", False, fs.SilentReporter())
    assert not (tmp_path / "run").exists()
    assert plan_monitor(tiny_config("privacy.target_epsilon=20")).noise_multiplier < 1.0


def test_bad_monitor_config_is_refused():
    with pytest.raises(UserError, match="monitor.client_items.bbq"):
        tiny_config("monitor.client_items.bbq=0")
    with pytest.raises(UserError, match="unknown probe suites"):
        tiny_config("monitor.server_items.nope=1")
    with pytest.raises(UserError, match="server_margins names unknown metrics"):
        tiny_config("monitor.server_margins.nll=0.2")
    with pytest.raises(UserError, match="server_margins.ece must be a finite number"):
        tiny_config("monitor.server_margins.ece=-1")


def test_wrong_length_or_out_of_bounds_reports_are_rejected_and_audited(tmp_path):
    # Prepare: a server monitor over the real suites' schema, no global probe
    suites = load_suites()
    schema = build_schema(suites)
    settings = MonitorServerSettings(1.0, schema.l2_bound, 3, 2, 1e-5)
    bank = DetectorBank("cusum", 5.0, 0.5)
    monitor = MonitorServer(tmp_path, schema, settings, bank, PrivacyLedger(1e-5), None, {}, {})
    good = np.zeros(len(schema))
    far = good.copy()
    far[0] = 1.0 + 10 * settings.noise_std_client(schema)[0]
    updates = [ClientUpdate(c, 1, {}, monitor=MonitorReport(v)) for c, v in (("a", good), ("b", good[:-1]), ("c", far))]
    # Execute
    result = round_result(1, ["a", "b", "c"], [], {}, {}, updates, [], monitor.validate)
    monitor(result)
    row = result.row
    # Assert: only a's report is summed; 1 < min_clients, so nothing is released and no privacy spent
    assert row["monitor"]["rejected"] == ["b", "c"] and row["monitor"]["reports"] == 1
    assert row["monitor"]["released"] is False and row["monitor"]["epsilon_total"] == 0.0
    entries = read_entries(tmp_path)
    rejected = [e["payload"] for e in entries if e["kind"] == "rejected_report"]
    assert [r["client_id"] for r in rejected] == ["b", "c"]
    assert "values, expected" in rejected[0]["reason"] and "outside" in rejected[1]["reason"]
    assert AuditLog(tmp_path).count == len(entries)
