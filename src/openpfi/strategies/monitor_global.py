"""The server's own measurement of the global model: each round, one block of the public probe sample
(and of the groups' public texts) scored on the global model, the paired tests against round 0
(``monitor/detection/global_change.py``, ``group_gap.py``) and their alarms.

Only models the server holds are scored: the global adapter (its shared part from the federated server,
the rest from the starting adapter), loaded into the server's own copy of the model. No client, client
dataset or personal adapter is reachable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from openpfi.monitor.detection.global_change import GlobalChangeTest
from openpfi.monitor.detection.group_gap import STREAM as GROUP_GAP
from openpfi.monitor.detection.group_gap import GroupGapTest
from openpfi.monitor.modes import metric_of
from openpfi.monitor.probes.items import ProbeSuite
from openpfi.monitor.probes.run import run_probes
from openpfi.monitor.types import Alarm, MetricPoint, Scorer, global_name
from openpfi.monitor.vector.sums import Z95

Paired = dict[str, dict[str, float]]
"""Global stream -> its paired test's figures this round (``GlobalChangeTest.evaluate``)."""


def group_losses(scorer: Scorer, suite: ProbeSuite) -> dict[str, list[float]]:
    """Group -> the mean per-token NLL of each of its public texts in ``suite`` (in suite order)."""
    res = run_probes(scorer, {"ood": suite}, batch=256)
    out: dict[str, list[float]] = {}
    for item, loss in zip(suite.items, res.ood, strict=True):
        out.setdefault(item.source, []).append(float(loss))
    return out


def paired_point(stream: str, e: Mapping[str, float]) -> MetricPoint:
    """A tested stream's point: its round-0 level plus the block's paired change, +- 1.96 jackknife errors,
    within the metric's natural range."""
    metric = metric_of(stream)
    lo = metric.lo if metric is not None else -float("inf")
    hi = metric.hi if metric is not None and not metric.scale_hi else float("inf")
    v = min(max(e["value"], lo), hi)
    return MetricPoint(v, max(v - Z95 * e["se"], lo), min(v + Z95 * e["se"], hi), 1)


class GlobalMonitor:
    """Scores the global model on the round's block and runs the paired tests (module docstring).

    ``load(state)`` puts an adapter state into the model ``scorer`` reads; ``full_state()`` returns the
    current global adapter as a whole state.
    """

    def __init__(self, scorer: Scorer, load: Callable[[Mapping[str, Any]], None],
                 full_state: Callable[[], Mapping[str, Any]], change_test: GlobalChangeTest | None,
                 group_test: GroupGapTest | None = None, group_suite: ProbeSuite | None = None) -> None:
        self.scorer, self.load, self.full_state = scorer, load, full_state
        self.change_test = change_test if change_test is not None and change_test.streams else None
        self.group_test = group_test if group_test is not None and group_test.streams and group_suite else None
        self.group_suite = group_suite

    @property
    def active(self) -> bool:
        return self.change_test is not None or self.group_test is not None

    def round(self, round_num: int) -> tuple[dict[str, MetricPoint], Paired, list[Alarm]]:
        """(global stream -> point, global stream -> paired figures, alarms) of round ``round_num``."""
        if not self.active:
            return {}, {}, []
        self.load(self.full_state())
        tested: Paired = {}
        alarms: list[Alarm] = []
        if self.change_test is not None:
            res = run_probes(self.scorer, self.change_test.suites_for(round_num), batch=256)
            got = self.change_test.evaluate(round_num, res)
            alarms += self.change_test.alarms(round_num, got)
            tested |= got
        if self.group_test is not None and self.group_suite is not None:
            losses = group_losses(self.scorer, self.group_test.block_suite(self.group_suite, round_num))
            got = self.group_test.evaluate(round_num, losses)
            alarms += self.group_test.alarms(round_num, got)
            tested |= got
        paired = {global_name(k): e for k, e in sorted(tested.items())}
        points = {global_name(k): paired_point(k, e) for k, e in sorted(tested.items())}
        return points, paired, alarms

    def round0(self, round0_global: Mapping[str, MetricPoint]) -> dict[str, MetricPoint]:
        """Round 0's points of the tested streams (every stream's reference)."""
        out: dict[str, MetricPoint] = {}
        if self.change_test is not None:
            out |= {global_name(k): round0_global[global_name(k)] for k in self.change_test.streams
                    if global_name(k) in round0_global}
        if self.group_test is not None:
            out[global_name(GROUP_GAP)] = MetricPoint(0.0, 0.0, 0.0, 1)
        return out

    def state(self) -> dict[str, dict[str, float]]:
        """The paired tests' CUSUM statistics (for resume)."""
        return {name: dict(t.cusums.state) for name, t in (("change", self.change_test), ("group", self.group_test))
                if t is not None}

    def restore(self, state: Mapping[str, Mapping[str, float]]) -> None:
        for name, t in (("change", self.change_test), ("group", self.group_test)):
            if t is not None:
                t.cusums.state = {k: float(v) for k, v in state.get(name, {}).items()}
