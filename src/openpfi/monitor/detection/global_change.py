"""The global model's change since round 0, tested item-paired on the server's public sample.

The server holds the round-0 model's per-item outcomes on its fixed public sample
(``monitor/setup.json``) and each round scores the global model on the same items. Every
model-level stream ``<mode>.<metric>`` (no per-group split; out-of-domain NLL per domain)
gets its change since round 0 and the delete-one jackknife error over the items
(``paired.py``), and alarms when the bad-direction change exceeds the stream's margin with
Bonferroni-corrected confidence. Margins (``modes.default_margins``) are the smallest change
counted as material: 10 points on a rate or a bias score, 0.05 on the ECE, 10% of the
round-0 value on an out-of-domain NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from openpfi.errors import UserError
from openpfi.monitor.detection.paired import critical_t, jackknife_se, margin_t
from openpfi.monitor.modes import default_margins, metric_of
from openpfi.monitor.probes.items import ProbeSuite, subset_suite
from openpfi.monitor.probes.run import ProbeResults, select_items
from openpfi.monitor.types import Alarm, StreamName, global_name, stream_mode
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.model import items_behind, model_values

MIN_ITEMS = 5
"""Fewer public items behind a stream leave too few degrees of freedom for the test (its
critical value runs into the hundreds); such streams are listed as untested instead."""
MIN_SE = 1e-6
"""Error floor: a change every item made alike has jackknife error 0."""
DETECTOR = "paired_jackknife"


def drop_unit(res: ProbeResults, j: int, loo_suites: Mapping[str, ProbeSuite]) -> ProbeResults:
    """``res`` without item ``j`` of every suite (suites of ``j`` items or fewer unchanged);
    ``loo_suites`` are the suites without that item."""
    keep = {n: [i for i in range(len(s.items)) if i != j] for n, s in res.suites.items() if j < len(s.items)}
    return select_items(res, keep, loo_suites)


def _defined(stream: str, values: list[dict[str, float]]) -> bool:
    return all(math.isfinite(v.get(stream, math.nan)) for v in values)


def tested(stream: str) -> bool:
    """Streams whose metric the server tests item-paired (``Metric.paired``): the overall stream,
    or every group's stream of a metric tested per group (out-of-domain NLL per domain)."""
    name = StreamName.parse(stream)
    metric = metric_of(name)
    if metric is None or metric.paired == "no":
        return False
    return (name.group is None) == (metric.paired == "overall")


class GlobalChangeTest:
    """Round-t global model vs round 0 on the same public items (module docstring).

    ``direction(stream)`` names the bad change (increase / decrease / both);
    ``alpha_per_stream`` is the run's false-alarm budget share of one stream, split again
    over ``rounds`` rounds.
    """

    def __init__(self, suites: Mapping[str, ProbeSuite], reference: ProbeResults, direction: Callable[[str], str],
                 alpha_per_stream: float, rounds: int, ood_max_nll: float,
                 margins: Mapping[str, float] | None = None) -> None:
        self.suites = dict(suites)
        self.units = max((len(s.items) for s in self.suites.values()), default=0)
        if self.units < 2:
            raise UserError("the paired test of the global model needs a server sample of at least 2 items per suite; "
                            "raise monitor.server_items")
        self.loo = [{n: subset_suite(s, [i for i in range(len(s.items)) if i != j]) if j < len(s.items) else s
                     for n, s in self.suites.items()} for j in range(self.units)]
        self.direction, self.rounds = direction, int(rounds)
        self.alpha = float(alpha_per_stream)
        self.margins = {**default_margins(), **(margins or {})}
        self.schema = build_schema(self.suites, groups=(), ood_max_nll=ood_max_nll)
        self.ref = self._values(reference)
        self.ref_loo = [self._values(drop_unit(reference, j, self.loo[j])) for j in range(self.units)]
        items = {k: items_behind(k, self.suites) for k in self.ref if tested(k) and self.units_of(k) >= 2
                 and _defined(k, [self.ref, *self.ref_loo[:self.units_of(k)]])}
        self.untested = {k: m for k, m in items.items() if m < MIN_ITEMS}
        """Streams over fewer than ``MIN_ITEMS`` items (stream -> items): not tested."""
        self.streams = sorted(k for k in items if k not in self.untested)
        """Streams defined on the sample and on every leave-one-out subsample of it, over at
        least ``MIN_ITEMS`` items."""

    def _values(self, res: ProbeResults) -> dict[str, float]:
        return model_values(res, self.schema)

    def margin(self, stream: str) -> float:
        name = StreamName.parse(stream)
        metric = metric_of(name)
        key = (metric.margin_key or name.metric) if metric is not None else name.metric
        if key not in self.margins:
            raise UserError(f"no change margin for metric '{key}'; add it to monitor.server_margins")
        return self.margins[key] * (abs(self.ref[stream]) if metric is not None and metric.relative else 1.0)

    def units_of(self, stream: str) -> int:
        """Sampling units that hold an item of the stream's suites (unit j = item j of each suite)."""
        metric = metric_of(stream)
        names = metric.suites if metric is not None and metric.suites else tuple(self.suites)
        return max((len(self.suites[n].items) for n in names if n in self.suites), default=self.units)

    def evaluate(self, current: ProbeResults) -> dict[str, dict[str, float]]:
        """Stream -> change, se, margin, items, t, critical for the model that gave ``current``."""
        cur = self._values(current)
        cur_loo = [self._values(drop_unit(current, j, self.loo[j])) for j in range(self.units)]
        out: dict[str, dict[str, float]] = {}
        for k in self.streams:
            n = self.units_of(k)
            if not _defined(k, [cur, *cur_loo[:n]]):  # e.g. a ratio with an empty denominator
                continue
            change = cur[k] - self.ref[k]
            se = jackknife_se([c[k] - r[k] for c, r in zip(cur_loo[:n], self.ref_loo[:n], strict=True)])
            m = items_behind(k, self.suites)
            margin = self.margin(k)
            out[k] = {
                "reference": self.ref[k], "value": cur[k], "change": change, "se": se, "margin": margin,
                "items": float(m), "t": margin_t(change, se, margin, self.direction(global_name(k)), MIN_SE),
                "critical": critical_t(self.alpha, self.rounds, m),
            }
        return out

    def alarms(self, round_num: int, evaluated: Mapping[str, Mapping[str, float]]) -> list[Alarm]:
        return paired_alarms(round_num, evaluated)


def paired_alarms(round_num: int, evaluated: Mapping[str, Mapping[str, float]]) -> list[Alarm]:
    """An alarm for every evaluated stream (``{t, critical, ...}``) whose ``t`` exceeds its critical value."""
    return [
        Alarm(mode=stream_mode(k), stream=global_name(k), round=int(round_num), magnitude=float(e["t"]),
              detector=DETECTOR, threshold=float(e["critical"]), evidence=dict(e))
        for k, e in sorted(evaluated.items()) if e["t"] > e["critical"]
    ]
