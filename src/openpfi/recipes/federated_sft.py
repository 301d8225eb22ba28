"""Recipe: federated LoRA fine-tuning (personalization) of an open-weight model.

    prepare  -> validate config, load data and model, tokenize (nothing written yet)
    start    -> create the run folder, write config + manifest, run all rounds
    resume   -> reopen a run folder, restore the last complete round, run the rest
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.client.federated import ClientSettings, ClientStore, FederatedClient, SharedModel
from openpfi.client.train import TrainSettings
from openpfi.config import Config, dump_toml, load_config
from openpfi.data import ClientData, Example, LoadResult, load_examples, make_clients
from openpfi.data.tokenize import encode_chat
from openpfi.engines.inprocess import ClientSideHook, InProcessEngine, Reporter, RoundHook, SilentReporter
from openpfi.errors import UserError
from openpfi.models.loader import ModelInfo, load_model
from openpfi.models.lora import read_adapter_file
from openpfi.monitor.audit import AuditLog
from openpfi.monitor.probes import group_probe_filter
from openpfi.recipes.manifest import build_manifest
from openpfi.recipes.monitoring import MonitorPlan, plan_monitor, wire_monitor
from openpfi.recipes.personalization import PersonalSetup, setup_personalization
from openpfi.runfolder import RunFolder
from openpfi.strategies.server import FedServer, SamplingConfig

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    cfg: Config
    shared: SharedModel
    data: list[ClientData]
    loaded_data: LoadResult
    start_adapter: dict[str, Any]
    clients: list[FederatedClient] = field(default_factory=list)
    personal: PersonalSetup | None = None
    """Personalization method and LoRA aggregation (recipes/personalization.py)."""


def load_clients(cfg: Config) -> tuple[LoadResult, list[ClientData]]:
    d = cfg.data
    loaded = load_examples(
        d.source,
        path=d.path,
        client_field=d.client_field,
        prompt_field=d.prompt_field,
        response_field=d.response_field,
        label_field=d.label_field,
        strict=d.strict,
        languages=d.languages,
    )
    clients = make_clients(
        _without_group_probes(cfg, loaded.examples),
        method=d.partition,
        num_clients=d.num_clients,
        seed=cfg.seed,
        heldout_fraction=d.heldout_fraction,
        min_examples=d.min_examples,
        max_examples=d.max_examples,
        alpha=d.alpha,
        quantity_sigma=d.quantity_sigma,
    )
    return loaded, clients


def _without_group_probes(cfg: Config, examples: list[Example]) -> list[Example]:
    """``examples`` without the public group texts the monitor's server scores (probes.group_items):
    a group's fairness gap is measured on text no client trains or evaluates on."""
    m = cfg.monitor
    if not (m.enabled and m.group_items and cfg.data.source == "chatterbot"):
        return examples
    keep = group_probe_filter(sorted({e.group for e in examples}), m.group_items, m.probe_seed)
    return [e for e in examples if keep(e.prompt, e.response)]


def client_settings(cfg: Config) -> ClientSettings:
    c = cfg.client
    return ClientSettings(
        steps=c.local_steps,
        local_epochs=c.local_epochs,
        train=TrainSettings(
            steps=c.local_steps,
            batch_size=c.batch_size,
            grad_accum=c.grad_accum,
            lr=c.lr,
            schedule=c.lr_schedule,
            warmup_steps=c.warmup_steps,
            weight_decay=c.weight_decay,
            max_grad_norm=c.max_grad_norm,
            dpo_beta=cfg.alignment.dpo_beta,
        ),
        eval_batch_size=c.eval_batch_size,
        max_eval_examples=c.max_eval_examples,
        proximal_mu=cfg.federation.proximal_mu if cfg.federation.strategy == "fedprox" else 0.0,
    )


def load_shared(cfg: Config) -> tuple[SharedModel, dict[str, Any]]:
    """The base model with LoRA attached (seeded) and the starting adapter (``model.adapter`` or the init)."""
    lm = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype)
    shared = SharedModel(lm, cfg.lora.r, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout, cfg.seed)
    start = shared.initial_state
    if cfg.model.adapter:
        start = read_adapter_file(cfg.model.adapter)
        shared.load_external(start)  # validates keys and shapes
        start = shared.get_state()
    return shared, start


def prepare(cfg: Config) -> Prepared:
    """Everything that can fail on bad input, before anything is written."""
    loaded_data, data = load_clients(cfg)
    shared, start = load_shared(cfg)
    lm = shared.loaded
    settings = client_settings(cfg)
    tok, L = lm.tokenizer, cfg.client.max_length
    clients = [
        FederatedClient(
            c.client_id,
            [encode_chat(tok, e.prompt, e.response, L) for e in c.train],
            [encode_chat(tok, e.prompt, e.response, L) for e in c.heldout[: cfg.client.max_eval_examples]],
            settings,
            group=c.train[0].group if c.train else "",
        )
        for c in data
    ]
    personal = setup_personalization(cfg, shared, start, clients)
    return Prepared(cfg, shared, data, loaded_data, start, clients, personal)


