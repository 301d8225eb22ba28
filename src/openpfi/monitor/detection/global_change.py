"""The global model's change since round 0, tested item-paired on the server's public sample, with
evidence accumulated across rounds (``sequential.py``).

The server holds the round-0 model's per-item outcomes on its public sample (``monitor/setup.json``).
The sample is split into ``B`` blocks (item j of every suite is in block ``j mod B``, so each block keeps
the suites' strata); round t scores the global model on block ``(t - 1) mod B`` only. Every tested
stream (``Metric.paired``: the overall stream, or one per group for out-of-domain NLL) gets its change
since round 0 on that block's items, the delete-one jackknife error over them (``paired.py``), and its
excess beyond the materiality margin in standard errors, which feeds the stream's CUSUM. A stream
alarms when the CUSUM passes its threshold, calibrated for the stream's share of the run's
false-alarm budget over the run's rounds and block schedule.

Margins (``Metric.margin``, overridden by ``monitor.server_margins``) are the smallest change counted
as material: 0.1 on a rate, a probability or a bias score, 0.05 on the ECE, 10% of the round-0 value
on an out-of-domain NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from openpfi.errors import UserError
from openpfi.monitor.detection.paired import excess_change, jackknife_se
from openpfi.monitor.detection.paired_power import PairedPlan
from openpfi.monitor.detection.sequential import DEFAULT_K, StreamCusums, block_schedule
from openpfi.monitor.modes import default_margins, metric_of
from openpfi.monitor.probes.items import ProbeSuite, subset_suite
from openpfi.monitor.probes.run import ProbeResults, select_items
from openpfi.monitor.types import Alarm, StreamName, global_name
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.model import items_behind, model_values

MIN_ITEMS = 5
"""Fewer public items behind a stream in a block leave too few degrees of freedom for its test;
such streams are listed as untested instead."""
MIN_SE = 1e-6
"""Error floor: a change every item made alike has jackknife error 0."""
MAX_EXCESS = 50.0
"""The standardized excess is clipped to +-this (a change with error 0 is exact: it passes any
threshold, or stays far below it)."""
DETECTOR = "paired_cusum"


def block_indices(size: int, blocks: int, b: int, strata: Sequence[object] | None = None) -> list[int]:
    """Items of block ``b`` of a suite of ``size`` items: ``j mod blocks == b``; with ``strata`` (a key per
    item, e.g. its out-of-domain text's domain) ``(r + k) mod blocks == b`` for the item's rank ``r``
    within its stratum, the ``k``-th seen, so every block holds its share of each stratum whatever
    the suite's order (a suite interleaved by domain with period ``blocks`` would otherwise give each
    block one domain)."""
    keys = strata if strata is not None else [None] * size  # one stratum: rank r = j
    seen: dict[object, int] = {}
    offset: dict[object, int] = {}  # the k-th stratum seen starts at block k, so leftovers spread too
    out = []
    for j in range(size):
        key = keys[j]
        offset.setdefault(key, len(offset))
        r = seen.get(key, 0)
        seen[key] = r + 1
        if (r + offset[key]) % blocks == b:
            out.append(j)
    return out


def tested(stream: str) -> bool:
    """Streams whose metric the server tests item-paired (``Metric.paired``): the overall stream,
    or every group's stream of a metric tested per group (out-of-domain NLL per domain)."""
    name = StreamName.parse(stream)
    metric = metric_of(name)
    if metric is None or metric.paired == "no":
        return False
    return (name.group is None) == (metric.paired == "overall")


def _defined(stream: str, values: Sequence[Mapping[str, float]]) -> bool:
    return all(math.isfinite(v.get(stream, math.nan)) for v in values)


@dataclass
class Block:
    """One block of the server's sample: its suites and the round-0 values on them (and without each unit)."""

    suites: dict[str, ProbeSuite]
    ref: dict[str, float]
    ref_loo: list[dict[str, float]]

    @property
    def units(self) -> int:
        return max((len(s.items) for s in self.suites.values()), default=0)


def _loo_suites(suites: Mapping[str, ProbeSuite], j: int) -> dict[str, ProbeSuite]:
    return {n: subset_suite(s, [i for i in range(len(s.items)) if i != j]) if j < len(s.items) else s
            for n, s in suites.items()}


