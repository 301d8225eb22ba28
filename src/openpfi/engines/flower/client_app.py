"""The openpfi ClientApp: one SuperNode = one client, running the in-process client code.

Handlers (message type -> what it does):

- ``query.identify``: this node's partition id (node config) and, when the server
  cannot work it out itself, its client id (from the node's data); on the deployment
  runtime it also starts the node worker and waits until it holds the model and the data;
- ``train.fit``: ``FederatedClient.fit`` from the global adapter; replies with the delta
  (``records.py``), or keeps it home for SecAgg+ (``secagg.py``);
- ``evaluate``: ``FederatedClient.evaluate`` of the new global adapter;
- ``train`` (default action): the SecAgg+ stages, handled by Flower's ``secaggplus_mod``.

Fit and evaluate go to a ``node_service.NodeService``, which keeps the base model, the
tokenized data and the client's personal state across messages. Flower's deployment
runtime starts a fresh ``flwr-clientapp`` process per message, so there the service lives
in the node worker (``node_worker.py``, one long-lived process per SuperNode) and this
process only moves arrays; in Flower's simulation workers (long-lived already) and in
tests it lives in this process. ``flower.node_worker = false`` keeps it in the message's
own process on the deployment runtime too (each message then loads everything again).

torch, transformers and peft are never imported here on the deployment runtime: a
message costs a process start with flwr and numpy, not the seconds a model stack takes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from openpfi.engines.flower import records, secagg
from openpfi.engines.flower.settings import client_config, node_identity, run_settings
from openpfi.errors import UserError

app = ClientApp()

Call = Callable[[str, dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
_LOCAL: list[Any] = []
"""The NodeService of this process, when it holds one (simulation workers, tests)."""
_HANDLED = [0]
"""Messages this process handled (the deployment runtime: one; a simulation worker: many)."""
PER_MESSAGE_PROCESS = "flwr-clientapp"
"""The program Flower's SuperExec starts for every message of the deployment runtime."""


def _process_seconds() -> dict[str, float]:
    """Seconds from this process's start to the handler (interpreter, flwr, fetching the task); 0 when warm."""
    import psutil

    _HANDLED[0] += 1
    return {"flower_process_s": time.time() - psutil.Process().create_time() if _HANDLED[0] == 1 else 0.0}


def _backend(context: Context) -> tuple[Call, bool]:
    """Where fit and evaluate run: the node worker (deployment runtime) or this process; and which."""
    settings = run_settings(context.run_config)
    per_message = os.path.basename(sys.argv[0]) == PER_MESSAGE_PROCESS
    if per_message and settings.cfg.flower.node_worker:
        from openpfi.engines.flower.node_worker import WorkerClient

        return WorkerClient(int(context.node_id), settings.cfg.flower.worker_idle).call, True
    if not _LOCAL:
        from openpfi.engines.flower.node_service import NodeService

        _LOCAL.append(NodeService())
    return _LOCAL[0].handle, False


def _args(message: Message, context: Context) -> dict[str, Any]:
    config = message.content.config_records["config"]
    return {
        "run_config": dict(context.run_config),
        "node_config": dict(context.node_config),
        "run_id": int(context.run_id),
        "run_key": str(config.get("run_key", "")),
        "round": int(config.get("round", 0)),  # type: ignore[arg-type]
        "peers": int(config.get("peers", 1)),  # type: ignore[arg-type]
    }


def _call(op: str, message: Message, context: Context, global_arrays: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service's answer, with the seconds this message spent outside it (``flower_channel_s``) and
    waiting for one of the host's compute slots (``flower_slot_wait_s``, node_worker.py)."""
    cost = _process_seconds()
    call, _ = _backend(context)
    tensors = records.record_arrays(message.content.array_records["global"]) if global_arrays else {}
    t = time.perf_counter()
    result, out = call(op, _args(message, context), tensors)
    elapsed = time.perf_counter() - t
    cost["flower_channel_s"] = max(0.0, elapsed - float(result.get("worker_s", elapsed)))
    cost["flower_slot_wait_s"] = float(result.get("slot_wait_s", 0.0))  # the node worker's wait for a compute slot
    result["cost"] = cost
    return result, out


@app.query("identify")
def identify(message: Message, context: Context) -> Message:
    settings = run_settings(context.run_config)
    identity = node_identity(context.node_config, settings.cfg)
    info: dict[str, Any] = {"partition_id": identity.partition_id}
    _, remote = _backend(context)
    if remote:  # the node worker loads the model and the data now, before the first round
        result, _ = _call("prepare", message, context, global_arrays=False)
        info["client_id"], info["num_examples"] = result["client_id"], result["num_examples"]
        info.update({k: float(v) for k, v in {**result["costs"], **result["cost"]}.items()})
    elif bool(message.content.config_records["config"]["client_id"]) or identity.data_path:
        from openpfi.assembly.clients import load_clients

        _, data = load_clients(client_config(settings.cfg, identity))
        index = 0 if identity.data_path else identity.partition_id
        if index >= len(data):
            raise UserError(f"node config partition-id = {identity.partition_id} but the data gives {len(data)} clients")
        info["client_id"] = data[index].client_id
        info["num_examples"] = len(data[index].train)
    return Message(RecordDict({"client": ConfigRecord(info)}), reply_to=message)


@app.train("fit")
def fit(message: Message, context: Context) -> Message:
    result, out = _call("fit", message, context)
    scalars = {**result["scalars"], **result["cost"]}
    layout = result["secagg"]
    delta = _prefixed(out, "delta/") if result["has_delta"] else None
    extra = {name: _prefixed(out, f"extra/{name}/") for name in result["extra"]}
    content = records.fit_content(result["client_id"], result["num_examples"], scalars, delta, extra, out.get("monitor"))
    if layout is not None:
        lay = secagg.Layout(tuple(layout["keys"]), int(layout["monitor_dim"]), float(layout["monitor_clip"]))
        if not lay.empty:
            secagg.store_payload(context, [out[f"secagg/{i}"] for i in range(int(layout["arrays"]))])
        content[secagg.LAYOUT] = lay.record()
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    result, _ = _call("evaluate", message, context)
    content = records.eval_content(
        result["client_id"], result["num_examples"], result["loss"], result["target_tokens"], result["personal_loss"]
    )
    content["cost"] = MetricRecord({k: float(v) for k, v in {**result["costs"], **result["cost"]}.items()})
    return Message(content, reply_to=message)


@app.train(mods=[secaggplus_mod])
def secure_sum_share(message: Message, context: Context) -> Message:
    """Called by ``secaggplus_mod`` in its collect-masked-vectors stage."""
    return secagg.payload_reply(message, context)


def _prefixed(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
