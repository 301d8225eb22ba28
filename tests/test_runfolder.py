from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpfi.errors import UserError
from openpfi.runfolder import Checkpoint, RunFolder
from openpfi.runfolder.adapter import AdapterLayout


def test_create_refuses_non_empty_without_force(tmp_path: Path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="--force"):
        RunFolder.create(d, force=False)
    assert (d / "keep.txt").read_text() == "precious"
    RunFolder.create(d, force=True)
    assert not (d / "keep.txt").exists()


def test_checkpoint_roundtrip_and_completed_rounds(tmp_path: Path):
    run = RunFolder.create(tmp_path / "run", force=False)
    run.write_start({}, AdapterLayout(2, 4.0, ("q_proj",)))
    adapter = {"b": torch.tensor([1.0, 2.0]), "a": torch.zeros(2, 2)}
    run.save_checkpoint(Checkpoint(1, adapter, {"m::a": torch.ones(2, 2)}, {"seed": 0}))
    (run.path / "checkpoints" / ".round-2.tmp").mkdir()  # a torn write of round 2
    assert run.completed_rounds() == [1]
    ck = run.load_checkpoint(1)
    assert torch.equal(ck.adapter["b"], adapter["b"])
    assert torch.equal(ck.server_state["m::a"], torch.ones(2, 2))
    assert ck.meta["seed"] == 0


def test_metrics_truncation_and_torn_line(tmp_path: Path):
    run = RunFolder.create(tmp_path / "run", force=False)
    for r in (1, 2, 3):
        run.append_metrics({"round": r})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"round": 4, "tra')  # killed mid-write
    assert [r["round"] for r in run.read_metrics()] == [1, 2, 3]
    run.truncate_metrics(2)
    assert [r["round"] for r in run.read_metrics()] == [1, 2]


def test_open_requires_a_run_folder(tmp_path: Path):
    with pytest.raises(UserError, match="not an openpfi run folder"):
        RunFolder.open(tmp_path)
