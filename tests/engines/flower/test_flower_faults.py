"""Node faults and the ServerApp's death, on the loopback harness (the real ServerApp and ClientApp
in this process): a node that dies and comes back under a new node id, a second node claiming a
taken partition, and ``resume`` after the ServerApp died. test_flower_runtimes.py kills real
SuperNodes with signals."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.recipes import federated_sft
from openpfi.runfolder import RunFolder


def _adapter(run: Path, r: int) -> dict[str, torch.Tensor]:
    return dict(RunFolder.open(run).load_checkpoint(r).adapter)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _faulty(tiny: Config) -> Config:
    fed = tiny.federation.model_copy(update={"rounds": 3, "min_fit_clients": 1})
    return tiny.model_copy(update={"federation": fed, "flower": tiny.flower.model_copy(update={"reply_timeout": 0.3})})


def test_a_node_that_dies_and_rejoins_trains_again_as_in_process(
    tmp_path: Path, flower_kit: SimpleNamespace, loopback: SimpleNamespace
) -> None:
    # Prepare: 3 clients; in round 2 node 100 dies and node 101 hangs; before round 3 client 0's host
    # starts a new SuperNode (new node id 110), and a second node (111) claims client 2's partition
    cfg = _faulty(flower_kit.tiny_config(tmp_path, clients=3))
    ids = ["site0", "site1", "site2"]
    reference = federated_sft.start(
        cfg, tmp_path / "inprocess", before_round=[flower_kit.drop_clients({2: {ids[0], ids[1]}, 3: {ids[1]}})]
    )
    out = tmp_path / "flower"
    grid = loopback.Grid(loopback.nodes(3, tmp_path), loopback.run_config(cfg, out))
    flower_run = loopback.run(cfg, out, grid)
    flower_run.grid.poll = 0.05
    original = flower_run._round

    def faults(r: int) -> dict[str, Any]:
        if r == 2:
            grid.dead.update({100, 101})
        if r == 3:
            grid.add_node(110, {**grid.contexts[100].node_config})
            grid.add_node(111, {**grid.contexts[102].node_config})
            grid.offline.add(100)
        return original(r)

    flower_run._round = faults  # type: ignore[method-assign]
    # Execute
    run = flower_run.run()
    # Assert: each failure named in its round; the rejoined client trains in round 3; the live
    # node 102 keeps client 2 (111 waits on standby); the adapter is the in-process one's
    rows = run.read_metrics()
    assert [r["failed"] for r in rows] == [[], ids[:2], [ids[1]]]
    assert set(rows[1]["flower"]["failed_reasons"]) == set(ids[:2])
    assert "SuperNode 101: no reply" in rows[2]["flower"]["failed_reasons"][ids[1]]
    assert rows[2]["flower"]["rejoined"] == {ids[0]: 110} and ids[0] in rows[2]["flower"]["clients"]
    assert flower_run.node_of[ids[2]] == 102 and flower_run.nodes.standby[ids[2]].node_id == 111
    assert grid.sent_to(110) == ["query.identify", "train.fit", "evaluate"]
    for r in (1, 2, 3):
        assert _equal(_adapter(run.path, r), _adapter(reference.path, r))
    assert not _equal(_adapter(run.path, 3), _adapter(run.path, 2))


def test_resume_continues_a_flower_run_whose_serverapp_died(
    tiny: Config, tmp_path: Path, loopback: SimpleNamespace
) -> None:
    # Prepare: the uninterrupted run; then a run whose ServerApp dies in round 3 of 3
    from openpfi.config import load_config

    cfg = tiny.model_copy(update={"federation": tiny.federation.model_copy(update={"rounds": 3})})
    reference = federated_sft.start(cfg, tmp_path / "inprocess")
    out = tmp_path / "flower"
    nodes = loopback.nodes(2, tmp_path)
    first = loopback.run(cfg, out, loopback.Grid(nodes, loopback.run_config(cfg, out)))
    original = first._round

    def die(r: int) -> dict[str, Any]:
        if r == 3:
            raise KeyboardInterrupt("the ServerApp process died")
        return original(r)

    first._round = die  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert len(first.run_folder.read_metrics()) == 2
    # ... a resume must carry the folder's own config
    with pytest.raises(UserError, match="differs from"):
        other = cfg.model_copy(update={"seed": 5})
        loopback.run(other, out, loopback.Grid(nodes, loopback.run_config(other, out, resume=True)), resume=True).run()
    # Execute: a new Flower run (new ServerApp, same nodes and state folders) with resume = true
    saved = load_config(out / "config.toml")
    run = loopback.run(saved, out, loopback.Grid(nodes, loopback.run_config(saved, out, resume=True)), resume=True).run()
    # Assert: the same result as the uninterrupted run, one row per round, the resume audited
    assert [r["round"] for r in run.read_metrics()] == [1, 2, 3]
    for r in (1, 2, 3):
        assert _equal(_adapter(run.path, r), _adapter(reference.path, r))
    actions = [json.loads(line)["payload"] for line in (out / "audit.jsonl").read_text().splitlines()]
    assert {"resume_from_round": 2} in actions
    with pytest.raises(UserError, match="already finished all 3 rounds"):
        loopback.run(saved, out, loopback.Grid(nodes, loopback.run_config(saved, out, resume=True)), resume=True).run()
