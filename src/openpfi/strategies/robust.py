"""``federation.aggregator``: how the server combines the valid deltas of a round.

=================  ===============================================  =========================
aggregator         rule (algorithms/aggregate.py)                   valid updates needed
=================  ===============================================  =========================
``mean``           example-weighted mean (FedAvg)                    1
``median``         coordinate-wise median (Yin et al. 2018)          1
``trimmed_mean``   coordinate-wise mean without the floor(b n)       1
                   largest and smallest (b = trim_fraction)
``krum``           the update with the lowest Krum score             2f + 3
                   (Blanchard et al. 2017; f = byzantine_clients)
``multi_krum``     unweighted mean of the n - f best-scored          2f + 3
=================  ===============================================  =========================

Every rule works on deltas; the server optimizer (``federation.strategy``) then steps on the
result as it does on the mean, so FedAdam etc. run on the robust aggregate. The robust rules
ignore example counts (a Byzantine client could claim any count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openpfi.algorithms.aggregate import coordinate_median, krum, trimmed_mean, weighted_mean
from openpfi.algorithms.state import StateDict


@dataclass(frozen=True)
class RobustRule:
    name: str = "mean"
    trim_fraction: float = 0.1
    byzantine: int = 0

    @property
    def robust(self) -> bool:
        return self.name != "mean"

    def min_updates(self) -> int:
        """Valid updates a round needs for this rule."""
        return 2 * self.byzantine + 3 if self.name in ("krum", "multi_krum") else 1

    def combine(self, deltas: Sequence[StateDict], weights: Sequence[float]) -> StateDict:
        return _RULES[self.name](self, list(deltas), list(weights))


def _mean(rule: RobustRule, deltas: list[StateDict], weights: list[float]) -> StateDict:
    return weighted_mean(deltas, weights)


def _multi_krum(rule: RobustRule, deltas: list[StateDict], weights: list[float]) -> StateDict:
    return krum(deltas, rule.byzantine, multi=len(deltas) - rule.byzantine)


_RULES: dict[str, Callable[[RobustRule, list[StateDict], list[float]], StateDict]] = {
    "mean": _mean,
    "median": lambda rule, deltas, weights: coordinate_median(deltas),
    "trimmed_mean": lambda rule, deltas, weights: trimmed_mean(deltas, rule.trim_fraction),
    "krum": lambda rule, deltas, weights: krum(deltas, rule.byzantine, multi=1),
    "multi_krum": _multi_krum,
}
