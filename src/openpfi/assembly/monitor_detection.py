"""The monitor's tests for a run: the paired tests of the global model and the change detectors of the
client streams, with the run's false-alarm budget split between them (weighted Bonferroni)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.monitor import modes
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.detection.global_change import GlobalChangeTest
from openpfi.monitor.detection.group_gap import GroupGapTest
from openpfi.monitor.probes import ProbeSuite
from openpfi.monitor.probes.run import results_from_dict
from openpfi.monitor.types import MetricPoint
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
                            plan.cfg.federation.rounds, m.ood_max_nll, m.server_margins)


def make_tests(plan: MonitorPlan, schema: ReportSchema, setup: Mapping[str, Any], suites: Mapping[str, ProbeSuite],
               has_groups: bool, n_expected: int, resume_from: int) -> Tests:
    """The tests of a run. ``monitor.global_test_share`` of the budget goes to the paired tests, split evenly
    over their streams; the rest to the bank, split over the client streams (by simulation)."""
    cfg, m = plan.cfg, plan.cfg.monitor
    change_test = _change_test(plan, suites, setup)
    losses = setup.get("round0_group_losses")
    group_test = GroupGapTest(losses, cfg.federation.rounds) if has_groups and losses else None
    tests = Tests(DetectorBank(m.detector.replace("-", "_"), 0.0, m.drift_k), change_test, group_test, 0)
    bank_target = m.target_false_alarm_rate
    if tests.paired:
        n_paired = sum(len(t.streams) for t in tests.paired)
        for t in tests.paired:
            t.alpha = m.target_false_alarm_rate * m.global_test_share / n_paired
        bank_target = m.target_false_alarm_rate * (1 - m.global_test_share)
    n_client = count_client_streams(schema, n_expected)
    if change_test is not None and change_test.streams:
        tests.client_streams = max(n_client, 1)
    else:
        tests.client_streams = max(n_client + len(setup["round0_global"]), 1)
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
