"""Wire the silent-failure monitor into a run: plan (before anything is written), attach, finish.

    plan_monitor(cfg)        load and hash the probe suites, plan the DP noise for the
                             privacy budget; every bad input fails here, before the run
                             folder exists (monitor_plan.py)
    wire_monitor(plan, eng)  client side: a ClientMonitor on every client (client/monitor_client.py);
                             server side: a MonitorServer as the engine's round hook and report
                             check (strategies/monitor_server.py); round 0: the base and the
                             starting model on the public probes (references); returns finish()
                             (another engine uses client_monitor() and server_monitor() directly)
    finish()                 report.json + report.html (also after ``openpfi resume``)

Recorded in the run folder: probe versions and SHA-256 (manifest.json ``monitor``, audit
``probes``), DP parameters (audit ``dp_parameters``), the round-0 references
(``monitor/setup.json``, monitor_setup.py), the ledger (``privacy.json``) and the per-round
monitor state.

Round 0 also validates the refusal judge (``monitor_round0.judge_check``): the starting model answers
``monitor.judge_check_prompts`` public held-out prompts (half harmful, half benign; the slice
``probes.holdout_items`` keeps out of every suite) greedily, the keyword detector labels the
answers, and the likelihood judge's verdicts on the same prompts are compared with those
labels (``refusal.judge_vs_detector``), next to the detector's held-out precision / recall.
Kept in ``monitor/setup.json`` (read back on resume, never regenerated), manifest.json
``monitor.refusal_judge`` and report.json ``refusal_judge``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openpfi.assembly.monitor_detection import Tests, make_tests
from openpfi.assembly.monitor_plan import (
    MonitorPlan,
    group_suite,
    monitor_groups,
    monitor_schema,
    server_settings,
    server_suites,
)
from openpfi.assembly.monitor_power import power_plans
from openpfi.assembly.monitor_record import not_measured, probe_rows, record_start, system_info
from openpfi.assembly.monitor_setup import SETUP_FILE, new_setup, read_setup
from openpfi.client.monitor_client import ClientMonitor, ClientMonitorSettings
from openpfi.client.scoring import shared_scorer
from openpfi.monitor.privacy.ledger import PrivacyLedger
from openpfi.monitor.probes import ProbeSuite, suite_manifest
from openpfi.runfolder import RunFolder
from openpfi.strategies.monitor_global import GlobalMonitor
from openpfi.strategies.monitor_server import STATE_DIR, MonitorServer, point_from_dict, point_to_dict

log = logging.getLogger(__name__)

__all__ = ["client_monitor", "monitor_groups", "server_monitor", "wire_monitor"]


def client_monitor(plan: MonitorPlan, shared: Any, groups: Sequence[str], n_expected: int) -> ClientMonitor:
    """The client side (any engine): probes on ``shared``, the report encoded, clipped and noised."""
    cfg, m = plan.cfg, plan.cfg.monitor
    schema = monitor_schema(plan, groups)
    dp = server_settings(plan, schema, n_expected)
    settings = ClientMonitorSettings(
        client_items=dict(m.client_items),
        probe_before=m.probe_before,
        utility_examples=m.utility_examples,
        thresholds={"capability": m.drop_threshold_capability, "safety": m.drop_threshold_safety,
                    "general_nll": m.drop_threshold_general_nll},
        l2_clip=dp.l2_clip,
        noise_std_sum=dp.noise_std_sum,
        own_noise_std_sum=dp.own_noise_std_sum,
        n_expected=n_expected,
        eval_batch_size=cfg.client.eval_batch_size,
        groups=tuple(groups),
    )
    return ClientMonitor(plan.suites, schema, settings, shared_scorer(shared, m.batch_tokens))


def _global_monitor(scorer: Any, shared: Any, fed: Any, start_state: Mapping[str, Any], tests: Tests,
                    groups: ProbeSuite | None) -> GlobalMonitor:
    """The server's scoring of the global model (shared part from ``fed``, the rest from the start)."""
    start_full = {**shared.initial_state, **start_state}  # every adapter tensor, at its starting value

    def full_state() -> dict[str, Any]:
        """The global model as a whole state: the server's shared part over the starting adapter, so no
        part a client trained for itself (its personal weights, left in the shared model) is scored."""
        return {**start_full, **fed.broadcast()}

    return GlobalMonitor(scorer, shared.set_state, full_state, tests.change_test, tests.group_test, groups)


