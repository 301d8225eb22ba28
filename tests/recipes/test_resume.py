"""Interrupted mid-round, `resume` ends with the bit-identical adapter of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from openpfi.config import load_config
from openpfi.engines.inprocess import SilentReporter
from openpfi.recipes import federated_sft

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "model.name=tiny-random", "data.num_clients=3", "federation.clients_per_round=2", "federation.rounds=3",
    "client.local_steps=3", "client.max_length=48", "client.batch_size=2", "monitor.enabled=false",
    "data.max_examples=30", "data.min_examples=10", "federation.strategy=fedadam", "federation.server_lr=0.01",
]


class Crash(KeyboardInterrupt):
    pass


class CrashInRound(SilentReporter):
    def __init__(self, round_num: int):
        self.round_num = round_num
        self.current = 0

    def round_start(self, round_num, rounds, sampled):
        self.current = round_num

    def step(self, step, total, loss, tokens_per_s):
        if self.current == self.round_num and step == 2:
            raise Crash()


@pytest.mark.parametrize("crash_round", [1, 2])
def test_resume_is_bit_identical(tmp_path: Path, crash_round: int):
    cfg = load_config(ROOT / "examples" / "demo.toml", SETS)
    full = federated_sft.start(cfg, tmp_path / "full")
    with pytest.raises(Crash):
        federated_sft.start(cfg, tmp_path / "cut", reporter=CrashInRound(crash_round))
    assert not (tmp_path / "cut" / "checkpoints" / f"round-{crash_round}").exists()
    federated_sft.resume(tmp_path / "cut")
    for name in ("adapter_model.safetensors", "server_state.safetensors"):
        a = (full.path / "checkpoints" / "round-3" / name).read_bytes()
        b = (tmp_path / "cut" / "checkpoints" / "round-3" / name).read_bytes()
        assert a == b, name
    rows_full = full.read_metrics()
    rows_cut = federated_sft.RunFolder.open(tmp_path / "cut").read_metrics()
    assert [r["round"] for r in rows_cut] == [1, 2, 3]
    assert [r["eval_loss_mean"] for r in rows_cut] == [r["eval_loss_mean"] for r in rows_full]
