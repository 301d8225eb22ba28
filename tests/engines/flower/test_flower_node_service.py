"""The node service as a simulation worker runs it: one process answering for several clients."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from openpfi.config import Config
from openpfi.engines.flower.node_service import NodeService, numpy_state
from openpfi.engines.flower.settings import run_config_toml


def _args(cfg: Config, tmp: Path, partition: int, round_num: int) -> dict:
    run_config = tomllib.loads(run_config_toml(cfg, tmp / "run", state_dir=str(tmp / "state")))
    node_config = {"partition-id": partition, "num-partitions": cfg.data.num_clients}
    return {"run_config": run_config, "node_config": node_config, "round": round_num, "run_key": "k"}


def _global(service: NodeService) -> dict[str, np.ndarray]:
    assert service.job is not None
    return numpy_state(service.job[1].shared.initial_state)


def test_a_worker_serving_many_clients_holds_only_the_last_ones_examples_and_state(
    tmp_path: Path, flower_kit: SimpleNamespace
) -> None:
    # Prepare: FedRep keeps a personal head per client, so there is personal state to release and reload
    cfg = flower_kit.tiny_config(tmp_path, "personalization.method=fedrep", clients=3)
    service, alone = NodeService(), NodeService()
    service.handle("prepare", _args(cfg, tmp_path / "a", 0, 0), {})
    g = _global(service)
    # Execute: client 0 trains, then clients 1 and 2 (another virtual node each), then client 0 is evaluated
    service.handle("fit", _args(cfg, tmp_path / "a", 0, 1), g)
    first = service.job[1].clients[0]
    trained = first.train._done.copy(), first.personal
    service.handle("fit", _args(cfg, tmp_path / "a", 1, 1), g)
    released = len(first.train._done), first.personal
    service.handle("fit", _args(cfg, tmp_path / "a", 2, 1), g)
    held = [len(c.train._done) > 0 or c.personal is not None for c in service.job[1].clients]
    switched, _ = service.handle("evaluate", _args(cfg, tmp_path / "a", 0, 1), g)
    # the same client in a service that never switched
    alone.handle("fit", _args(cfg, tmp_path / "b", 0, 1), g)
    kept, _ = alone.handle("evaluate", _args(cfg, tmp_path / "b", 0, 1), g)
    # Assert
    assert trained[0] and trained[1] is not None, "client 0 held its encodings and personal head after its fit"
    assert released == (0, None), "asking for client 1 released client 0's encodings and personal state"
    assert held == [False, False, True], "only the last client named holds anything"
    assert switched["loss"] == kept["loss"] and switched["personal_loss"] == kept["personal_loss"]
    assert switched["personal_loss"] is not None