def make_server(cfg: Config, personal: PersonalSetup | None = None) -> FedServer:
    f = cfg.federation
    opt = ServerOptConfig(f.strategy, f.server_lr, f.server_momentum, f.beta1, f.beta2, f.tau)
    aggregation = personal.make_aggregation() if personal is not None else None
    return FedServer(opt, SamplingConfig(f.clients_per_round, f.min_fit_clients, cfg.seed), aggregation)


def server_start(prep: Prepared) -> dict[str, Any]:
    """The server's first global state: only what the method shares (personal parts stay with clients)."""
    return prep.personal.server_start(prep.start_adapter) if prep.personal is not None else prep.start_adapter


def new_run(
    cfg: Config,
    out: Path,
    force: bool,
    model: ModelInfo,
    loaded_data: LoadResult,
    data: list[ClientData],
    extra: dict[str, Any] | None = None,
) -> tuple[Config, RunFolder]:
    """Create the run folder and write config.toml, manifest.json and the first audit entry.

    Every engine starts a run here; returns the config with ``output.dir`` set to ``out``.
    """
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(out)})})
    run = RunFolder.create(out, force)
    config_text = dump_toml(cfg)
    run.write_config(config_text)
    manifest = build_manifest(
        seed=cfg.seed,
        model=model,
        source_files=loaded_data.source_files,
        clients=data,
        skipped_rows=loaded_data.skipped_rows,
        extra={"start_adapter": cfg.model.adapter or None, **(extra or {})},
    )
    run.write_json("manifest.json", manifest)
    AuditLog(run.path / "audit.jsonl").append(
        "config", {"config_sha256": hashlib.sha256(config_text.encode()).hexdigest(), "model": manifest["model"]}
    )
    return cfg, run


def _attach_stores(prep: Prepared, run: RunFolder) -> None:
    for c in prep.clients:
        c.store = ClientStore(run.clients_dir / c.client_id)


def _engine(prep: Prepared, run: RunFolder, server: FedServer, reporter: Reporter, hooks: list[RoundHook]) -> InProcessEngine:
    engine = InProcessEngine(prep.shared, prep.clients, server, run, prep.cfg.federation.rounds, prep.cfg.seed, reporter, hooks)
    engine.eval_every = prep.cfg.federation.eval_every
    return engine


def start(
    cfg: Config,
    out: Path,
    force: bool = False,
    reporter: Reporter | None = None,
    hooks: list[RoundHook] | None = None,
    monitor: MonitorPlan | None = None,
    before_round: list[ClientSideHook] | None = None,
) -> RunFolder:
    """``before_round``: client-side simulation hooks (e.g. the silent benchmark's injections).

    The monitor runs when ``cfg.monitor.enabled`` (``monitor``: an already checked plan)."""
    monitor = monitor or plan_monitor(cfg)  # bad probes / budget fail before the folder is written
    prep = prepare(cfg)
    cfg, run = new_run(cfg, out, force, prep.shared.loaded.info, prep.loaded_data, prep.data)
    prep.cfg = cfg
    _attach_stores(prep, run)
    server = make_server(cfg, prep.personal)
    server.init(server_start(prep))
    engine = _engine(prep, run, server, reporter or SilentReporter(), hooks or [])
    engine.before_round = list(before_round or [])
    finish_monitor = wire_monitor(monitor, engine, prep.start_adapter)
    engine.run_rounds(1)
    finish_monitor()
    return run


def resume(
    path: Path,
    reporter: Reporter | None = None,
    hooks: list[RoundHook] | None = None,
    monitor: MonitorPlan | None = None,
) -> RunFolder:
    """Continue from the last complete round; same result as an uninterrupted run."""
    run = RunFolder.open(path)
    cfg = load_config(run.config_file)
    done = run.completed_rounds()
    last = done[-1] if done else 0
    if last >= cfg.federation.rounds:
        raise UserError(f"{path} already finished all {cfg.federation.rounds} rounds; nothing to resume")
    monitor = monitor or plan_monitor(cfg)
    prep = prepare(cfg)
    _attach_stores(prep, run)
    for c in prep.clients:
        c.restore(last)  # personal state, from the client-side folder
    server = make_server(cfg, prep.personal)
    if last:
        ckpt = run.load_checkpoint(last)
        server.init(ckpt.adapter, ckpt.server_state, ckpt.meta.get("server"))
    else:
        server.init(server_start(prep))
    run.truncate_metrics(last)
    have = {int(r["round"]) for r in run.read_metrics()}
    for r in done:
        if r not in have:  # killed between checkpoint and metrics append: the checkpoint holds the row
            row = run.load_checkpoint(r).meta.get("metrics")
            if row:
                run.append_metrics(row)
    AuditLog(run.path / "audit.jsonl").append("action", {"resume_from_round": last})
    engine = _engine(prep, run, server, reporter or SilentReporter(), hooks or [])
    finish_monitor = wire_monitor(monitor, engine, prep.start_adapter, resume_from=last)
    engine.run_rounds(last + 1)
    finish_monitor()
    return run