def _start_history(server: MonitorServer, setup: Mapping[str, Any]) -> None:
    """Round 0 of a new run: the starting model's global streams are every stream's reference."""
    round0 = {k: point_from_dict(v) for k, v in setup["round0_global"].items()}
    points = server.global_monitor.round0(round0) if server.global_monitor is not None else {}
    server.history.append({"round": 0, "streams": {k: point_to_dict(v) for k, v in sorted(points.items())}})


def server_monitor(plan: MonitorPlan, run: RunFolder, shared: Any, fed: Any, start_state: Mapping[str, Any],
                   groups: Sequence[str], n_expected: int, resume_from: int = 0
                   ) -> tuple[MonitorServer, Callable[[], None]]:
    """The server side (any engine): the round hook and ``finish`` (writes the report).

    ``shared``: a model the server may score public probes with (base, round-0, global);
    ``fed``: the federated server (its ``broadcast()`` is the global adapter); ``start_state``:
    the starting adapter (the round-0 model); ``resume_from``: the last complete round.
    """
    t0 = time.perf_counter()
    schema = monitor_schema(plan, groups)
    settings = server_settings(plan, schema, n_expected)
    scorer = shared_scorer(shared, plan.cfg.monitor.batch_tokens)
    suites, groups_suite = server_suites(plan), group_suite(plan, groups)
    setup_path = run.path / STATE_DIR / SETUP_FILE
    if resume_from == 0:
        setup = new_setup(plan, setup_path, shared, start_state, scorer, schema, suites, groups_suite)
    else:
        setup = read_setup(plan, setup_path, schema, groups_suite)
    tests = make_tests(plan, schema, setup, suites, groups_suite is not None, n_expected, resume_from)
    server = MonitorServer(run.path, schema, settings, tests.bank, PrivacyLedger(plan.cfg.privacy.delta),
                           _global_monitor(scorer, shared, fed, start_state, tests, groups_suite),
                           {k: point_from_dict(v) for k, v in setup["reference"].items()}, setup["base_model"])
    server.power = power_plans(plan, schema, settings, tests, setup)
    probes = suite_manifest(plan.suites)
    if resume_from == 0:
        _start_history(server, setup)
        record_start(run, plan, schema, settings, probes, tests, setup["refusal_judge"])
    else:
        server.restore_state(MonitorServer.load_state(run.path, resume_from))
        server.ledger.save(run.path)
    log.info("monitor set up in %.1fs", time.perf_counter() - t0)
    system = system_info(plan, run, shared.loaded.info)
    rows = probe_rows(probes, suites)
    refusal_judge = setup.get("refusal_judge")  # absent in runs started before the check existed
    missing = not_measured(plan, groups, tests, refusal_judge)

    def finish() -> None:
        server.write_report(system, rows, missing, refusal_judge=refusal_judge)

    return server, finish


def wire_monitor(plan: MonitorPlan | None, engine: Any, start_state: Mapping[str, Any],
                 resume_from: int = 0) -> Callable[[], None]:
    """Attach the monitor to an in-process engine; returns ``finish`` (writes the report).

    ``start_state``: the starting adapter (the round-0 model); ``resume_from``: the last
    complete round when resuming (0 for a new run).
    """
    if plan is None:
        return lambda: None
    groups = monitor_groups(plan.cfg, [c.group for c in engine.clients])
    n_expected = min(plan.cfg.federation.clients_per_round, len(engine.clients))
    # the server side gets the federated server, never the engine (which holds the clients)
    server, finish = server_monitor(plan, engine.run, engine.shared, engine.server, start_state, groups, n_expected,
                                    resume_from)
    client_side = client_monitor(plan, engine.shared, groups, n_expected)
    for c in engine.clients:
        c.monitor = client_side
    engine.hooks = [*engine.hooks, server]
    engine.validate_monitor = server.validate
    return finish
