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
clients). Its delete-one jackknife over units (unit j = item j of every group) gives the error,
and the margin test of ``paired.py`` (margin 0.1, like the 10% of an out-of-domain NLL) with
Bonferroni over the run's rounds decides the alarm. Public group items are kept out of the
clients' data (``probes.group_items``, ``assembly/clients.load_clients``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from openpfi.errors import UserError
from openpfi.monitor.detection.global_change import MIN_ITEMS, MIN_SE, paired_alarms
from openpfi.monitor.detection.paired import critical_t, jackknife_se, margin_t
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
    """The global model's gap across groups against round 0 (module docstring).

    ``reference``: per-item losses of the round-0 model per group; ``alpha``: this stream's share
    of the run's false-alarm budget, split again over ``rounds`` rounds (set by the caller).
    """

    def __init__(self, reference: Losses, rounds: int, alpha: float = 0.0, margin: float = MARGIN) -> None:
        self.reference = {g: [float(x) for x in v] for g, v in sorted(reference.items())}
        self.rounds, self.alpha, self.margin = int(rounds), float(alpha), float(margin)
        self.items = min((len(v) for v in self.reference.values()), default=0)
        self.streams = [STREAM] if len(self.reference) >= 2 and self.items >= MIN_ITEMS else []
        """Tested when at least 2 groups have public items, each at least ``MIN_ITEMS``."""

    def evaluate(self, current: Losses) -> dict[str, dict[str, float]]:
        """``{STREAM: {reference, value, change, se, margin, items, t, critical}}`` (empty when untested)."""
        if not self.streams:
            return {}
        rho = relative_changes(self.reference, current)
        value = _spread(rho)
        se = gap_jackknife_se(self.reference, current)
        return {STREAM: {
            "reference": 0.0, "value": value, "change": value, "se": se, "margin": self.margin,
            "items": float(self.items), "t": margin_t(value, se, self.margin, "increase", MIN_SE),
            "critical": critical_t(self.alpha, self.rounds, self.items),
            **{f"rho.{g}": r for g, r in rho.items()},
        }}

    def alarms(self, round_num: int, evaluated: Mapping[str, Mapping[str, float]]) -> list[Alarm]:
        return paired_alarms(round_num, evaluated)
