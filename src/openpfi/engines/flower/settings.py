"""What a Flower run is told: the run config (one per run) and each SuperNode's node config.

Run config (``[tool.flwr.app.config]``, overridden by ``flwr run --run-config FILE.toml``):

================== ==================================================================
``openpfi-config`` the resolved openpfi config as TOML text ("" = all defaults); the
                   SuperLink sends it to every node, so no node needs the file
``out-dir``        the run folder, written by the ServerApp on the SuperLink host
``force``          overwrite a non-empty run folder
``state-dir``      where nodes keep personal client state, unless their node config
                   says otherwise ("" = ~/.cache/openpfi/flower-state/<run key>, the key
                   the ServerApp gives the run folder; a resumed run keeps it)
``launcher``       how the run was started (``deploy local`` writes its nodes, TLS, auth),
                   kept in manifest.json for ``openpfi resume``
``resume``         continue the run folder ``out-dir`` from its last complete round
                   (its own config.toml; ``openpfi-config`` may be "" or the same config)
================== ==================================================================

Node config (``flower-supernode --node-config '...'``): ``partition-id`` (this
node's client, 0-based) and ``num-partitions`` (must equal ``data.num_clients``),
both required; optional ``state-dir``, ``data-path`` (a JSONL file on this node with
this client's rows only; see ``client_config``) and ``rag-documents`` (this node's own
folder of documents for retrieval, with ``rag.train`` or ``rag.evaluate``). Flower's simulation
runtime sets the first two itself.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from openpfi.config import Config, dump_toml, from_dict
from openpfi.errors import UserError

CONFIG_KEY = "openpfi-config"
RUN_CONFIG_DEFAULTS: dict[str, Any] = {CONFIG_KEY: "", "out-dir": "", "force": False, "state-dir": "", "resume": False, "launcher": ""}
ERROR_PREFIX = "openpfi error: "
"""ServerApp log lines with this prefix carry the one-line reason a run stopped (``deploy`` shows it)."""
NODE_CONFIG_HELP = "start the SuperNode with --node-config 'partition-id=0 num-partitions=N' (N = data.num_clients)"


@dataclass(frozen=True)
class RunSettings:
    cfg: Config
    out: Path
    force: bool
    state_dir: str
    resume: bool = False
    launcher: str = ""


def parse_config_text(text: str) -> Config:
    """The openpfi config carried in the run config; a clear UserError when it does not parse."""
    origin = f"run config '{CONFIG_KEY}'"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{origin} is not valid TOML ({err}); pass the text `openpfi deploy run-config` writes") from None
    return from_dict(raw, origin)


def run_settings(run_config: Mapping[str, Any]) -> RunSettings:
    cfg = parse_config_text(str(run_config.get(CONFIG_KEY, "")))
    out = str(run_config.get("out-dir", "")) or cfg.output.dir
    return RunSettings(
        cfg,
        Path(out).expanduser().resolve(),
        bool(run_config.get("force", False)),
        str(run_config.get("state-dir", "")),
        bool(run_config.get("resume", False)),
        str(run_config.get("launcher", "")),
    )


def run_config_toml(
    cfg: Config, out: Path, force: bool = False, state_dir: str = "", resume: bool = False, launcher: str = ""
) -> str:
    """The file to pass as ``flwr run ... --run-config FILE.toml``."""
    text = {
        CONFIG_KEY: dump_toml(cfg), "out-dir": str(out), "force": force, "state-dir": state_dir, "resume": resume,
        "launcher": launcher,
    }
    return tomli_w.dumps(text, multiline_strings=True)


@dataclass(frozen=True)
class NodeIdentity:
    partition_id: int
    num_partitions: int
    state_dir: str
    data_path: str
    rag_documents: str = ""
    """This node's own documents folder (retrieval), instead of ``rag.documents/<client id>``."""


def _int(node_config: Mapping[str, Any], key: str) -> int:
    if key not in node_config:
        raise UserError(f"this SuperNode's node config has no '{key}'; {NODE_CONFIG_HELP}")
    value = node_config[key]
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"node config {key} = {value!r} is not an integer; {NODE_CONFIG_HELP}") from None


def node_identity(node_config: Mapping[str, Any], cfg: Config) -> NodeIdentity:
    """This node's client; a clear UserError when the node config does not name one."""
    pid, n = _int(node_config, "partition-id"), _int(node_config, "num-partitions")
    if n != cfg.data.num_clients:
        raise UserError(
            f"node config num-partitions = {n} but the run's data.num_clients = {cfg.data.num_clients}; "
            "start one SuperNode per client with num-partitions equal to data.num_clients"
        )
    if not 0 <= pid < n:
        raise UserError(f"node config partition-id = {pid} is outside 0..{n - 1}; {NODE_CONFIG_HELP}")
    return NodeIdentity(pid, n, str(node_config.get("state-dir", "")), str(node_config.get("data-path", "")),
                        str(node_config.get("rag-documents", "")))


def node_config_text(identity: NodeIdentity) -> str:
    """``--node-config`` value for a SuperNode (Flower parses it as TOML key=value pairs)."""
    parts = [f"partition-id={identity.partition_id}", f"num-partitions={identity.num_partitions}"]
    named = (("state-dir", identity.state_dir), ("data-path", identity.data_path), ("rag-documents", identity.rag_documents))
    parts += [f'{k}="{v}"' for k, v in named if v]
    return " ".join(parts)


def client_config(cfg: Config, identity: NodeIdentity) -> Config:
    """The config as this node applies it.

    Without ``data-path`` the node partitions the run's data like every engine and is client
    ``partition-id``. With ``data-path`` the file holds this node's rows only: they are its one
    client (natural partition, so the file's client field names it), split into train and
    held-out with the run's settings. With ``rag-documents`` the node's own folder replaces
    ``rag.documents`` (set to "" here; the client app reads the node's folder).
    """
    if identity.rag_documents:
        if not (cfg.rag.evaluate or cfg.rag.train):
            raise UserError("node config rag-documents is read with rag.train or rag.evaluate = true only; set one "
                            "or remove rag-documents from the node config")
        cfg = cfg.model_copy(update={"rag": cfg.rag.model_copy(update={"documents": ""})})
    if not identity.data_path:
        return cfg
    if cfg.data.source != "jsonl":
        raise UserError(f'node config data-path needs data.source = "jsonl" (the run has {cfg.data.source!r})')
    if cfg.lora.client_ranks:
        raise UserError("lora.client_ranks are dealt over all clients' data; not with a node's own data-path")
    data = cfg.data.model_copy(update={"path": identity.data_path, "partition": "natural", "num_clients": 1})
    federation = cfg.federation.model_copy(update={"clients_per_round": 1})
    return cfg.model_copy(update={"data": data, "federation": federation})


def check_supported(cfg: Config) -> None:
    """What the Flower engine cannot run (yet), as one clear line."""
    if cfg.alignment.method != "none":
        raise UserError(
            f"alignment.method = {cfg.alignment.method!r} does not run on the Flower engine yet; "
            "run it in-process with `openpfi run`"
        )
    if cfg.flower.secagg != "off" and cfg.federation.clients_per_round < 2:
        raise UserError("flower.secagg needs federation.clients_per_round >= 2 (SecAgg+ sums over several clients)")
