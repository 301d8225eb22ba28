"""A node's client side, kept in memory across the messages of a run.

``NodeService`` answers the ClientApp's ``prepare``, ``fit`` and ``evaluate`` requests with
the in-process client code (``assembly.clients.prepare``, ``FederatedClient``). It holds one
prepared job per process (base model, tokenizer, tokenized data, the clients, the monitor's
client side), keyed by the config's hash, so a run -- or a resumed run of the same config --
loads them once. Personal state is written to the node's ``ClientStore`` after every fit
and read back only when the request asks for a round other than the one in memory.

A process that answers for several clients (a simulation worker serves many virtual nodes)
holds only the last one's examples and personal state: when a request names another client,
the previous one is released (``FederatedClient.release``) and reloads from its store when it
is asked again, so memory follows the workers, not the federation's size.

It runs inside the node worker (``node_worker.py``, the deployment runtime) or inside
the ClientApp's own process (Flower's simulation workers, tests). Requests and replies are
plain values and numpy arrays (``Tensors``), so both places use the same code:

========== ======================================== ===========================================
op         args                                     reply
========== ======================================== ===========================================
prepare    run_config, node_config, run_key         client_id, num_examples, costs
fit        ... + round; tensors: the global adapter client_id, num_examples, scalars, extra
                                                    names, secagg layout; tensors ``delta/<k>``,
                                                    ``extra/<name>/<k>``, ``monitor``, ``secagg/<i>``
evaluate   ... + round; tensors: the global adapter client_id, num_examples, loss, target_tokens,
                                                    personal_loss, costs
========== ======================================== ===========================================

A fit reply holds only what may cross to the server: under ``flower.secagg = "updates"``
no delta, under any SecAgg+ mode no monitor report (their masked sums go through
``secagg/<i>``, which the ClientApp keeps in the node's context for the SecAgg+ stages).
"""

from __future__ import annotations

import hashlib
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpfi.config import Config
from openpfi.engines.flower import secagg
from openpfi.engines.flower.settings import NodeIdentity, client_config, node_identity, run_settings
from openpfi.errors import UserError

Tensors = dict[str, np.ndarray]
Reply = tuple[dict[str, Any], Tensors]
DELTA, EXTRA, MONITOR, SECAGG = "delta/", "extra/", "monitor", "secagg/"
STATE_ROOT = Path.home() / ".cache" / "openpfi" / "flower-state"
"""Personal client state of a node without ``state-dir`` (node config) or run config ``state-dir``:
``STATE_ROOT/<run key>``, the key of the run folder (kept by ``openpfi resume``)."""


def config_key(cfg: Config) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


