"""The power of a paired test of the global model (``global_change.py``, ``group_gap.py``).

A bad-direction change ``delta`` is flagged at even odds within ``DETECTION_ROUNDS`` rounds when the
CUSUM over those rounds' blocks passes its threshold half the time: when each round's excess beyond the
margin is ``mu*`` standard errors (``sequential.detectable_excess`` over the worst onset's blocks), i.e.
``delta = margin + mu* se(delta)``. The error of a block's paired change is planned from round 0 as the
unpaired two-sample error (``paired_se``), a bound for items whose values at round 0 and round t
correlate positively; a run's report takes the larger of that and the error it observed.

One case by hand: one round, one block, ``k`` and ``h`` given, normal noise: ``mu* = h + k``, so
``delta = margin + (h + k) se``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from openpfi.monitor.detection.power import DETECTION_ROUNDS
from openpfi.monitor.detection.sequential import detectable_excess, onset_window
from openpfi.monitor.detection.verdicts import WATCH_FACTOR, verdict


@dataclass(frozen=True)
class PairedPlan:
    """What the power of a paired stream of the global model rests on (one block of its items)."""

    margin: float
    """The material change, absolute (a relative margin times the round-0 value)."""
    direction: str
    level: float
    """The round-0 value on the server's sample."""
    level_se: float
    """The jackknife error of the round-0 level on one block."""
    items: int
    """Items behind the stream in a block (the excess has ``items - 1`` degrees of freedom)."""
    binary: bool
    """Each item contributes 0 or 1 (a rate): the binomial error at the alternative level."""
    schedule: tuple[int, ...]
    k: float
    threshold: float
    span: float
    """The metric's natural range."""
    blocks: int = 1
    pool: int = 0
    """Items of the suite's shipped pool (0: unknown), to say whether more items would help."""
    suite: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schedule": list(self.schedule)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairedPlan:
        return cls(**{**d, "schedule": tuple(int(b) for b in d["schedule"])})


def paired_se(plan: PairedPlan, change: float, items: int | None = None) -> float:
    """The planned error of a block's paired change of size ``change`` (module docstring): continuous
    statistics keep their round-0 spread (sqrt 2 x the level's error), a 0/1 outcome takes the binomial
    error at the alternative level. ``items``: a block of another size (errors scale as 1 / sqrt(items))."""
    n = plan.items if items is None else items
    scale = math.sqrt(plan.items / n) if n > 0 else math.inf
    if not plan.binary:
        return math.sqrt(2.0) * plan.level_se * scale
    sign = -1.0 if plan.direction == "decrease" else 1.0
    p1 = min(max(plan.level + sign * change, 0.0), 1.0)
    return math.sqrt((plan.level_se * scale) ** 2 + p1 * (1 - p1) / max(n - 1, 1))


def _excess(plan: PairedPlan, rounds: int, power: float) -> tuple[float, int]:
    window = onset_window(plan.schedule, rounds)
    mu = detectable_excess(window, plan.k, plan.threshold, float(max(plan.items - 1, 1)), power)
    return max(mu, 0.0), len(window)


def _solve(plan: PairedPlan, mu: float, observed_se: float, items: int | None = None) -> tuple[float, float]:
    """(detectable change, its error) by fixed point; ``observed_se`` scales with the block too."""
    n = plan.items if items is None else items
    observed = observed_se * math.sqrt(plan.items / n) if n > 0 else math.inf
    change, se = plan.margin, 0.0
    for _ in range(60):
        se = max(paired_se(plan, change, items), observed)
        change = plan.margin + mu * se
    return change, se


def paired_detectable(plan: PairedPlan, observed_se: float = 0.0, rounds: int = DETECTION_ROUNDS,
                      power: float = 0.5) -> dict[str, Any]:
    """``{detectable, se, excess_in_se, rounds, margin, verdict, fix}``: the change flagged within ``rounds``
    rounds at even odds, with the larger of the planned and the ``observed_se`` error."""
    mu, n_rounds = _excess(plan, rounds, power)
    change, se = _solve(plan, mu, observed_se)
    v = verdict(change, plan.margin, plan.span)
    return {"detectable": change, "se": se, "excess_in_se": mu, "rounds": n_rounds, "power": power,
            "margin": plan.margin, "span": plan.span, "verdict": v, "fix": None if v == "watching" else items_fix(plan, mu, observed_se)}


def items_fix(plan: PairedPlan, mu: float, observed_se: float = 0.0) -> str:
    """What sample would make the stream watching: items per block (and in all) of its suite."""
    n = plan.items
    for _ in range(40):  # grow the block until 1.5 x margin is flagged (errors shrink as 1 / sqrt(n))
        if _solve(plan, mu, observed_se, n)[0] <= WATCH_FACTOR * plan.margin or n > 10**6:
            break
        n *= 2
    lo, hi = max(n // 2, plan.items), n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _solve(plan, mu, observed_se, mid)[0] <= WATCH_FACTOR * plan.margin else (mid, hi)
    total = hi * plan.blocks
    if plan.suite == "groups":
        return f"raise monitor.group_items to about {total} public texts per group ({hi} a round)"
    where = f"monitor.server_items.{plan.suite}" if plan.suite else "monitor.server_items"
    if plan.pool and total > plan.pool:
        return (f"needs about {total} public items ({hi} a round), more than the {plan.pool} the shipped "
                f"pool holds: not reachable with items alone")
    return f"raise {where} (and suite_sizes) to about {total} ({hi} a round over {plan.blocks} blocks)"
