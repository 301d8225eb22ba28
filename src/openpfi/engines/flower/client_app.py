"""The openpfi ClientApp: one SuperNode = one client, running the in-process client code.

Handlers (message type -> what it does):

- ``query.identify``: this node's partition id (node config) and, when the server
  cannot work it out itself, its client id (from the node's data);
- ``train.fit``: ``FederatedClient.fit`` from the global adapter; replies with the delta
  (``records.py``), or keeps it home for SecAgg+ (``secagg.py``);
- ``evaluate``: ``FederatedClient.evaluate`` of the new global adapter;
- ``train`` (default action): the SecAgg+ stages, handled by Flower's ``secaggplus_mod``.

The node rebuilds its client with ``assembly.clients.prepare`` from the run's
config (``settings.py``) and its node config. Its personal state lives in a
``ClientStore`` folder on the node and is reloaded before every fit and evaluate, as is
its monitor secret (``ClientStore.secret``: made on the node the first time, seeding its
monitor noise, never sent; client/monitor_client.py), so
it does not matter which process handles a message: the deployment runtime starts a
fresh process per message, the simulation runtime moves virtual nodes between worker
processes. One prepared job (one base model) is cached per process.

torch, transformers and peft are imported inside the fit and evaluate handlers only:
the identify and SecAgg+ messages cost a process start with flwr and numpy, not the
seconds a model stack takes to import.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from openpfi.config import Config
from openpfi.engines.flower import secagg
from openpfi.engines.flower.settings import NodeIdentity, client_config, node_identity, run_settings
from openpfi.errors import UserError

app = ClientApp()

_PREPARED: dict[str, Any] = {}
"""config hash -> assembly.clients.Prepared (the clients of the run and one base model)."""
_HANDLED = [0]
"""Messages this process handled (the deployment runtime: one; a simulation worker: many)."""


def _process_seconds() -> dict[str, float]:
    """What this message cost before training: seconds from the process start to the handler
    (interpreter, flwr, fetching the task) and to import the model stack; 0 when warm."""
    import psutil

    _HANDLED[0] += 1
    started = time.time() - psutil.Process().create_time() if _HANDLED[0] == 1 else 0.0
    t = time.perf_counter()
    import openpfi.assembly.clients  # noqa: F401  (torch, transformers, peft)

    return {"flower_process_s": started, "flower_import_s": time.perf_counter() - t}


def _identity(context: Context) -> tuple[Config, NodeIdentity, int]:
    """The config as this node applies it, its identity, and the reports a round's monitor sum expects."""
    settings = run_settings(context.run_config)
    identity = node_identity(context.node_config, settings.cfg)
    n_expected = min(settings.cfg.federation.clients_per_round, identity.num_partitions)
    return client_config(settings.cfg, identity), identity, n_expected


def _config_key(cfg: Config) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def _prepared(cfg: Config, n_expected: int) -> Any:
    """The run's clients on one base model, with the monitor's client side when it is on
    (as ``assembly.monitoring.wire_monitor`` gives it to in-process clients)."""
    key = _config_key(cfg)
    if key not in _PREPARED:
        from openpfi.assembly.clients import prepare
        from openpfi.assembly.monitor_plan import monitor_groups, plan_monitor
        from openpfi.assembly.monitoring import client_monitor

        _PREPARED.clear()  # one base model per process
        prep = prepare(cfg)
        plan = plan_monitor(cfg)
        if plan is not None:
            monitor = client_monitor(plan, prep.shared, monitor_groups(cfg, [c.group for c in prep.clients]), n_expected)
            for c in prep.clients:
                c.monitor = monitor
        _PREPARED[key] = prep
    return _PREPARED[key]


