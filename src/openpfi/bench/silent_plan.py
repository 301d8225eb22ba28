"""The plan of `openpfi bench silent`: the profile, the scenarios and seeds to run, each run's config, and
the duration estimate. Nothing here runs or writes anything."""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpfi.bench.silent_scenarios import (
    SCENARIO_DIR,
    Profile,
    Scenario,
    load_scenarios,
    load_suite,
    merge,
    scenario_config,
)
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.models.registry import relative_cost, resolve

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo.toml"
SETUP_SECONDS = 5.0
"""Per-run fixed cost in the duration estimate (model load, client round-0 references, report)."""
FIRST_START_SECONDS = 20.0
"""Round 0 of the first run from each starting model (refusal-judge generations, the base
model's client suites), on top of one server scoring; later runs read it from the cache."""
SERVER_SECONDS_PER_ITEM = 0.066
"""The server scoring one public item on the global model once. Calibrated on the quick suite of
2026-11-30 (2-core machine, 256-token packed rows): the server's part of a round, 186 items, took
12.3 s (the monitor's 14.2 s less the clients' 1.9 s)."""
STEP_SECONDS = 0.75
"""One extra local step of an injected client (``steps_scale`` > 1): the 48-client adaptation run of
2026-11-30 (full profile) trained 96 steps in 71.5 s in round 1 and 192 in 143.6 s
in round 2 (batch 4, max length 64, 2-core machine)."""



@dataclass(frozen=True)
class BenchPlan:
    profile_name: str
    profile: Profile
    base: dict[str, Any]
    scenarios: list[Scenario]
    seeds: int
    work: Path

    def runs(self) -> list[tuple[Scenario, int]]:
        """Seed-major: an interrupted suite has every scenario at the seeds it finished."""
        return [(s, seed) for seed in range(self.seeds) for s in self.scenarios]

    def folder(self, scenario: Scenario, seed: int) -> Path:
        return self.work / scenario.name / f"seed-{seed}"


def _demo_raw() -> dict[str, Any]:
    if not DEMO.is_file():
        return {}
    raw = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    raw.pop("output", None)
    return raw


def make_plan(
    out: Path,
    quick: bool = False,
    seeds: int | None = None,
    scenarios_dir: Path | None = None,
    only: Sequence[str] = (),
    model: str | None = None,
) -> BenchPlan:
    """Validate every scenario file and the profile; nothing is run or written. ``model``
    replaces the profile's ``model.name`` in every run (and so in every config hash)."""
    directory = scenarios_dir or SCENARIO_DIR
    suite = load_suite(directory)
    name = "quick" if quick else "full"
    profile = suite.quick if quick else suite.full
    base = merge(_demo_raw(), profile.config)
    if model:
        resolve(model)  # a clear error for a model that is not on disk, before anything runs
        base = merge(base, {"model": {"name": model}})
    scenarios = load_scenarios(directory, base)
    wanted = list(only) or profile.scenarios
    if wanted:
        known = {s.name for s in scenarios}
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise UserError(f"unknown scenario {', '.join(unknown)}; scenario files in {directory}: {', '.join(sorted(known))}")
        scenarios = [s for s in scenarios if s.name in wanted]
    if not profile.scale_clients:
        scenarios = [s.without_scaling() for s in scenarios]
    if profile.start_round is not None:
        scenarios = [s.with_start_round(profile.start_round) for s in scenarios]
        for s in scenarios:  # the onset must still fall within the profile's rounds
            scenario_config(s, base)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: use at least 1 seed")
    return BenchPlan(name, profile, base, scenarios, seeds or profile.seeds, out.parent / f"{out.stem}.runs")


def run_config(plan: BenchPlan, scenario: Scenario, seed: int, adapter: str = "") -> Config:
    extra: dict[str, Any] = {"seed": seed, "monitor": {"enabled": True}}
    if adapter:
        extra["model"] = {"adapter": adapter}
    return scenario_config(scenario, plan.base, extra)


def expected_seconds(plan: BenchPlan, configs: Sequence[Config], done: Collection[int] = ()) -> float:
    """Per run (``configs`` in ``plan.runs()`` order): setup; round 0 (once per starting model and
    seed: later runs reuse it); the server scoring its public sample after every round; every
    sampled client each round (training, its monitor probes, evaluation); and the injected
    clients' extra local steps from onset on. Runs at the indices in ``done`` (finished earlier)
    cost nothing, and their round 0 is cached for later runs from the same start. The constants
    are SmolLM2-135M's; another bundled model scales the sum by its measured ``relative_cost``."""
    spc = plan.profile.seconds_per_client_round
    total = 0.0
    started: set[tuple[str, int]] = set()  # (starting adapter, seed): round 0 evaluated once, then cached
    for i, ((scenario, _), c) in enumerate(zip(plan.runs(), configs, strict=True)):
        rounds = c.federation.rounds
        items = sum(c.monitor.server_items.values()) + c.monitor.group_items * len(c.monitor.groups)
        full = SERVER_SECONDS_PER_ITEM * items if c.monitor.enabled else 0.0  # round 0: every block
        server = full / c.monitor.server_blocks  # a round: one block
        start = (c.model.adapter or scenario.spec.scenario.start, c.seed)
        if i in done:
            started.add(start)
            continue
        if start not in started:  # later runs from the same start read round 0 from the cache
            total += FIRST_START_SECONDS + full
        started.add(start)
        inj = scenario.injection
        injected_rounds = max(0, rounds - inj.start_round + 1) if inj.kind != "none" else 0
        steps = c.client.local_steps
        extra_steps = max(0, round(steps * inj.steps_scale) - steps)
        total += (SETUP_SECONDS + rounds * server + rounds * c.federation.clients_per_round * spc
                  + inj.count(c.data.num_clients) * injected_rounds * extra_steps * STEP_SECONDS)
    cost = relative_cost(configs[0].model.name) if configs else None
    return total * (cost or 1.0)
