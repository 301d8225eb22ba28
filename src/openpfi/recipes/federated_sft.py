"""Recipe: federated LoRA fine-tuning (personalization) of an open-weight model.

    prepare  -> validate config, load data and model, tokenize (nothing written yet)
    start    -> create the run folder, write config + manifest, run all rounds
    resume   -> reopen a run folder, restore the last complete round, run the rest
"""

from __future__ import annotations

import logging
from pathlib import Path

from openpfi.assembly.clients import Prepared, prepare
from openpfi.assembly.monitor_plan import MonitorPlan, plan_monitor
from openpfi.assembly.monitoring import wire_monitor
from openpfi.assembly.resume_state import read_resume_state
from openpfi.assembly.run_start import attach_client_stores, ensure_start, new_run, rewind_metrics
from openpfi.assembly.server import make_server, server_start
from openpfi.assembly.trust import attach_run, make_uplink
from openpfi.config import Config
from openpfi.engines.inprocess import ClientSideHook, InProcessEngine, Reporter, RoundHook, SilentReporter
from openpfi.runfolder import RunFolder
from openpfi.strategies.server import FedServer

log = logging.getLogger(__name__)


def _engine(prep: Prepared, run: RunFolder, server: FedServer, reporter: Reporter, hooks: list[RoundHook]) -> InProcessEngine:
    cfg = prep.cfg
    hooks = [*attach_run(server, run), *hooks]  # the server's secret; privacy.json's updates section
    engine = InProcessEngine(prep.shared, prep.clients, server, run, cfg.federation.rounds, cfg.seed, reporter, hooks)
    engine.eval_every = cfg.federation.eval_every
    engine.share_client_metrics = cfg.privacy.share_client_metrics
    engine.uplink = make_uplink(cfg)
    engine.timeout_s = cfg.client.timeout_s
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
    cfg, run = new_run(cfg, out, force, prep.shared.loaded.info, prep.loaded_data, prep.data,
                       start=prep.start_adapter, layout=prep.shared.layout)
    prep.cfg = cfg
    attach_client_stores(prep.clients, run)
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
    state = read_resume_state(path)  # every file it reads, checked before any model is loaded
    run, cfg, last = state.run, state.cfg, state.last
    monitor = monitor or plan_monitor(cfg)
    prep = prepare(cfg)
    ensure_start(run, prep.start_adapter, prep.shared.layout)
    attach_client_stores(prep.clients, run, resume_from=last)
    for c in prep.clients:
        c.restore(last)  # personal state, from the client store
    server = make_server(cfg, prep.personal)
    if state.checkpoint is not None:
        server.init(state.checkpoint.adapter, state.checkpoint.server_state, state.server_meta)
    else:
        server.init(server_start(prep))
    rewind_metrics(run, last)
    engine = _engine(prep, run, server, reporter or SilentReporter(), hooks or [])
    finish_monitor = wire_monitor(monitor, engine, prep.start_adapter, resume_from=last)
    engine.run_rounds(last + 1)
    finish_monitor()
    return run
