"""The monitor's plan, checked before a run folder exists: probe suites loaded and hashed, DP noise planned."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from openpfi.algorithms.privacy import epsilon_after, noise_multiplier_for
from openpfi.assembly.compatibility import check_combinations
from openpfi.config import Config
from openpfi.data import groups_are_public
from openpfi.monitor.privacy import plan_budget
from openpfi.monitor.probes import (
    ProbeSuite,
    load_suites,
)

log = logging.getLogger(__name__)

SETUP_FILE = "setup.json"


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
