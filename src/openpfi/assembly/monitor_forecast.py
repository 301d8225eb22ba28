"""``openpfi monitor plan``: what a config's monitor would see, without training.

From the config alone (federation size, privacy budget, probe sizes, blocks) and the starting model's
round 0 on the public probes (the same, cached evaluation a run of that config starts with), the run's
tests and power plans are built exactly as ``openpfi run`` builds them (``monitoring.server_monitor``),
and every stream's detectable change is computed with the report's functions (no observed errors yet).
"""

from __future__ import annotations

from typing import Any

from openpfi.assembly.clients import load_shared
from openpfi.assembly.monitor_detection import make_tests
from openpfi.assembly.monitor_plan import MonitorPlan, group_suite, monitor_schema, server_settings, server_suites
from openpfi.assembly.monitor_power import power_plans
from openpfi.assembly.monitor_setup import round0
from openpfi.client.scoring import shared_scorer
from openpfi.config import Config
from openpfi.data import groups_are_public
from openpfi.monitor.reporting.power_section import planned_power


def forecast_groups(cfg: Config) -> tuple[str, ...]:
    """The public groups a run of ``cfg`` would have (``monitor.groups``, else its chatterbot languages)."""
    if cfg.monitor.groups:
        return tuple(cfg.monitor.groups)
    if groups_are_public(cfg.data.source):
        if cfg.data.languages:
            return tuple(sorted(cfg.data.languages))
        from openpfi.data.chatterbot import topic_files

        return tuple(sorted({p.parent.name for p in topic_files()}))  # every language a client may hold
    return ()


def forecast(plan: MonitorPlan, shared: Any = None) -> dict[str, Any]:
    """``{modes: {mode: verdict entry with its streams' power}, clients, epsilon, items}`` for ``plan``'s config."""
    cfg, m = plan.cfg, plan.cfg.monitor
    if shared is None:
        shared, start = load_shared(cfg)
    else:
        shared, start = load_shared(cfg, shared)
    groups = forecast_groups(cfg)
    n_expected = min(cfg.federation.clients_per_round, cfg.data.num_clients)
    schema = monitor_schema(plan, groups)
    settings = server_settings(plan, schema, n_expected)
    scorer = shared_scorer(shared, m.batch_tokens)
    suites, gsuite = server_suites(plan), group_suite(plan, groups)
    setup = round0(plan, shared, start, scorer, schema, suites, gsuite)
    tests = make_tests(plan, schema, setup, suites, gsuite is not None, n_expected, 0)
    plans = power_plans(plan, schema, settings, tests, setup)
    return {
        "modes": planned_power(plans),
        "clients_per_round": n_expected,
        "rounds": cfg.federation.rounds,
        "epsilon": plan.planned_epsilon,
        "server_items_per_round": {n: len(s.items) // max(m.server_blocks, 1) for n, s in suites.items()},
        "server_blocks": m.server_blocks,
    }
