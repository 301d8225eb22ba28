"""End to end on tiny-random: the CLI writes the run folder of DESIGN.md; bad input leaves nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from openpfi.cli import app
from openpfi.client.store import client_figures
from openpfi.monitor.audit import verify
from openpfi.runfolder import client_store_dir

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "examples" / "demo.toml")
TINY = [
    "--set", "model.name=tiny-random", "--set", "data.num_clients=2", "--set", "federation.clients_per_round=2",
    "--set", "federation.rounds=2", "--set", "client.local_steps=2", "--set", "client.max_length=64",
    "--set", "client.batch_size=2", "--set", "monitor.enabled=false", "--set", "data.max_examples=40", "--set", "data.min_examples=10",
]
runner = CliRunner()


def test_run_writes_the_run_folder(tmp_path: Path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    assert "run folder" in res.output and "worst client" in res.output and "Simulation view" in res.output
    for f in ("config.toml", "manifest.json", "metrics.jsonl", "audit.jsonl"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    store = client_store_dir(out)  # the clients' own storage: next to the run folder, never in it
    figures = client_figures(store)
    assert len(figures) == 2 and not (out / "clients").exists()
    for r in rows:
        assert r["sampled"] == sorted(figures) and "clients" not in r and "eval_loss_worst" not in r
        own = [f[r["round"]]["eval_loss"] for f in figures.values()]
        assert r["eval_loss_mean"] == pytest.approx(sum(own) / 2)  # the server's mean, from their sum
        assert r["bytes_up"] > 0 and r["bytes_down"] > 0
        assert set(r["timings"]) >= {"train_s", "aggregate_s", "evaluate_s", "serialize_s", "round_s"}
    adapter = load_file(str(out / "checkpoints" / "round-2" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter) and any("lora_B" in k for k in adapter)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["client_store"] == "run.clients" and manifest["privacy"] == {"share_client_metrics": False}
    assert manifest["model"]["name"] == "tiny-random" and len(manifest["model"]["sha256"]) == 64
    assert manifest["model"]["licence"]
    assert manifest["seed"] == 0 and manifest["data"]["clients"] == 2
    assert all(len(h) == 64 for h in manifest["data"]["source_files"].values())
    assert "federation.rounds" not in (out / "config.toml").read_text()  # TOML sections, resolved
    assert "rounds = 2" in (out / "config.toml").read_text()
    assert verify(out).ok
    # the report command prints the table again
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and "worst client" in res.output
    # never overwritten without --force
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY])
    assert res.exit_code == 2 and "--force" in res.output


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "federation.bogus=1"], "bogus"),
        (["--set", "data.min_examples=100000", "--set", "data.max_examples=100000"], "num_clients"),
        (["--set", "data.source=jsonl", "--set", "data.path=/nonexistent.jsonl"], "nonexistent.jsonl"),
        (["--set", "model.name=gpt-4o"], "open weights"),
    ],
)
def test_bad_input_exit_2_no_folder(tmp_path: Path, extra: list[str], needle: str):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY, *extra])
    assert res.exit_code == 2, res.output
    assert needle in res.output.replace("\n", "")
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_jsonl_strict_and_lenient(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    rows = [json.dumps({"client": f"u{i % 2}", "prompt": f"q{i}", "response": f"a{i}"}) for i in range(30)]
    rows.insert(5, "{not json")
    data.write_text("\n".join(rows) + "\n")
    common = ["--set", "data.source=jsonl", "--set", f"data.path={json.dumps(str(data))}", "--set", "data.min_examples=5"]
    res = runner.invoke(app, ["run", DEMO, "--out", str(tmp_path / "a"), "--quiet", *TINY, *common])
    assert res.exit_code == 2 and "line 6" in res.output.replace("\n", "")
    res = runner.invoke(app, ["run", DEMO, "--out", str(tmp_path / "b"), "--quiet", *TINY, *common, "--set", "data.strict=false"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["data"]["skipped_rows"] == 1


def test_share_client_metrics_keeps_raw_per_client_figures_on_the_server(tmp_path: Path):
    out = tmp_path / "run"
    monitored = ["--set", "monitor.enabled=true", "--set", "monitor.judge_check_prompts=0", "--set",
                 "monitor.utility_examples=2", "--set", "monitor.calibration_sims=1000", "--set",
                 "monitor.server_items={bbq = 2, crows = 2, harmful = 5, benign = 2, ood = 3, capability = 2}",
                 "--set", "federation.rounds=1"]
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY, *monitored, "--set",
                              "privacy.share_client_metrics=true"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["system"]["client_metrics_shared"] is True
    assert "Per-client figures are shared with the server in the clear" in (out / "report.html").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    own = client_figures(client_store_dir(out))
    for r in rows:
        assert sorted(r["clients"]) == sorted(own)
        for cid, c in r["clients"].items():
            assert c["eval_loss"] == own[cid][r["round"]]["eval_loss"]
        assert r["eval_loss_worst"] == max(c["eval_loss"] for c in r["clients"].values()) >= r["eval_loss_mean"]
    assert json.loads((out / "manifest.json").read_text())["privacy"] == {"share_client_metrics": True}


def test_the_client_store_is_guarded_like_the_run_folder(tmp_path: Path):
    # Prepare: a finished run and its client store
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY]).exit_code == 0
    store = client_store_dir(out)
    # Execute / Assert: an empty run folder whose client store is left over is refused without --force
    for f in out.iterdir():
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY])
    assert res.exit_code == 2 and "client store" in res.output and "--force" in res.output
    # the client store itself is never a run folder
    res = runner.invoke(app, ["run", DEMO, "--out", str(store), "--quiet", *TINY, "--force"])
    assert res.exit_code == 2 and "client store of another run" in res.output
    # a folder in the client store's place that no run made is never deleted, even with --force
    other = tmp_path / "mine"
    (tmp_path / "mine.clients").mkdir()
    (tmp_path / "mine.clients" / "notes.txt").write_text("keep me")
    res = runner.invoke(app, ["run", DEMO, "--out", str(other), "--quiet", *TINY, "--force"])
    assert res.exit_code == 2 and "not an openpfi client store" in res.output
    assert (tmp_path / "mine.clients" / "notes.txt").read_text() == "keep me" and not other.exists()
    # with --force the run and its own client store start over
    res = runner.invoke(app, ["run", DEMO, "--out", str(out), "--quiet", *TINY, "--force"])
    assert res.exit_code == 0, res.output
    assert sorted(client_figures(store)) == sorted(json.loads(
        (out / "metrics.jsonl").read_text().splitlines()[0])["sampled"])