class NodeService:
    def __init__(self) -> None:
        self.job: tuple[str, Any] | None = None
        """(config key, ``assembly.clients.Prepared``): one base model per process."""
        self.memory_round: dict[str, int] = {}
        """Store folder -> the round whose personal state the client object holds (a folder, not a
        client id: two runs of one config with other state folders must not share it)."""
        self.import_s: float | None = None
        """Seconds the model stack took to import in this process (reported once)."""
        self.current: Any = None
        """The client the last request named; released when a request names another."""
        self._settings: dict[str, Any] = {}

    def handle(self, op: str, args: Mapping[str, Any], tensors: Tensors) -> Reply:
        if op == "prepare":
            return self.prepare(args)
        if op == "fit":
            return self.fit(args, tensors)
        if op == "evaluate":
            return self.evaluate(args, tensors)
        raise ValueError(f"unknown node service request {op!r}")

    # -- the job ------------------------------------------------------------------------------------
    def _identity(self, args: Mapping[str, Any]) -> tuple[Config, NodeIdentity, int]:
        """The config as this node applies it, its identity, and the reports a round's monitor sum expects."""
        text = str(args["run_config"].get("openpfi-config", ""))
        if text not in self._settings:
            self._settings = {text: run_settings(args["run_config"])}  # the run's config, parsed once
        cfg = self._settings[text].cfg
        identity = node_identity(args["node_config"], cfg)
        n_expected = min(cfg.federation.clients_per_round, identity.num_partitions)
        return client_config(cfg, identity), identity, n_expected

    def _imported(self) -> float:
        if self.import_s is not None:
            return 0.0
        t = time.perf_counter()
        import openpfi.assembly.clients  # noqa: F401  (torch, transformers, peft)

        self.import_s = time.perf_counter() - t
        return self.import_s

    def _prepared(self, cfg: Config, n_expected: int) -> Any:
        """The run's clients on one base model, with the monitor's client side when it is on
        (as ``assembly.monitoring.wire_monitor`` gives it to in-process clients)."""
        key = config_key(cfg)
        if self.job is None or self.job[0] != key:
            from openpfi.assembly.clients import prepare
            from openpfi.assembly.monitor_plan import monitor_groups, plan_monitor
            from openpfi.assembly.monitoring import client_monitor

            self.job, self.memory_round, self.current = None, {}, None  # one base model per process
            prep = prepare(cfg)
            plan = plan_monitor(cfg)
            if plan is not None:
                groups = monitor_groups(cfg, [c.group for c in prep.clients])
                monitor = client_monitor(plan, prep.shared, groups, n_expected)
                for c in prep.clients:
                    c.monitor = monitor
            self.job = (key, prep)
        return self.job[1]

    def _client(self, args: Mapping[str, Any]) -> tuple[Config, Any, Any, dict[str, float]]:
        """The config, the prepared job and this node's ``FederatedClient`` with its store; costs."""
        from openpfi.client.store import ClientStore

        import_s = self._imported()
        cfg, identity, n_expected = self._identity(args)
        t = time.perf_counter()
        prep = self._prepared(cfg, n_expected)
        costs = {"flower_import_s": import_s, "flower_prepare_s": time.perf_counter() - t}
        index = 0 if identity.data_path else identity.partition_id  # a node's own file holds one client
        if index >= len(prep.clients):
            raise UserError(
                f"node config partition-id = {identity.partition_id} but the data gives only {len(prep.clients)} "
                "clients; lower the partition id or data.num_clients"
            )
        client = prep.clients[index]
        self._switch_to(client)
        client.store = ClientStore(state_root(identity, args) / client.client_id)
        if identity.rag_documents and client.retrieval is not None:  # this node's own documents
            from openpfi.data.documents import read_documents

            client.retrieval.use_documents(read_documents(identity.rag_documents))
        return cfg, prep, client, costs

    def _switch_to(self, client: Any) -> None:
        """Release the previous client when this request names another (its next request reloads it)."""
        previous = self.current
        if previous is not None and previous is not client:
            previous.release()
            if previous.store is not None:
                self.memory_round.pop(str(previous.store.folder), None)
        self.current = client

    def _restore(self, client: Any, up_to_round: int) -> None:
        """The personal state saved at or before ``up_to_round``; from disk only when the client
        object holds another round's (a resumed run, a node that missed rounds, another process)."""
        if self.memory_round.get(str(client.store.folder)) == up_to_round:
            return
        restore = getattr(client, "restore", None)
        if restore is not None:
            restore(up_to_round)
        self.memory_round[str(client.store.folder)] = up_to_round

    # -- requests -----------------------------------------------------------------------------------
    def prepare(self, args: Mapping[str, Any]) -> Reply:
        _, prep, client, costs = self._client(args)
        return {"client_id": client.client_id, "num_examples": len(client.train), "costs": costs | memory(prep, client)}, {}

    def fit(self, args: Mapping[str, Any], tensors: Tensors) -> Reply:
        cfg, prep, client, costs = self._client(args)
        r = int(args["round"])
        self._restore(client, r - 1)
        update = client.fit(prep.shared, to_state(tensors), r, cfg.seed)
        self.memory_round[str(client.store.folder)] = r
        update.scalars.update(costs | memory(prep, client))
        update, update_bound = upload(cfg, client, update, r, int(args.get("peers", 1)))
        mode = cfg.flower.secagg
        out: Tensors = {}
        result: dict[str, Any] = {"client_id": update.client_id, "num_examples": int(update.num_examples), "secagg": None}
        if mode != "off":
            arrays, layout, clipped = secagg.pack(update, cfg, _monitor_clip(cfg, client), update_bound)
            out.update({f"{SECAGG}{i}": a for i, a in enumerate(arrays)})
            result["secagg"] = {
                "keys": list(layout.keys), "monitor_dim": layout.monitor_dim, "monitor_clip": layout.monitor_clip,
                "arrays": len(arrays),
            }
            update.scalars["secagg_clipped"] = clipped
        if mode != "updates":
            out.update(numpy_state(update.delta, DELTA))
            for name, state in update.extra.items():
                out.update(numpy_state(state, f"{EXTRA}{name}/"))
        if mode == "off" and update.monitor is not None:
            out[MONITOR] = np.asarray(update.monitor.values, dtype=np.float64)
        result["scalars"] = {k: float(v) for k, v in update.scalars.items()}
        result["extra"] = sorted(update.extra) if mode != "updates" else []
        result["has_delta"] = mode != "updates"
        return result, out

    def evaluate(self, args: Mapping[str, Any], tensors: Tensors) -> Reply:
        _, prep, client, costs = self._client(args)
        self._restore(client, int(args["round"]))
        e = client.evaluate(prep.shared, to_state(tensors), round_num=int(args["round"]))
        result = {
            "client_id": e.client_id,
            "num_examples": int(e.num_examples),
            "loss": float(e.loss),
            "target_tokens": int(e.target_tokens),
            "personal_loss": None if e.personal_loss is None else float(e.personal_loss),
            "costs": costs,
        }
        return result, {}


