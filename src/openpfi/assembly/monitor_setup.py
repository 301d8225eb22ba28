"""The monitor's round-0 state of a run: computed (or read from the cache) for a new run, read back and
checked on resume. Kept in ``monitor/setup.json`` in the run folder."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.assembly.monitor_round0 import round0_group_setup, round0_setup
from openpfi.assembly.setup_cache import cached_setup, setup_key
from openpfi.errors import UserError
from openpfi.monitor.audit import atomic_write_text
from openpfi.monitor.probes import ProbeSuite, suite_manifest, verify_hashes
from openpfi.monitor.vector.schema import ReportSchema

SETUP_FILE = "setup.json"


def new_setup(plan: MonitorPlan, path: Path, shared: Any, start_state: Mapping[str, Any], scorer: Any,
              schema: ReportSchema, suites: Mapping[str, ProbeSuite], group_suite: ProbeSuite | None) -> dict[str, Any]:
    """Round 0 of a new run (from the cache when the same start was evaluated before), written to ``path``."""
    setup = round0(plan, shared, start_state, scorer, schema, suites, group_suite)
    atomic_write_text(path, json.dumps(setup, sort_keys=True, indent=1) + "\n")
    return setup


def round0(plan: MonitorPlan, shared: Any, start_state: Mapping[str, Any], scorer: Any, schema: ReportSchema,
           suites: Mapping[str, ProbeSuite], group_suite: ProbeSuite | None) -> dict[str, Any]:
    """Round 0 on the server (cached across runs from the same model, start and probes)."""
    m = plan.cfg.monitor
    key = setup_key(
        dataclasses.asdict(shared.loaded.info), shared.initial_state, start_state,
        {**{f"client:{k}": v.sha256 for k, v in plan.suites.items()},
         **{f"server:{k}": v.sha256 for k, v in suites.items()}},
        {k: getattr(m, k) for k in ("ood_max_nll", "judge_check_prompts", "judge_check_max_new_tokens")},
    )
    setup = cached_setup(key, lambda: round0_setup(plan, shared, start_state, scorer, suites))
    setup.update(round0_group_setup(shared, start_state, scorer, group_suite))
    setup["probes"] = suite_manifest(plan.suites)
    setup["schema_sha256"] = schema.sha256
    return setup


def read_setup(plan: MonitorPlan, path: Path, schema: ReportSchema, group_suite: ProbeSuite | None) -> dict[str, Any]:
    """The round-0 state of a run being resumed, checked against the config it is resumed with."""
    try:
        setup = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: this monitored run cannot be resumed without its round-0 "
                        f"monitor references; restore the file") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore it") from None
    verify_hashes(plan.suites, {n: d["sha256"] for n, d in setup["probes"].items()})
    if setup.get("schema_sha256") != schema.sha256:
        raise UserError("the monitor's report schema differs from the one the run started with "
                        "(monitor groups or bins changed); restore the run's config.toml")
    if setup.get("group_suite_sha256") != (group_suite.sha256 if group_suite is not None else None):
        raise UserError("the public group texts differ from the ones the run started with "
                        "(monitor.groups or monitor.group_items changed); restore the run's config.toml")
    return dict(setup)
