"""Run config and node config: what a Flower run is told, and clear errors when it is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from openpfi.config import Config, load_config
from openpfi.engines.flower.settings import (
    RUN_CONFIG_DEFAULTS,
    NodeIdentity,
    client_config,
    node_config_text,
    node_identity,
    run_config_toml,
    run_settings,
)
from openpfi.errors import UserError


@pytest.fixture
def cfg() -> Config:
    return load_config(None, ["model.name=tiny-random", "data.num_clients=3", "federation.clients_per_round=2"])


def test_run_config_carries_the_resolved_config(cfg: Config, tmp_path: Path) -> None:
    # Prepare
    text = run_config_toml(cfg, tmp_path / "run", force=True, state_dir="/nodes")
    # Execute
    settings = run_settings(tomllib.loads(text))
    # Assert
    assert set(tomllib.loads(text)) == set(RUN_CONFIG_DEFAULTS)  # flwr refuses keys the app does not declare
    assert settings.cfg == cfg
    assert settings.out == tmp_path / "run" and settings.force and settings.state_dir == "/nodes"


def test_empty_run_config_means_defaults(tmp_path: Path) -> None:
    settings = run_settings(dict(RUN_CONFIG_DEFAULTS))
    assert settings.cfg == Config()
    assert settings.out == Path(Config().output.dir).resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[model\nname = 1", "not valid TOML"),
        ("[federation]\nrounds = 0", "federation.rounds = 0 is invalid"),
        ("[federation]\nround = 3", "unknown key 'federation.round'"),
    ],
)
def test_a_config_the_superlink_cannot_parse_gets_a_clear_message(text: str, expected: str) -> None:
    with pytest.raises(UserError, match="run config 'openpfi-config'") as err:
        run_settings({"openpfi-config": text})
    assert expected in str(err.value)


def test_node_identity_from_node_config(cfg: Config) -> None:
    ident = node_identity({"partition-id": 2, "num-partitions": 3, "state-dir": "/s"}, cfg)
    assert ident == NodeIdentity(2, 3, "/s", "")


@pytest.mark.parametrize(
    ("node_config", "expected"),
    [
        ({}, "no 'partition-id'; start the SuperNode with --node-config"),
        ({"partition-id": 0}, "no 'num-partitions'"),
        ({"partition-id": "zero", "num-partitions": 3}, "partition-id = 'zero' is not an integer"),
        ({"partition-id": 1.5, "num-partitions": 3}, "not an integer"),
        ({"partition-id": 3, "num-partitions": 3}, "partition-id = 3 is outside 0..2"),
        ({"partition-id": 0, "num-partitions": 4}, "num-partitions = 4 but the run's data.num_clients = 3"),
    ],
)
def test_a_supernode_without_a_valid_partition_id_gets_a_clear_message(cfg: Config, node_config: dict, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        node_identity(node_config, cfg)


def test_node_config_text_parses_back_with_flowers_parser(cfg: Config) -> None:
    # Prepare
    ident = NodeIdentity(1, 3, "/tmp/state dir", "/data/site 1.jsonl")
    # Execute: what flower-supernode --node-config does with the string
    parsed = parse_config_args([node_config_text(ident)])
    # Assert
    assert node_identity(parsed, cfg) == ident


def test_a_node_with_its_own_data_file_is_one_client() -> None:
    # Prepare
    cfg = load_config(None, ["data.source=jsonl", "data.path=all.jsonl", "data.num_clients=3", "federation.clients_per_round=2"])
    # Execute
    local = client_config(cfg, NodeIdentity(2, 3, "", "/data/mine.jsonl"))
    # Assert: its file, all of it one client named by the file's client field
    assert (local.data.path, local.data.partition, local.data.num_clients) == ("/data/mine.jsonl", "natural", 1)
    assert client_config(cfg, NodeIdentity(0, 3, "", "")) is cfg


def test_data_path_needs_jsonl_and_common_ranks(cfg: Config) -> None:
    with pytest.raises(UserError, match='data-path needs data.source = "jsonl"'):
        client_config(cfg, NodeIdentity(0, 3, "", "/data/mine.jsonl"))
    ranked = load_config(None, ["data.source=jsonl", "data.path=a.jsonl", "lora.client_ranks=[4, 8]", "lora.aggregation=zeropad", "data.num_clients=2", "federation.clients_per_round=2"])
    with pytest.raises(UserError, match="lora.client_ranks"):
        client_config(ranked, NodeIdentity(0, 2, "", "/data/mine.jsonl"))


def test_the_serverapp_names_a_config_it_cannot_parse_in_its_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: what `flwr run --run-config` could hand the SuperLink
    from flwr.app import Context, RecordDict

    from openpfi.engines.flower import server_app

    monkeypatch.setattr(server_app, "_log_to_flower", lambda: None)  # keep the records where caplog sees them
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={"openpfi-config": "[data]\nnum_clients = -1"})
    # Execute
    with pytest.raises(UserError):
        server_app.main(None, context)  # type: ignore[arg-type]  # fails before it talks to a node
    # Assert: the line `openpfi deploy` shows as the reason
    from openpfi.engines.flower.deploy import error_line

    reason = error_line([r.getMessage() for r in caplog.records])
    assert reason is not None and "run config 'openpfi-config': data.num_clients = -1 is invalid" in reason


def test_a_nodes_own_documents_folder_replaces_rag_documents() -> None:
    # Prepare
    cfg = load_config(None, ["rag.evaluate=true", "rag.documents=/all/docs"])
    ident = node_identity({"partition-id": 0, "num-partitions": 8, "rag-documents": "/srv/mine"}, cfg)
    # Execute
    local = client_config(cfg, ident)
    # Assert
    assert ident.rag_documents == "/srv/mine" and local.rag.documents == ""
    assert 'rag-documents="/srv/mine"' in node_config_text(ident)
    with pytest.raises(UserError, match="node config rag-documents is read with rag.train or rag.evaluate = true only"):
        client_config(load_config(None, []), ident)