def upload(cfg: Config, client: Any, update: Any, round_num: int, peers: int) -> tuple[Any, float]:
    """The update after the client-side uplink (DP noise share, compression; client/uplink.py), and the
    per-coordinate bound of a DP sum under SecAgg+ (0 without DP)."""
    from openpfi.assembly.trust import make_uplink, plan_update_privacy

    uplink = make_uplink(cfg, engine="flower")
    if uplink is not None:
        update = uplink.apply(update, client, round_num, peers)
    dp = plan_update_privacy(cfg, engine="flower")
    return update, secagg.dp_bound(dp) if dp is not None else 0.0


def state_root(identity: NodeIdentity, args: Mapping[str, Any]) -> Path:
    root = identity.state_dir or str(args["run_config"].get("state-dir", ""))
    if root:
        return Path(root).expanduser()
    return STATE_ROOT / str(args.get("run_key") or f"run-{args.get('run_id', 0)}")


def _monitor_clip(cfg: Config, client: Any) -> float:
    s = getattr(getattr(client, "monitor", None), "settings", None)
    return secagg.monitor_clip(cfg, s.noise_std_sum, s.n_expected) if s is not None else secagg.monitor_clip(cfg)


def to_state(tensors: Tensors) -> dict[str, Any]:
    """numpy arrays as torch tensors (copies: the arrays may be read-only views of a frame)."""
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}


def numpy_state(state: Mapping[str, Any], prefix: str = "") -> Tensors:
    return {prefix + k: state[k].detach().cpu().contiguous().numpy() for k in sorted(state)}


def memory(prep: Any, client: Any) -> dict[str, float]:
    """This process's peak resident memory against its budget: the frozen base weights, the client's
    state (LoRA weights, gradients and two Adam moments; its personal state; its tokens) and 1 GiB."""
    from openpfi.algorithms.state import nbytes

    base = sum(p.numel() * p.element_size() for n, p in prep.shared.model.named_parameters() if "lora_" not in n)
    tokens = sum(len(e.input_ids) + len(e.labels) for e in [*client.train, *client.heldout] if hasattr(e, "labels"))
    state = 4 * nbytes(prep.shared.initial_state) + nbytes(client.personal or {}) + 8 * tokens
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"flower_peak_rss_bytes": float(peak), "flower_budget_bytes": float(base + state + (1 << 30))}
