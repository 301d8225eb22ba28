"""The privacy boundary by construction: after a monitored round of every recipe in-process, nothing the
server side holds (the federated server, its round hooks, its report check) reaches a client object, a
client's data, its store, its reference cache or its personal state. The Flower ServerApp's objects
are walked in tests/engines/flower/test_flower_server.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openpfi.config import load_config
from openpfi.engines.inprocess import InProcessEngine, SilentReporter
from openpfi.recipes.dispatch import start_job

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
    "client.local_steps=1", "client.max_length=48", "client.batch_size=2", "client.max_eval_examples=2",
    "data.max_examples=24", "data.min_examples=10", "lora.r=4",
    "monitor.enabled=true", "monitor.utility_examples=2", "monitor.judge_check_prompts=0",
    "monitor.calibration_sims=1000",
    "monitor.server_items={bbq = 2, crows = 2, harmful = 5, benign = 2, ood = 3, capability = 2}",
    "alignment.pairs_per_client=4", "alignment.eval_pairs=2", "alignment.eval_prompts=2",
    "alignment.client_eval_pairs=2",
]  # fmt: skip
RECIPES = [
    "personalization.method=none", *(f"personalization.method={m}" for m in
                                     ("local", "finetune", "ditto", "fedrep", "fedsa-lora", "ffa-lora")),
    *(f"alignment.method={m}" for m in ("sft", "dpo", "firm", "scalarized", "fmgda")),
    "rag.train=true",  # each client's training examples carry passages from its own index
]


def _run_keeping_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *sets: str) -> InProcessEngine:
    engines: list[InProcessEngine] = []
    run_rounds = InProcessEngine.run_rounds

    def keep(self: InProcessEngine, start_round: int = 1) -> Any:
        engines.append(self)
        return run_rounds(self, start_round)

    monkeypatch.setattr(InProcessEngine, "run_rounds", keep)
    start_job(load_config(ROOT / "examples" / "demo.toml", [*TINY, *sets]), tmp_path / "run", False, SilentReporter())
    (engine,) = engines
    return engine


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.split("=")[1] if "personal" in r else r for r in RECIPES])
def test_no_server_side_object_reaches_a_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaks: Any,
                                                recipe: str) -> None:
    # Prepare / Execute: one monitored round of the recipe
    engine = _run_keeping_the_engine(tmp_path, monkeypatch, recipe)
    assert engine.hooks and engine.validate_monitor is not None  # the monitor (and alignment's evaluation) ran
    # Assert: the server side reaches nothing of the clients ...
    assert leaks([engine.server, *engine.hooks, engine.validate_monitor], engine.clients) == []
    # ... while the same walk from the engine (which holds the clients) does, so the check can fail
    found = leaks([engine], engine.clients)
    assert any(f.startswith("client ") for f in found) and any(".train item" in f for f in found)


def test_a_hook_holding_the_clients_would_be_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaks: Any) -> None:
    # Prepare: server-side hooks that close over the clients, or over their reference cache
    engine = _run_keeping_the_engine(tmp_path, monkeypatch, "alignment.method=dpo")
    clients, ref = list(engine.clients), engine.clients[0].ref

    def bad_hook(result: Any) -> None:
        return None if clients else None

    def holds_cache(result: Any) -> None:
        return None if ref else None

    # Execute / Assert
    assert f"client {engine.clients[0].client_id}" in leaks([bad_hook], engine.clients)
    found = leaks([holds_cache], engine.clients)  # the clients' reference cache is keyed by their pairs
    assert any(f.endswith(".ref") for f in found) and any(".train item" in f for f in found)


@pytest.mark.parametrize("method", ["ditto", "fedsa-lora"])
def test_the_global_probe_scores_the_global_model_without_any_clients_personal_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    # Prepare: after a round, the shared model holding weights only a client has (its personal part)
    import torch

    from openpfi.strategies.monitor_server import MonitorServer

    tested = ("monitor.server_items={bbq = 2, crows = 2, harmful = 130, benign = 2, ood = 3, capability = 2}",
              "monitor.server_blocks=1", "monitor.paired_min_verdict=weak")  # a paired test that runs
    engine = _run_keeping_the_engine(tmp_path, monkeypatch, f"personalization.method={method}", *tested)
    probe = next(h for h in engine.hooks if isinstance(h, MonitorServer)).global_monitor
    assert probe is not None and probe.active
    with torch.no_grad():
        for p in engine.shared.params.values():
            p.add_(torch.randn_like(p))
    # Execute
    first = probe.round(1)[0]
    # Assert: the model it scored is the server's shared part over the starting adapter, tensor by tensor
    want = {**engine.shared.initial_state, **engine.server.broadcast()}
    assert set(want) == set(engine.shared.params)
    for k, p in engine.shared.params.items():
        assert torch.equal(p.detach().float(), want[k].float()), k
    assert probe.round(1)[0] == first  # the same scores, whatever the model held before
