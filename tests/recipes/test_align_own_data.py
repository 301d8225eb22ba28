"""A user's own preference pairs (alignment.data) drive the alignment recipe; ignored data settings are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from openpfi.assembly.compatibility import check_combinations
from openpfi.config import load_config
from openpfi.data.preference_file import load_user_preferences
from openpfi.engines.inprocess import SilentReporter
from openpfi.errors import UserError
from openpfi.recipes.dispatch import start_job

SETS = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
    "client.local_steps=1", "client.max_length=48", "client.batch_size=2", "monitor.enabled=false",
    "alignment.eval_pairs=2", "alignment.eval_prompts=2", "alignment.client_eval_pairs=2",
]


def _pairs(path: Path, clients: tuple[str, ...] = ("Acme", "globex"), n: int = 5, objective: bool = True) -> Path:
    with path.open("w") as f:
        for c in clients:
            for i in range(n):
                row = {"client": c, "prompt": f"Q{i} of {c}", "chosen": "Settings, then Reset.", "rejected": "No."}
                if objective:
                    row["objective"] = "helpful" if i % 2 else "harmless"
                f.write(json.dumps(row) + "\n")
    return path


def test_dpo_trains_on_the_files_clients_and_records_its_hash(tmp_path: Path) -> None:
    # Prepare
    f = _pairs(tmp_path / "p.jsonl")
    cfg = load_config(None, [*SETS, "alignment.method=dpo", f"alignment.data={json.dumps(str(f))}"])
    # Execute
    run = start_job(cfg, tmp_path / "run", False, SilentReporter())
    # Assert
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["alignment"]["data"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert manifest["data"]["source_files"][str(f.resolve())] == manifest["alignment"]["data"]["sha256"]
    assert sorted(manifest["alignment"]["clients"]) == ["acme", "globex"]
    assert sorted(run.read_metrics()[-1]["sampled"]) == ["acme", "globex"]


def test_split_keeps_a_seeded_heldout_share_per_client(tmp_path: Path) -> None:
    f = _pairs(tmp_path / "p.jsonl", n=10)
    user = load_user_preferences(str(f), ["harmless", "helpful"], "firm", 2, seed=0, heldout_fraction=0.2)
    acme = user.clients[0]
    assert (acme.client_id, len(acme.heldout), sum(len(v) for v in acme.train.values())) == ("acme", 2, 8)
    assert user.pairs == 20 and user.skipped_rows == 0
    again = load_user_preferences(str(f), ["harmless", "helpful"], "firm", 2, seed=0, heldout_fraction=0.2)
    assert [p.id for p in again.clients[0].heldout] == [p.id for p in acme.heldout]


@pytest.mark.parametrize(("sets", "message"), [
    (["alignment.method=dpo", "data.num_clients=3", "federation.clients_per_round=3"],
     "alignment.data holds 2 clients (Acme, globex) but data.num_clients = 3; set data.num_clients = 2"),
    (["alignment.method=firm", "NOOBJ"], "field 'objective' is missing; the multi-objective methods need one of"),
    (["alignment.method=dpo", "alignment.objectives=[\"helpful\"]", "alignment.preference=[1.0]"],
     "objective 'harmless' is not in alignment.objectives = ['helpful']"),
])
def test_bad_preference_files_are_refused_with_file_and_line(tmp_path: Path, sets: list[str], message: str) -> None:
    f = _pairs(tmp_path / "p.jsonl", objective="NOOBJ" not in sets)
    sets = [s for s in sets if s != "NOOBJ"]
    cfg = load_config(None, [*SETS, *sets, f"alignment.data={json.dumps(str(f))}"])
    with pytest.raises(UserError, match="^.*" + message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        start_job(cfg, tmp_path / "run", False, SilentReporter())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("sets", "message"), [
    (["alignment.data=x.jsonl"], "alignment.data is read by the alignment methods only"),
    (["alignment.method=dpo", 'data.source="jsonl"', "data.path=own.jsonl"],
     'data.source is not read by alignment.method = "dpo"'),
    (["alignment.method=dpo", "alignment.data=x.jsonl", "alignment.pairs_per_client=10"],
     "alignment.pairs_per_client deals the shipped pairs and is not used with alignment.data"),
    (["alignment.method=sft", "data.strict=false"], 'data.strict is not read by alignment.method = "sft"'),
])
def test_data_settings_an_alignment_job_ignores_are_refused(sets: list[str], message: str) -> None:
    cfg = load_config(None, sets)
    with pytest.raises(UserError, match=message):
        check_combinations(cfg)
