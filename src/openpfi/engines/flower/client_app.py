"""The openpfi ClientApp: one SuperNode = one client, running the in-process client code.

Handlers (message type -> what it does):

- ``query.identify``: which client this node is (from its node config and the data);
- ``train.fit``: ``FederatedClient.fit`` from the global adapter; replies with the delta
  (``records.py``), or keeps it home for SecAgg+ (``secagg.py``);
- ``evaluate``: ``FederatedClient.evaluate`` of the new global adapter;
- ``train`` (default): the SecAgg+ stages, handled by Flower's ``secaggplus_mod``.

The node rebuilds its client from the run's config (``settings.py``) and its node
config. Its personal state lives in a ``ClientStore`` folder on the node and is
reloaded before every fit and evaluate, so it does not matter which process handles a
message (the deployment runtime starts a fresh process per message; the simulation
runtime moves virtual nodes between worker processes). One prepared client set and
one base model are cached per process.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from openpfi.client.federated import ClientStore, FederatedClient
from openpfi.config import Config
from openpfi.engines.flower import records, secagg
from openpfi.engines.flower.settings import NodeIdentity, client_config, node_identity, run_settings
from openpfi.errors import UserError

log = logging.getLogger(__name__)

app = ClientApp()


@dataclass
class _Node:
    cfg: Config
    identity: NodeIdentity
    client_id: str
    prepared: Any = None  # recipes.federated_sft.Prepared, loaded on the first fit / evaluate


_CACHE: dict[tuple[str, int, str], _Node] = {}
_PREPARED: dict[str, Any] = {}


def _node(context: Context) -> _Node:
    settings = run_settings(context.run_config)
    identity = node_identity(context.node_config, settings.cfg)
    cfg = client_config(settings.cfg, identity)
    key = (_config_key(cfg), identity.partition_id, identity.data_path)
    node = _CACHE.get(key)
    if node is None:
        from openpfi.recipes.federated_sft import load_clients

        _, data = load_clients(cfg)
        if identity.partition_id >= len(data):
            raise UserError(
                f"node config partition-id = {identity.partition_id} but data gives only {len(data)} clients; "
                "lower the partition id or data.num_clients"
            )
        node = _CACHE[key] = _Node(cfg, identity, data[identity.partition_id].client_id)
    return node


def _config_key(cfg: Config) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def _client(node: _Node, context: Context) -> tuple[Any, FederatedClient]:
    """The prepared job (one base model per process) and this node's client with its store."""
    key = _config_key(node.cfg)
    if key not in _PREPARED:
        from openpfi.recipes.federated_sft import prepare

        _PREPARED.clear()  # one base model per process
        _PREPARED[key] = prepare(node.cfg)
    prep = _PREPARED[key]
    client = next(c for c in prep.clients if c.client_id == node.client_id)
    client.store = ClientStore(_state_root(node, context) / node.client_id)
    return prep, client


def _state_root(node: _Node, context: Context) -> Path:
    root = node.identity.state_dir or str(context.run_config.get("state-dir", ""))
    if not root:
        return Path.home() / ".cache" / "openpfi" / "flower-state" / f"run-{context.run_id}"
    return Path(root).expanduser()


def _restore(client: FederatedClient, up_to_round: int) -> None:
    restore = getattr(client, "restore", None)  # personal state saved by an earlier message
    if restore is not None:
        restore(up_to_round)


@app.query("identify")
def identify(message: Message, context: Context) -> Message:
    node = _node(context)
    info = ConfigRecord({"client_id": node.client_id, "partition_id": node.identity.partition_id})
    return Message(RecordDict({"client": info}), reply_to=message)


@app.train("fit")
def fit(message: Message, context: Context) -> Message:
    node = _node(context)
    prep, client = _client(node, context)
    r = int(message.content.config_records["config"]["round"])  # type: ignore[arg-type]
    global_state = records.record_to_state(message.content.array_records["global"])
    _restore(client, r - 1)
    update = client.fit(prep.shared, global_state, r, node.cfg.seed)
    mode = node.cfg.flower.secagg
    if mode == "off":
        return Message(records.update_to_content(update), reply_to=message)
    arrays, layout, clipped = secagg.pack(update, node.cfg)
    if not layout.empty:
        secagg.store_payload(context, arrays)
    update.scalars["secagg_clipped"] = clipped
    content = records.update_to_content(update, with_delta=(mode != "updates"), with_monitor=False)
    content[secagg.LAYOUT] = layout.record()
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    node = _node(context)
    prep, client = _client(node, context)
    r = int(message.content.config_records["config"]["round"])  # type: ignore[arg-type]
    global_state = records.record_to_state(message.content.array_records["global"])
    _restore(client, r)
    result = client.evaluate(prep.shared, global_state, r, node.cfg.seed)
    return Message(records.eval_to_content(result), reply_to=message)


@app.train(mods=[secaggplus_mod])
def secure_sum_share(message: Message, context: Context) -> Message:
    """Called by ``secaggplus_mod`` in its collect-masked-vectors stage."""
    return secagg.payload_reply(message, context)

