"""Fairness across the federation's public groups, measured by the server on the global model.

The clients' fairness streams (utility histogram, per-group utility) are DP sums: at a dozen
clients per round and epsilon 8 their noise hides any change (docs/BENCHMARKS-silent.md). The
server, though, may score the global model on *public* text of each group the federation
serves (``monitor.groups``, e.g. chatterbot languages), noiselessly and item-paired against
round 0, as ``global_change.py`` does for the other modes. Per-token losses are not
comparable across languages (tokenizers split scripts differently), so the groups are compared
by their *relative* change since round 0::

    rho_g(t) = (mean_i L_g,i(t) - mean_i L_g,i(0)) / mean_i L_g,i(0)
    gap(t)   = max_g rho_g(t) - min_g rho_g(t)          (0 at round 0)

``gap`` is the spread of the groups' outcomes: 0.1 means one group's loss moved 10% of its
round-0 value more (for the worse) than another group's. The global model's gains going to
some groups and not others (or one group's loss rising while another's falls) is the fairness
collapse plain FedAvg hides when a majority dominates the updates (Li et al. 2020, "Fair
resource allocation in federated learning": fairness as uniformity of performance across
clients). Its delete-one jackknife over units (unit j = item j of every group) gives the error; the
excess beyond the margin (0.1, like the 10% of an out-of-domain NLL) feeds the CUSUM of
``sequential.py``, one block of each group's texts a round, as for the other paired tests. Public group items are kept out of the
clients' data (``probes.group_items``, ``assembly/clients.load_clients``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from openpfi.errors import UserError
from openpfi.monitor.detection.global_change import MAX_EXCESS, MIN_ITEMS, MIN_SE, block_indices, paired_alarms
from openpfi.monitor.detection.paired import jackknife_se
from openpfi.monitor.detection.paired_power import PairedPlan
from openpfi.monitor.detection.sequential import DEFAULT_K, StreamCusums, block_schedule
from openpfi.monitor.probes.items import ProbeSuite, subset_suite
from openpfi.monitor.types import Alarm

STREAM = "fairness_collapse.group_gap"
"""The stream (reported as ``fairness_collapse.global_group_gap``: a stream of the global model)."""
MARGIN = 0.1
"""Material spread of the groups' relative loss changes (10 points, as nll_relative)."""

Losses = Mapping[str, Sequence[float]]
"""Group -> per-item mean per-token NLL on the group's public items (the same items each round)."""


def relative_changes(reference: Losses, current: Losses) -> dict[str, float]:
    """Group -> (mean current loss - mean reference loss) / mean reference loss."""
    if set(reference) != set(current):
        raise UserError(f"group losses cover groups {sorted(current)}, the round-0 reference {sorted(reference)}; "
                        f"restore the run's monitor.groups")
    out = {}
    for g in sorted(reference):
        ref, cur = list(reference[g]), list(current[g])
        if len(ref) != len(cur) or not ref:
            raise UserError(f"group '{g}': {len(cur)} current losses against {len(ref)} round-0 losses; "
                            f"the server must score the same public items every round")
        base = sum(ref) / len(ref)
        if not (math.isfinite(base) and base > 0):
            raise UserError(f"group '{g}': round-0 mean loss {base} must be a positive number")
        out[g] = (sum(cur) / len(cur) - base) / base
    return out


def gap(reference: Losses, current: Losses) -> float:
    """max_g rho_g - min_g rho_g (module docstring); needs at least 2 groups."""
    return _spread(relative_changes(reference, current))


def _spread(rho: Mapping[str, float]) -> float:
    if len(rho) < 2:
        raise UserError("a gap across groups needs at least 2 groups")
    return max(rho.values()) - min(rho.values())


def drop_item(losses: Losses, j: int) -> dict[str, list[float]]:
    """Every group without its item ``j`` (groups of ``j`` items or fewer unchanged)."""
    return {g: list(v[:j]) + list(v[j + 1:]) if j < len(v) else list(v) for g, v in losses.items()}


def gap_jackknife_se(reference: Losses, current: Losses) -> float:
    """Delete-one jackknife error of :func:`gap` over units j (item j of every group)."""
    units = max(len(v) for v in reference.values())
    return jackknife_se([gap(drop_item(reference, j), drop_item(current, j)) for j in range(units)])


