"""The monitor's tests for a run: the paired tests of the global model and the change detectors of the
client streams, with the run's false-alarm budget split between them (weighted Bonferroni)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.monitor import modes
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.detection.global_change import GlobalChangeTest
from openpfi.monitor.detection.group_gap import GroupGapTest
from openpfi.monitor.detection.paired_power import PairedPlan, paired_detectable
from openpfi.monitor.probes import ProbeSuite, pools
from openpfi.monitor.probes.run import results_from_dict
from openpfi.monitor.types import MetricPoint, global_name
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.schema import ReportSchema


@dataclass
class Tests:
    """The run's tests: ``bank`` on the client streams, the paired tests on the global model."""

    bank: DetectorBank
    change_test: GlobalChangeTest | None
    group_test: GroupGapTest | None
    client_streams: int
    """Streams the bank's thresholds are split over."""
    off: dict[str, PairedPlan] = field(default_factory=dict)
    """Global streams switched off (blind at this size) -> what their power rests on."""

    @property
    def paired(self) -> list[GlobalChangeTest | GroupGapTest]:
        return [t for t in (self.change_test, self.group_test) if t is not None and t.streams]

    def budget(self, target: float) -> dict[str, Any] | None:
        """The paired tests' part of the false-alarm budget (every stream the same share), for the audit log."""
        tests = self.paired
        if not tests:
            return None
        n = sum(len(t.streams) for t in tests)
        return {"streams": n, "alpha_per_stream_run": tests[0].alpha, "budget_share": tests[0].alpha * n / target,
                "rounds": tests[0].rounds, "group_gap": any(isinstance(t, GroupGapTest) for t in tests)}


def _split_paired(tests: Tests, budget: float) -> None:
    """Every paired stream the same share of ``budget``."""
    n = sum(len(t.streams) for t in tests.paired)
    for t in tests.paired:
        t.alpha = budget / max(n, 1)


def pool_sizes() -> dict[str, int]:
    """Items of each suite's shipped pool (harmful and benign without the judge's held-out slice)."""
    sizes = {"bbq": len(pools.bbq_pool()), "crows": len(pools.crows_pool()),
             "capability": len(pools.capability_pool()), "ood": len(pools.ood_pool())}
    return sizes | {k: sum(1 for i in pools.prompt_pool(k) if not pools.is_holdout(i.id)) for k in ("harmful", "benign")}


def count_client_streams(schema: ReportSchema, n: int) -> int:
    """Streams a released round can yield (a synthetic, fully populated sum)."""
    x = np.full(len(schema), 0.5)
    for idx in schema.families.values():
        x[idx] = 1.0 / idx.size
    base = {f"out_of_domain_degradation.{k}": 0.0 for k in ("capability_accuracy",)}
    base |= {f"out_of_domain_degradation.nll.{d}": 0.0 for d in schema.keys("out_of_domain_degradation.nll")}
    ref = {f"alignment_erosion.{k}": MetricPoint(0.5, 0.4, 0.6) for k in ("refusal_rate", "over_refusal_rate")}
    return len(derive_metrics(schema, n * x, n, 0.0, ref, base, minimum_clients=1))


def _change_test(plan: MonitorPlan, suites: Mapping[str, ProbeSuite], setup: Mapping[str, Any]) -> GlobalChangeTest | None:
    """The paired test of the global model against round 0 (None for runs set up before it existed,
    whose global streams stay with the change detectors)."""
    items = setup.get("round0_global_items")
    if not items or not suites:
        return None
    m = plan.cfg.monitor
    return GlobalChangeTest(suites, results_from_dict(items, suites), modes.direction, m.target_false_alarm_rate,
                            plan.cfg.federation.rounds, m.ood_max_nll, m.server_margins, m.server_blocks, m.paired_k)


def make_tests(plan: MonitorPlan, schema: ReportSchema, setup: Mapping[str, Any], suites: Mapping[str, ProbeSuite],
               has_groups: bool, n_expected: int, resume_from: int) -> Tests:
    """The tests of a run. ``monitor.global_test_share`` of the budget goes to the paired tests, split evenly
    over their streams; the rest to the bank, split over the client streams (by simulation)."""
    cfg, m = plan.cfg, plan.cfg.monitor
    change_test = _change_test(plan, suites, setup)
    losses = setup.get("round0_group_losses")
    group_test = (GroupGapTest(losses, cfg.federation.rounds, blocks=m.server_blocks, k=m.paired_k)
                  if has_groups and losses else None)
    tests = Tests(DetectorBank(m.detector.replace("-", "_"), 0.0, m.drift_k), change_test, group_test, 0)
    bank_target = m.target_false_alarm_rate
    _split_paired(tests, m.target_false_alarm_rate * m.global_test_share)
    if change_test is not None:  # below monitor.paired_min_verdict: off, listed with their power, budget to the rest
        plans = change_test.power_plans(pool_sizes())
        keep = ("watching",) if m.paired_min_verdict == "watching" else ("watching", "weak")
        blind = [k for k, p in plans.items() if paired_detectable(p)["verdict"] not in keep]
        change_test.switch_off(blind)
        tests.off = {global_name(k): plans[k] for k in blind}
        _split_paired(tests, m.target_false_alarm_rate * m.global_test_share)
    if tests.paired:
        bank_target = m.target_false_alarm_rate * (1 - m.global_test_share)
    tests.client_streams = max(count_client_streams(schema, n_expected), 1)
    if resume_from == 0:  # on resume the bank is restored from the saved state
        alpha = bank_target / tests.client_streams
        tests.bank = DetectorBank.calibrated(
            tests.bank.detector, m.drift_k, cfg.federation.rounds, bank_target,
            np.random.default_rng([cfg.seed, 7302]), streams=tests.client_streams,
            directions=modes.directions(), n_sim=max(m.calibration_sims, int(np.ceil(20 / alpha))),
        )
    return tests


def untested(tests: Tests) -> Sequence[tuple[str, int]]:
    """(stream, items) of the global streams with too few public items for the paired test."""
    return sorted((tests.change_test.untested if tests.change_test else {}).items())
