"""A client's per-objective figures of one round, as typed data.

The multi-objective client (client/align.py) reports, per objective m: the mean weight
lambda_m it stepped with over its local steps (FIRM's solved weights, scalarization's
fixed p), its mean DPO loss on m, how many pairs of m it holds, and, for FIRM, how often
the weight solver stopped at its iteration cap. Both engines carry ``ClientUpdate.scalars``
as flat floats (a Flower MetricRecord), so this module is the one place that writes those
keys (:meth:`ObjectiveFigures.to_scalars`) and reads them back
(:meth:`ObjectiveFigures.from_scalars`); the server never parses names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

OBJECTIVE_SCALARS = ("loss", "lambda", "pairs", "missing")
"""Per objective m, the scalars ``<name>_<m>`` these figures travel as."""
CAP_HITS = "solver_cap_hits"
"""The one scalar that is not per objective."""
_LOSS, _WEIGHT, _PAIRS, _MISSING = (f"{name}_" for name in OBJECTIVE_SCALARS)


@dataclass(frozen=True)
class ObjectiveFigures:
    """One client's per-objective training figures for a round."""

    pairs: dict[str, int]
    """Training pairs held per configured objective (0 = the client lacks it)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Mean lambda_m over the local steps, for the objectives trained together (empty for sft / dpo)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Mean DPO loss per objective trained."""
    solver_cap_hits: int = 0
    """FIRM steps whose weight solver stopped at its iteration cap (``algorithms.mgda.SimplexSolution``)."""

    def missing(self) -> list[str]:
        return [m for m, n in self.pairs.items() if n == 0]

    def to_scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m, n in self.pairs.items():
            out[_PAIRS + m] = float(n)
            out[_MISSING + m] = 0.0 if n else 1.0
        out.update({_WEIGHT + m: float(w) for m, w in self.weights.items()})
        out.update({_LOSS + m: float(v) for m, v in self.losses.items()})
        if self.solver_cap_hits:
            out[CAP_HITS] = float(self.solver_cap_hits)
        return out

    @classmethod
    def from_scalars(cls, scalars: Mapping[str, float], objectives: Sequence[str]) -> ObjectiveFigures:
        """The figures for ``objectives`` found in ``scalars`` (absent ones are left out)."""
        def pick(prefix: str) -> dict[str, float]:
            return {m: float(scalars[prefix + m]) for m in objectives if prefix + m in scalars}

        return cls({m: int(v) for m, v in pick(_PAIRS).items()}, pick(_WEIGHT), pick(_LOSS),
                   int(scalars.get(CAP_HITS, 0)))