def _client(cfg: Config, identity: NodeIdentity, n_expected: int, context: Context) -> tuple[Any, Any]:
    """The prepared job and this node's ``FederatedClient``, with its store on this node."""
    from openpfi.client.store import ClientStore

    prep = _prepared(cfg, n_expected)
    index = 0 if identity.data_path else identity.partition_id  # a node's own file holds one client
    if index >= len(prep.clients):
        raise UserError(
            f"node config partition-id = {identity.partition_id} but the data gives only {len(prep.clients)} "
            "clients; lower the partition id or data.num_clients"
        )
    client = prep.clients[index]
    client.store = ClientStore(_state_root(identity, context) / client.client_id)
    if identity.rag_documents and client.retrieval is not None:  # this node's own documents
        from openpfi.data.documents import read_documents

        client.retrieval.use_documents(read_documents(identity.rag_documents))
    return prep, client


def _state_root(identity: NodeIdentity, context: Context) -> Path:
    root = identity.state_dir or str(context.run_config.get("state-dir", ""))
    if not root:
        return Path.home() / ".cache" / "openpfi" / "flower-state" / f"run-{context.run_id}"
    return Path(root).expanduser()


def _round(message: Message) -> int:
    return int(message.content.config_records["config"]["round"])  # type: ignore[arg-type]


def _restore(client: Any, up_to_round: int) -> None:
    """Reload the personal state an earlier message saved (none in round 1)."""
    restore = getattr(client, "restore", None)
    if restore is not None:
        restore(up_to_round)


def _monitor_clip(cfg: Config, client: Any) -> float:
    s = getattr(getattr(client, "monitor", None), "settings", None)
    return secagg.monitor_clip(cfg, s.noise_std_sum, s.n_expected) if s is not None else secagg.monitor_clip(cfg)


@app.query("identify")
def identify(message: Message, context: Context) -> Message:
    cfg, identity, _ = _identity(context)
    info: dict[str, Any] = {"partition_id": identity.partition_id}
    if bool(message.content.config_records["config"]["client_id"]) or identity.data_path:
        from openpfi.assembly.clients import load_clients

        _, data = load_clients(cfg)
        index = 0 if identity.data_path else identity.partition_id
        if index >= len(data):
            raise UserError(f"node config partition-id = {identity.partition_id} but the data gives {len(data)} clients")
        info["client_id"] = data[index].client_id
        info["num_examples"] = len(data[index].train)
    return Message(RecordDict({"client": ConfigRecord(info)}), reply_to=message)


@app.train("fit")
def fit(message: Message, context: Context) -> Message:
    process_s = _process_seconds()
    from openpfi.engines.flower import records

    cfg, identity, n_expected = _identity(context)
    t = time.perf_counter()
    prep, client = _client(cfg, identity, n_expected, context)
    prepare_s = time.perf_counter() - t
    r = _round(message)
    global_state = records.record_to_state(message.content.array_records["global"])
    _restore(client, r - 1)
    update = client.fit(prep.shared, global_state, r, cfg.seed)
    update.scalars.update({**process_s, "flower_prepare_s": prepare_s})
    mode = cfg.flower.secagg
    if mode == "off":
        return Message(records.update_to_content(update), reply_to=message)
    arrays, layout, clipped = secagg.pack(update, cfg, _monitor_clip(cfg, client))
    if not layout.empty:
        secagg.store_payload(context, arrays)
    update.scalars["secagg_clipped"] = clipped
    content = records.update_to_content(update, with_delta=(mode != "updates"), with_monitor=False)
    content[secagg.LAYOUT] = layout.record()
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    process_s = _process_seconds()
    from openpfi.engines.flower import records

    cfg, identity, n_expected = _identity(context)
    t = time.perf_counter()
    prep, client = _client(cfg, identity, n_expected, context)
    prepare_s = time.perf_counter() - t
    r = _round(message)
    global_state = records.record_to_state(message.content.array_records["global"])
    _restore(client, r)
    result = client.evaluate(prep.shared, global_state, round_num=r)
    content = records.eval_to_content(result)
    content["cost"] = MetricRecord({**process_s, "flower_prepare_s": prepare_s})
    return Message(content, reply_to=message)


@app.train(mods=[secaggplus_mod])
def secure_sum_share(message: Message, context: Context) -> Message:
    """Called by ``secaggplus_mod`` in its collect-masked-vectors stage."""
    return secagg.payload_reply(message, context)
