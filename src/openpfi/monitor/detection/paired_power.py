"""The power of a paired test of the global model (``global_change.py``, ``group_gap.py``).

A bad-direction change ``delta`` is flagged at even odds within ``DETECTION_ROUNDS`` rounds when the
CUSUM over those rounds' blocks passes its threshold half the time: when each round's excess beyond the
margin is ``mu*`` standard errors (``sequential.detectable_excess`` over the worst onset's blocks), i.e.
``delta = margin + mu* se(delta)``. The error of a block's paired change is planned from round 0
(``paired_se``) as the spread of the per-item changes over the block::

    sd_d(delta)^2 = (CHURN * sd_0)^2 + (SPREAD * delta)^2        (a 0/1 outcome: + delta (1 - delta))

``sd_0`` the items' spread at round 0: items move a little even where the metric does not (churn), and
a change of size delta moves items unevenly. Both constants were measured on the bundled SmolLM2-135M
between the base model and the safety-tuned adapter of the silent benchmark, on up to 480 public items
per suite (``python benchmarks/silent/item_spread.py``): on the metrics the adapter did not target the
per-item change spread 0.08-0.36 x sd_0 for continuous statistics (0.32-0.67 for 0/1 outcomes), and the
changes it made (refusal +0.43, over-refusal +0.25) spread 0.56 and 1.0 x their size. A run's report
takes the larger of the planned error and the error it observed.

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


CHURN = 0.5
"""Spread of the per-item changes where the metric does not move, as a share of the round-0 spread."""
SPREAD = 1.0
"""Spread of the per-item changes a change makes, as a multiple of its size."""


def paired_se(plan: PairedPlan, change: float, items: int | None = None) -> float:
    """The planned error of a block's paired change of size ``change`` (module docstring); ``items``: a
    block of another size (``level_se`` is the round-0 level's error on ``plan.items`` items)."""
    n = plan.items if items is None else items
    if n <= 1:
        return math.inf
    sd0 = plan.level_se * math.sqrt(plan.items)
    c = min(max(change, 0.0), 1.0)
    moved = c * (1 - c) if plan.binary else (SPREAD * change) ** 2
    return math.sqrt(((CHURN * sd0) ** 2 + moved) / n)


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