class GroupGapTest:
    """The global model's gap across groups against round 0, one block of each group's texts a round
    (``global_change.py`` splits its items the same way) with the CUSUM of ``sequential.py``.

    ``reference``: per-item losses of the round-0 model per group; ``alpha``: this stream's share of the
    run's false-alarm budget (set by the caller); ``blocks``: ``monitor.server_blocks``.
    """

    def __init__(self, reference: Losses, rounds: int, alpha: float = 0.0, margin: float = MARGIN,
                 blocks: int = 1, k: float = DEFAULT_K) -> None:
        self.reference = {g: [float(x) for x in v] for g, v in sorted(reference.items())}
        self.rounds, self.margin, self.n_blocks = int(rounds), float(margin), int(blocks)
        self.cusums = StreamCusums(block_schedule(self.rounds, blocks), k, alpha)
        self.blocks = [self._block(self.reference, b) for b in range(blocks)]
        self.items = min((len(v) for blk in self.blocks for v in blk.values()), default=0)
        """The fewest texts a group has in a block."""
        self.streams = [STREAM] if len(self.reference) >= 2 and self.items >= MIN_ITEMS else []
        """Tested when at least 2 groups have public items, each at least ``MIN_ITEMS`` in every block."""

    @property
    def alpha(self) -> float:
        return self.cusums.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.cusums.alpha = float(value)

    def _block(self, losses: Losses, b: int) -> dict[str, list[float]]:
        return {g: [v[j] for j in block_indices(len(v), self.n_blocks, b)] for g, v in losses.items()}

    def block_suite(self, suite: ProbeSuite, round_num: int) -> ProbeSuite:
        """The texts of ``suite`` (every group's, ``TextItem.source`` = group) round ``round_num`` scores."""
        if self.n_blocks == 1:
            return suite
        b, seen, keep = self.cusums.block_of(round_num), dict[str, int](), list[int]()
        for i, item in enumerate(suite.items):
            j = seen[item.source] = seen.get(item.source, -1) + 1
            if j % self.n_blocks == b:
                keep.append(i)
        return subset_suite(suite, keep)

    def level_se(self) -> float:
        """The planning spread of the gap on one block, as ``GlobalChangeTest.level_se`` is for a level: the
        gap is a difference of two groups' relative changes, so sqrt(2) x the largest relative standard
        error of a group's mean loss (the power analysis doubles the variance for the change)."""
        rel = max(statistics.pstdev(v) / (sum(v) / len(v)) / math.sqrt(max(len(v) - 1, 1))
                  for blk in self.blocks for v in blk.values())
        return math.sqrt(2.0) * rel

    def power_plan(self, pool: int = 0) -> PairedPlan:
        """What the gap's power rests on (``paired_power.paired_detectable``)."""
        return PairedPlan(margin=self.margin, direction="increase", level=0.0, level_se=self.level_se(),
                          items=self.items, binary=False, schedule=self.cusums.schedule, k=self.cusums.k,
                          threshold=self.cusums.threshold(self.items), span=1.0, blocks=self.n_blocks, pool=pool,
                          suite="groups")

    def evaluate(self, round_num: int, current: Losses) -> dict[str, dict[str, float]]:
        """``{STREAM: {reference, value, change, se, margin, items, excess, statistic, threshold, block}}``
        for the losses of round ``round_num``'s block (empty when untested); advances the CUSUM."""
        if not self.streams:
            return {}
        b = self.cusums.block_of(round_num)
        ref = self.blocks[b]
        rho = relative_changes(ref, current)
        value = _spread(rho)
        se = gap_jackknife_se(ref, current)
        x = min(max((value - self.margin) / max(se, MIN_SE), -MAX_EXCESS), MAX_EXCESS)
        stat, h = self.cusums.step(STREAM, x, self.items)
        return {STREAM: {
            "reference": 0.0, "value": value, "change": value, "se": se, "margin": self.margin,
            "items": float(self.items), "excess": x, "statistic": stat, "threshold": h, "block": float(b),
            **{f"rho.{g}": r for g, r in rho.items()},
        }}

    def alarms(self, round_num: int, evaluated: Mapping[str, Mapping[str, float]]) -> list[Alarm]:
        return paired_alarms(round_num, evaluated, self.cusums)
