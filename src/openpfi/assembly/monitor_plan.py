"""The monitor's plan, checked before a run folder exists: probe suites loaded and hashed, DP noise
planned; and what follows from the plan alone (the server's public sample, the report layout, the
DP settings both sides share)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openpfi.algorithms.privacy import epsilon_after, noise_multiplier_for
from openpfi.assembly.compatibility import check_combinations
from openpfi.client.personal import policy_class
from openpfi.config import Config
from openpfi.data import groups_are_public
from openpfi.monitor.privacy.ledger import plan_budget
from openpfi.monitor.probes import ProbeSuite, group_items, load_suites, make_suite, subset_suite
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.strategies.monitor_server import MonitorServerSettings

log = logging.getLogger(__name__)


@dataclass
class MonitorPlan:
    """What the monitor needs from the config, checked before the run folder is written."""

    cfg: Config
    suites: dict[str, ProbeSuite]
    noise_multiplier: float
    planned_epsilon: float
    """Epsilon after all ``federation.rounds`` releases at ``noise_multiplier``."""


def plan_monitor(cfg: Config) -> MonitorPlan | None:
    """None when the monitor is off; UserError for settings that do not combine, missing probe files
    or an unmeetable budget."""
    check_combinations(cfg)
    if not cfg.monitor.enabled:
        return None
    p, rounds = cfg.privacy, cfg.federation.rounds
    z = p.noise_multiplier
    if z == 0:
        z = plan_budget(p.target_epsilon, p.delta, rounds, max_noise_multiplier=p.max_noise_multiplier)
    sizes = {k: v for k, v in cfg.monitor.suite_sizes.items() if v > 0}
    suites = load_suites(sizes, seed=cfg.monitor.probe_seed)
    plan = MonitorPlan(cfg, suites, z, epsilon_after(z, rounds, p.delta))
    warning = overspend_warning(plan)
    if warning:
        log.warning("%s", warning)
    return plan


def overspend_warning(plan: MonitorPlan) -> str | None:
    """One line when the plan spends more than ``privacy.target_epsilon`` (only possible with a
    fixed ``privacy.noise_multiplier``), naming the noise multiplier that would meet it."""
    p, rounds = plan.cfg.privacy, plan.cfg.federation.rounds
    if plan.planned_epsilon <= p.target_epsilon * (1 + 1e-9):
        return None
    meets = noise_multiplier_for(p.target_epsilon, rounds, p.delta)
    return (
        f"privacy: this run spends epsilon {plan.planned_epsilon:.3g} on its monitor reports over {rounds} rounds "
        f"(privacy.noise_multiplier = {plan.noise_multiplier:g}), more than privacy.target_epsilon = "
        f"{p.target_epsilon:g}; set privacy.noise_multiplier >= {meets:.3g}, or 0 to plan it for the target"
    )


def monitor_groups(cfg: Config, client_groups: Iterable[str]) -> tuple[str, ...]:
    """The public client groups of the fairness gaps: ``monitor.groups``, else the chatterbot languages
    of the clients (``client_groups``: each client's group), else none."""
    if cfg.monitor.groups:
        return tuple(cfg.monitor.groups)
    if groups_are_public(cfg.data.source):
        return tuple(sorted({g for g in client_groups if g}))
    return ()


def server_suites(plan: MonitorPlan) -> dict[str, ProbeSuite]:
    """The fixed public sample the server scores the global model on: the first items of each
    suite (the suites are stratified round robins, so a prefix covers the strata)."""
    items = plan.cfg.monitor.server_items
    return {n: subset_suite(s, list(range(items[n]))) for n, s in plan.suites.items() if items.get(n, 0) > 0}


def group_suite(plan: MonitorPlan, groups: Sequence[str]) -> ProbeSuite | None:
    """Public texts of the groups the server scores the global model on (``monitor.group_items``
    per group; groups that are not chatterbot languages have none); None below 2 such groups."""
    m = plan.cfg.monitor
    per_group = [group_items(g, m.group_items, m.probe_seed) for g in sorted(groups)] if m.group_items else []
    per_group = [items for items in per_group if items]
    return make_suite("groups", [i for items in per_group for i in items]) if len(per_group) >= 2 else None


def monitor_schema(plan: MonitorPlan, groups: Sequence[str]) -> ReportSchema:
    """The report layout every client and the server agree on (from public things only)."""
    m = plan.cfg.monitor
    personal = policy_class(plan.cfg.personalization.method).personalized
    return build_schema(plan.suites, groups, m.bins, m.utility_bins, m.utility_max_loss, m.ood_max_nll,
                        probe_before=m.probe_before, personal=personal)


def server_settings(plan: MonitorPlan, schema: ReportSchema, n_expected: int) -> MonitorServerSettings:
    """The DP settings of the reports (clip, noise, rejection) both sides use."""
    p, m = plan.cfg.privacy, plan.cfg.monitor
    l2 = p.l2_clip or schema.l2_bound
    exact = m.probe_before and "adaptation_misalignment.measured" in schema.index and l2 >= schema.l2_bound
    return MonitorServerSettings(plan.noise_multiplier, l2, n_expected, p.min_clients, p.delta, p.reject_k,
                                 m.ood_max_nll, exact, schema.own_bound, p.adaptation_share)
