"""Many clients, a few sampled per round: memory follows the sampled clients, results do not change.

Every chitchat sender can be a client (``data.opening_turns``, ``data.min_examples = 1``). After each
round no client holds tokenized examples or a personal state in memory, and the run ends exactly
as one in which the clients keep everything loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openpfi.assembly.clients import load_clients
from openpfi.client.federated import FederatedClient
from openpfi.config import load_config
from openpfi.engines.inprocess import InProcessEngine
from openpfi.errors import UserError
from openpfi.recipes import federated_sft

ROOT = Path(__file__).resolve().parents[2]
EVERY_SENDER = ["data.opening_turns=true", "data.min_examples=1", "data.num_clients=1315"]
SETS = [
    "model.name=tiny-random", "data.opening_turns=true", "data.min_examples=1", "data.num_clients=5",
    "federation.clients_per_round=3", "federation.rounds=3", "client.local_steps=2", "client.max_length=48",
    "client.batch_size=2", "monitor.enabled=false", "personalization.method=ditto",
]


def test_every_sender_becomes_a_client_and_more_are_refused() -> None:
    cfg = load_config(ROOT / "examples" / "demo.toml", EVERY_SENDER)
    _, clients = load_clients(cfg)
    assert len({c.client_id for c in clients}) == 1315
    single = [c for c in clients if len(c.train) + len(c.heldout) == 1]
    assert single and all(len(c.train) == 1 and not c.heldout for c in single)
    with pytest.raises(UserError, match="only 1315 of 1315 groups"):
        load_clients(load_config(ROOT / "examples" / "demo.toml", [*EVERY_SENDER, "data.num_clients=1316"]))


def test_sampled_clients_release_their_state_and_the_run_is_unchanged(tmp_path: Path, monkeypatch: Any) -> None:
    # Prepare
    cfg = load_config(ROOT / "examples" / "demo.toml", SETS)
    held: list[tuple[int, int]] = []  # after each round: encoded examples, personal states in memory
    original = InProcessEngine._round

    def watched(self: InProcessEngine, r: int, by_id: dict[str, FederatedClient]) -> Any:
        row = original(self, r, by_id)
        encoded = sum(c.train.encoded + c.heldout.encoded for c in self.clients)  # type: ignore[union-attr]
        held.append((encoded, sum(c.personal is not None for c in self.clients)))
        return row

    monkeypatch.setattr(InProcessEngine, "_round", watched)
    # Execute
    lean = federated_sft.start(cfg, tmp_path / "lean")
    monkeypatch.setattr(FederatedClient, "release", lambda self: None)
    kept = federated_sft.start(cfg, tmp_path / "kept")
    # Assert
    assert held[:3] == [(0, 0)] * 3
    assert all(encoded > 0 and personal > 0 for encoded, personal in held[3:])  # kept: still loaded
    sampled = [set(r["sampled"]) for r in lean.read_metrics()]
    assert sampled[0] & sampled[1] or sampled[1] & sampled[2]  # some client trained again after a release
    path = Path("checkpoints") / "round-3" / "adapter_model.safetensors"
    assert (lean.path / path).read_bytes() == (kept.path / path).read_bytes()

    def figures(run: Any) -> list[dict[str, Any]]:  # without the wall-clock timings
        return [{k: v for k, v in r.items() if k != "timings" and not k.endswith("_s")} for r in run.read_metrics()]

    assert figures(lean) == figures(kept)
    saved = sorted(lean.clients_dir.glob("*/personal-round-*/adapter_model.safetensors"))
    assert saved  # the personal states each client kept, bit for bit
    for f in saved:
        assert f.read_bytes() == (kept.clients_dir / f.relative_to(lean.clients_dir)).read_bytes()
