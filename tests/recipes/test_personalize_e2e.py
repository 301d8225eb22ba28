"""Every personalization method and LoRA aggregation end to end on tiny-random (2 rounds x 2 clients)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from openpfi.cli import app
from openpfi.client.store import client_figures
from openpfi.config import load_config
from openpfi.engines.inprocess import SilentReporter
from openpfi.errors import UserError
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.toml"
TINY = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=2",
    "client.local_steps=2", "client.max_length=48", "client.batch_size=2", "monitor.enabled=false",
    "data.max_examples=24", "data.min_examples=10", "client.max_eval_examples=4", "lora.r=4",
]  # fmt: skip


def _run(tmp: Path, *sets: str) -> RunFolder:
    return federated_sft.start(load_config(DEMO, [*TINY, *sets]), tmp / "run")


def _checkpoint_keys(run: RunFolder) -> set[str]:
    keys: set[str] = set()
    for f in (run.path / "checkpoints").rglob("*.safetensors"):
        keys |= set(load_file(str(f)))
    return keys


@pytest.mark.parametrize("method", ["none", "local", "finetune", "ditto", "fedrep", "fedsa-lora", "ffa-lora"])
def test_each_method_runs_and_keeps_personal_state_client_side(tmp_path: Path, method: str) -> None:
    run = _run(tmp_path, f'personalization.method="{method}"')
    rows = run.read_metrics()
    base = _run(tmp_path / "base").read_metrics() if method == "ffa-lora" else None
    assert [r["round"] for r in rows] == [1, 2]
    keys = _checkpoint_keys(run)
    personalized = method not in ("none", "ffa-lora")
    figures = client_figures(run.clients_dir)  # each client's own, in its store: none in the rows
    assert len(figures) == 2
    for r in rows:
        assert ("personal_loss_mean" in r) == personalized and "clients" not in r
        assert all(("personal_loss" in f[r["round"]]) == personalized for f in figures.values())
    if method == "local":
        assert rows[-1]["bytes_up"] == 0 and rows[-1]["bytes_down"] == 0
        assert not any("lora_" in k for k in keys)
    else:
        assert rows[-1]["bytes_up"] > 0 and rows[-1]["bytes_down"] == rows[-1]["bytes_up"]
    if method == "fedsa-lora":
        assert keys and not any("lora_B" in k for k in keys)
    if method == "ffa-lora":
        own = json.loads((run.path / "checkpoints" / "round-2" / "openpfi-adapter.json").read_text())["keys"]
        assert own and not any("lora_A" in k for k in own)  # A is the seeded init, never sent
        assert any("lora_A" in k for k in keys)  # ... but completes the checkpoint for peft (from start/)
        assert rows[-1]["bytes_up"] < base[-1]["bytes_up"]
    if method == "fedrep":
        assert keys and not any("v_proj" in k for k in keys)
    stored = list(run.clients_dir.glob("*/personal-round-*/adapter_model.safetensors"))
    assert bool(stored) == (method in ("local", "finetune", "ditto", "fedrep", "fedsa-lora"))


@pytest.mark.parametrize(
    "sets",
    [
        ['lora.aggregation="product"'],
        ['lora.aggregation="product"', "lora.keep_merged=true"],
        ['lora.aggregation="stack"', "lora.client_ranks=[2, 4]"],
        ['lora.aggregation="zeropad"', "lora.client_ranks=[2, 4]", 'personalization.method="fedsa-lora"'],
    ],
)
def test_lora_aggregations_run(tmp_path: Path, sets: list[str]) -> None:
    run = _run(tmp_path, *sets)
    rows = run.read_metrics()
    assert [r["round"] for r in rows] == [1, 2]
    keys = set(run.load_checkpoint(2).adapter)
    merges = "stack" in sets[0] or "lora.keep_merged=true" in sets
    assert any(k.endswith(".merged_delta") for k in keys) == merges
    if "stack" in sets[0]:
        assert rows[0]["bytes_down"] == 0  # round 1: clients re-create the seeded init themselves
        assert rows[1]["bytes_down"] == 2 * rows[0]["bytes_up"]  # each client gets both clients' stacks


class Crash(KeyboardInterrupt):
    pass


class CrashInRound(SilentReporter):
    """Interrupt round ``round_num`` at the first step of the client's first ("train") or second
    ("personal": Ditto's personal model, FedRep's body) training phase, or after aggregation
    ("evaluate": the client has saved its new personal state, the server no checkpoint yet)."""

    def __init__(self, round_num: int, at: str):
        self.round_num, self.at = round_num, at
        self.current = 0
        self.phases = 0

    def round_start(self, round_num, rounds, sampled):
        self.current = round_num

    def step(self, step, total, loss, tokens_per_s):
        if self.current == self.round_num and step == 1:
            self.phases += 1
            if (self.at, self.phases) in (("train", 1), ("personal", 2)):
                raise Crash()

    def phase(self, name):
        if self.current == self.round_num and self.at == name:
            raise Crash()


@pytest.mark.parametrize(
    ("method", "at"),
    [
        ("ditto", "personal"), ("ditto", "evaluate"),
        ("local", "evaluate"), ("fedrep", "evaluate"), ("fedrep-head", "personal"), ("fedsa-lora", "train"),
        ("fedsa-lora", "evaluate"),
    ],
)  # fmt: skip
def test_personal_resume_is_bit_identical(tmp_path: Path, method: str, at: str) -> None:
    extra = ["personalization.head_steps=1"] if method == "fedrep-head" else []
    sets = [*TINY, f'personalization.method="{method.removesuffix("-head")}"', *extra,
            "federation.rounds=3", "federation.clients_per_round=1"]  # fmt: skip
    cfg = load_config(DEMO, sets)
    full = federated_sft.start(cfg, tmp_path / "full")
    with pytest.raises(Crash):
        federated_sft.start(cfg, tmp_path / "cut", reporter=CrashInRound(3, at))
    assert not (tmp_path / "cut" / "checkpoints" / "round-3").exists()
    federated_sft.resume(tmp_path / "cut")
    a = (full.path / "checkpoints" / "round-3" / "adapter_model.safetensors").read_bytes()
    b = (tmp_path / "cut" / "checkpoints" / "round-3" / "adapter_model.safetensors").read_bytes()
    assert a == b
    cut = RunFolder.open(tmp_path / "cut")
    rows = full.read_metrics()
    assert rows[2]["sampled"][0] in rows[0]["sampled"] + rows[1]["sampled"]  # round 3 reuses a personal state
    for key in ("eval_loss_mean", "personal_loss_mean", "bytes_up", "bytes_down"):
        assert [r[key] for r in cut.read_metrics()] == [r[key] for r in full.read_metrics()], key
    personal = sorted(full.clients_dir.rglob("*.safetensors"))
    assert personal, "the personal state this test resumes must be stored"
    for f in personal:
        assert f.read_bytes() == (cut.clients_dir / f.relative_to(full.clients_dir)).read_bytes(), f.name
    def untimed(root: Path) -> dict:
        return {c: {r: {k: v for k, v in f.items() if k != "tokens_per_s"} for r, f in rounds.items()}
                for c, rounds in client_figures(root).items()}

    assert untimed(cut.clients_dir) == untimed(full.clients_dir)  # the clients' own view too


def test_bad_personalization_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'k_proj' matches no LoRA parameter"):
        _run(tmp_path, 'personalization.method="fedrep"', 'personalization.personal_patterns=["k_proj"]')
    with pytest.raises(UserError, match="larger than layer"):
        _run(tmp_path, "lora.r=48", "lora.client_ranks=[8, 48]", 'lora.aggregation="zeropad"')
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(
        app,
        ["run", str(DEMO), "--out", str(tmp_path / "x"), "--quiet",
         "--set", 'personalization.method="ffa-lora"', "--set", 'lora.aggregation="stack"'],
    )  # fmt: skip
    assert res.exit_code == 2 and "ffa-lora" in res.output and "Traceback" not in res.output