def drop_unit(res: ProbeResults, j: int, loo_suites: Mapping[str, ProbeSuite]) -> ProbeResults:
    """``res`` without item ``j`` of every suite (suites of ``j`` items or fewer unchanged)."""
    keep = {n: [i for i in range(len(s.items)) if i != j] for n, s in res.suites.items() if j < len(s.items)}
    return select_items(res, keep, loo_suites)


class GlobalChangeTest:
    """Round-t global model vs round 0 on the block of public items round t scores (module docstring).

    ``direction(stream)`` names the bad change; ``alpha`` (set by the caller once every stream is
    counted) is one stream's share of the run's false-alarm budget; ``blocks``: ``monitor.server_blocks``;
    ``k``: the CUSUM's allowance in standard errors.
    """

    def __init__(self, suites: Mapping[str, ProbeSuite], reference: ProbeResults, direction: Callable[[str], str],
                 alpha: float, rounds: int, ood_max_nll: float, margins: Mapping[str, float] | None = None,
                 blocks: int = 1, k: float = DEFAULT_K) -> None:
        self.suites = dict(suites)
        if max((len(s.items) for s in self.suites.values()), default=0) < 2:
            raise UserError("the paired test of the global model needs a server sample of at least 2 items per suite; "
                            "raise monitor.server_items")
        self.direction, self.rounds = direction, int(rounds)
        self.cusums = StreamCusums(block_schedule(self.rounds, blocks), k, alpha)
        self.margins = {**default_margins(), **(margins or {})}
        self.schema = build_schema(self.suites, groups=(), ood_max_nll=ood_max_nll)
        self.ref_full = model_values(reference, self.schema)
        self.blocks = [self._block(reference, b, blocks) for b in range(blocks)]
        self.items = self._items()
        self.untested = {k: n for k, n in self.items.items() if n < MIN_ITEMS}
        """Streams with fewer than ``MIN_ITEMS`` items in some block (stream -> items): not tested."""
        self.streams = sorted(k for k in self.items if k not in self.untested)
        """Streams defined on every block and every leave-one-out subsample of it, over at least
        ``MIN_ITEMS`` items of each block."""

    def switch_off(self, streams: Sequence[str]) -> None:
        """Stop testing ``streams`` (blind at this size: they are listed with their power instead)."""
        self.streams = [k for k in self.streams if k not in set(streams)]

    @property
    def alpha(self) -> float:
        """One stream's share of the run's false-alarm budget."""
        return self.cusums.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.cusums.alpha = float(value)

    @property
    def schedule(self) -> tuple[int, ...]:
        return self.cusums.schedule

    def _block(self, reference: ProbeResults, b: int, blocks: int) -> Block:
        keep = {n: block_indices(len(s.items), blocks, b, [getattr(i, "domain", None) for i in s.items])
                for n, s in self.suites.items()}
        suites = {n: subset_suite(s, keep[n]) for n, s in self.suites.items()}
        ref = select_items(reference, keep, suites)
        block = Block(suites, self._values(ref), [])
        block.ref_loo = [self._values(drop_unit(ref, j, _loo_suites(suites, j))) for j in range(block.units)]
        return block

    def _values(self, res: ProbeResults) -> dict[str, float]:
        return model_values(res, self.schema)

    def _items(self) -> dict[str, int]:
        """Tested-stream candidates -> the fewest items behind them in any block."""
        out: dict[str, int] = {}
        for k in self.ref_full:
            if not tested(k):
                continue
            n = [self.units_of(k, b) for b in self.blocks]
            if min(n) < 2 or not all(_defined(k, [b.ref, *b.ref_loo[:m]]) for b, m in zip(self.blocks, n, strict=True)):
                continue
            out[k] = min(items_behind(k, b.suites) for b in self.blocks)
        return out

    def units_of(self, stream: str, block: Block) -> int:
        """Sampling units of a block that hold an item of the stream's suites (unit j = item j of each suite)."""
        metric = metric_of(stream)
        names = metric.suites if metric is not None and metric.suites else tuple(block.suites)
        return max((len(block.suites[n].items) for n in names if n in block.suites), default=block.units)

    def suites_for(self, round_num: int) -> dict[str, ProbeSuite]:
        """The suites (one block) the server scores the global model on in round ``round_num``."""
        return self.blocks[self.cusums.block_of(round_num)].suites

    def level_se(self, stream: str) -> float:
        """The jackknife error of the stream's round-0 level on one block (median over the blocks):
        the spread the power analysis plans with (``power.paired_detectable``)."""
        ses = sorted(jackknife_se([r[stream] for r in b.ref_loo[:self.units_of(stream, b)]]) for b in self.blocks)
        return ses[len(ses) // 2]

    def margin(self, stream: str, reference: float) -> float:
        name = StreamName.parse(stream)
        metric = metric_of(name)
        key = (metric.margin_key or name.metric) if metric is not None else name.metric
        if key not in self.margins:
            raise UserError(f"no change margin for metric '{key}'; add it to monitor.server_margins")
        return self.margins[key] * (abs(reference) if metric is not None and metric.relative else 1.0)

    def threshold(self, stream: str) -> float:
        """The CUSUM threshold of a stream: its share of the budget over the run's block schedule."""
        return self.cusums.threshold(self.items[stream])

    def power_plans(self, pools: Mapping[str, int] | None = None) -> dict[str, PairedPlan]:
        """Stream -> what its power rests on (``paired_power.paired_detectable``); ``pools``: items of each
        suite's shipped pool, for the fix."""
        out = {}
        for k in self.streams:
            metric = metric_of(k)
            suites = [n for n in (metric.suites if metric is not None else ()) if n in self.suites]
            span = (metric.hi - metric.lo) if metric is not None and not metric.scale_hi else abs(self.ref_full[k])
            out[k] = PairedPlan(
                margin=self.margin(k, self.ref_full[k]), direction=self.direction(global_name(k)),
                level=self.ref_full[k], level_se=self.level_se(k), items=self.items[k],
                binary=bool(metric is not None and metric.binary), schedule=self.schedule, k=self.cusums.k,
                threshold=self.threshold(k), span=span, blocks=len(self.blocks),
                pool=sum((pools or {}).get(n, 0) for n in suites[:1]), suite=suites[0] if suites else "")
        return out

    def evaluate(self, round_num: int, current: ProbeResults) -> dict[str, dict[str, float]]:
        """Stream -> reference, value, change, se, margin, items, excess, statistic, threshold, block for
        the model that gave ``current`` on round ``round_num``'s block; advances each stream's CUSUM."""
        b = self.cusums.block_of(round_num)
        block = self.blocks[b]
        cur = self._values(current)
        cur_loo = [self._values(drop_unit(current, j, _loo_suites(block.suites, j))) for j in range(block.units)]
        out: dict[str, dict[str, float]] = {}
        for k in self.streams:
            n = self.units_of(k, block)
            if not _defined(k, [cur, *cur_loo[:n]]):  # e.g. a ratio with an empty denominator
                continue
            change = cur[k] - block.ref[k]
            se = jackknife_se([c[k] - r[k] for c, r in zip(cur_loo[:n], block.ref_loo[:n], strict=True)])
            margin = self.margin(k, block.ref[k])
            x = excess_change(change, margin, self.direction(global_name(k))) / max(se, MIN_SE)
            x = min(max(x, -MAX_EXCESS), MAX_EXCESS)
            stat, h = self.cusums.step(k, x, self.items[k])
            out[k] = {
                "reference": self.ref_full[k], "value": self.ref_full[k] + change, "change": change, "se": se,
                "margin": margin, "items": float(items_behind(k, block.suites)), "excess": x,
                "statistic": stat, "threshold": h, "block": float(b),
            }
        return out

    def alarms(self, round_num: int, evaluated: Mapping[str, Mapping[str, float]]) -> list[Alarm]:
        """Alarms of the evaluated streams whose CUSUM passed its threshold; their CUSUM restarts."""
        return paired_alarms(round_num, evaluated, self.cusums)


def paired_alarms(round_num: int, evaluated: Mapping[str, Mapping[str, float]], cusums: StreamCusums) -> list[Alarm]:
    """An alarm for every evaluated stream (``{statistic, threshold, ...}``) past its threshold; the
    stream's CUSUM restarts (a persisting change alarms again a few rounds later)."""
    out = []
    for k, e in sorted(evaluated.items()):
        if e["statistic"] > e["threshold"]:
            out.append(Alarm(mode=StreamName.parse(k).mode, stream=global_name(k), round=int(round_num),
                             magnitude=float(e["statistic"]), detector=DETECTOR, threshold=float(e["threshold"]),
                             evidence=dict(e)))
            cusums.restart(k)
    return out

