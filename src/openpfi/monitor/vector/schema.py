"""The fixed-length MonitorReport vector: which slot means what, and its bounds.

A client's report is a vector x in R^d with one bounded value per slot, lo_j <= x_j <= hi_j
and hi_j - lo_j <= 1 (rates, one-hot histogram bins, counts and sums divided by the client's
own number of probe items in the suite). Slots of one *family* are non-negative and sum to
at most 1 (a one-hot histogram; per-category counts as shares of the client's items), so a
family adds at most 1 to ||x||_2^2 and

    ||x||_2 <= l2_bound = sqrt(#families + sum_{j not in a family} max(lo_j^2, hi_j^2)),

the L2 sensitivity the distributed Gaussian mechanism needs (Dwork & Roth 2014, Sec. 3.5);
about 5 for the default suites instead of sqrt(d) ~ 12. The server only ever sees the noisy
sum over clients and derives every figure from it (``derive.py``).

Counts are shares of the client's items rather than per-category rates so that reports
stay summable when each client scores only a small random sample of a suite (missing
categories are zeros, not undefined rates): the server estimates a category's rate as the
ratio of two sums, which is also invariant to L2 clipping of a report.

Each mode lays out its own slots, named ``<mode>.<...>`` (``monitor/modes``, ``slots``), in the
order of ``modes.MODE_LIST``; ``vector/build.py`` puts them together.

``Slot.scale`` converts a slot value to natural units (nats for losses); it is 1 for
rates and counts.

An ``own_budget`` slot lies outside the L2 clip: a 0/1 indicator released with its own share of
the privacy budget (``privacy.adaptation_share``, ``privacy.split_noise``). A count over n
clients has sensitivity 1 on its own; inside a report of L2 norm C ~ 3-5 it would carry C times
more noise. ``l2_bound`` covers the clipped slots only, ``own_bound`` the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from openpfi.errors import UserError

_TOL = 1e-9


@dataclass(frozen=True)
class Slot:
    """One bounded coordinate of the report; natural value = slot value * ``scale``."""

    name: str
    lo: float
    hi: float
    scale: float = 1.0
    family: str = ""
    """Slots sharing a non-empty family are >= 0 and sum to at most 1 (see ``l2_bound``)."""
    own_budget: bool = False
    """Outside the L2 clip, with its own noise (module docstring); never in a family."""


@dataclass(frozen=True)
class ReportSchema:
    """Ordered slots plus the probe suites (name, sha256) the report is computed on."""

    slots: tuple[Slot, ...]
    probes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        from openpfi.monitor.modes import MODES  # the modes lay out slots: imported when a schema is made

        names = [s.name for s in self.slots]
        if len(set(names)) != len(names):
            raise UserError("report schema: duplicate slot names; build it with build_schema")
        for s in self.slots:
            if s.name.split(".", 1)[0] not in MODES or not 0 < s.hi - s.lo <= 1:
                raise UserError(f"report schema: slot {s.name} needs a mode prefix and "
                                f"0 < hi - lo <= 1")
            if s.family and not 0 <= s.lo < s.hi <= 1:
                raise UserError(f"report schema: slot {s.name} of family {s.family} must lie in [0, 1]")
            if s.own_budget and s.family:
                raise UserError(f"report schema: slot {s.name} has its own budget and cannot be in a family")

    def __len__(self) -> int:
        return len(self.slots)

    @cached_property
    def index(self) -> dict[str, int]:
        """Slot name -> position in the vector."""
        return {s.name: i for i, s in enumerate(self.slots)}

    @cached_property
    def lo(self) -> np.ndarray:
        return np.array([s.lo for s in self.slots], dtype=np.float64)

    @cached_property
    def hi(self) -> np.ndarray:
        return np.array([s.hi for s in self.slots], dtype=np.float64)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of slots and probe hashes (for the audit log)."""
        blob = json.dumps({"slots": [asdict(s) for s in self.slots], "probes": self.probes},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @cached_property
    def families(self) -> dict[str, np.ndarray]:
        """Family name -> positions of its slots."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.slots):
            if s.family:
                out.setdefault(s.family, []).append(i)
        return {k: np.array(v) for k, v in out.items()}

    @cached_property
    def clip_mask(self) -> np.ndarray:
        """True for the slots inside the L2 clip (all but the ``own_budget`` ones)."""
        return np.array([not s.own_budget for s in self.slots], dtype=bool)

    @property
    def l2_bound(self) -> float:
        """max ||x||_2 over the clipped slots of valid reports:
        sqrt(#families + sum_{j clipped, not in a family} max(lo_j^2, hi_j^2)).

        Within a family of non-negative slots summing to at most 1, sum_j x_j^2 <= (sum_j x_j)^2 <= 1.
        """
        single = np.array([not s.family for s in self.slots], dtype=bool) & self.clip_mask
        rest = float(np.maximum(self.lo**2, self.hi**2)[single].sum())
        return float(np.sqrt(len(self.families) + rest))

    def slot_noise(self, sigma: float, own_sigma: float) -> np.ndarray:
        """Per slot, the noise std: ``sigma`` inside the clip, ``own_sigma`` on the own-budget slots."""
        return np.where(self.clip_mask, sigma, own_sigma)

    @property
    def own_bound(self) -> float:
        """max ||x||_2 over the ``own_budget`` slots (0 when there are none): their sensitivity."""
        own = ~self.clip_mask
        return float(np.sqrt(np.maximum(self.lo**2, self.hi**2)[own].sum()))

    def keys(self, prefix: str) -> list[str]:
        """Suffixes of the slots named ``<prefix>.<suffix>``, in schema order."""
        p = prefix + "."
        return [s.name[len(p):] for s in self.slots if s.name.startswith(p)]

    def check_length(self, vec: np.ndarray, what: str = "monitor report") -> np.ndarray:
        """A float64 1-D copy of ``vec``; UserError unless it has ``len(self)`` finite values."""
        arr = np.asarray(vec, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] != len(self):
            raise UserError(f"{what}: length {arr.size} (shape {arr.shape}) does not match the "
                            f"report schema's {len(self)} slots (schema {self.sha256[:12]}); "
                            f"client and server must use the same probe config")
        if not np.all(np.isfinite(arr)):
            raise UserError(f"{what}: contains NaN or infinite values; reject this report")
        return arr

    def validate(self, vec: np.ndarray, what: str = "client report") -> np.ndarray:
        """``check_length`` plus every value within its slot's [lo, hi]."""
        arr = self.check_length(vec, what)
        bad = np.flatnonzero((arr < self.lo - _TOL) | (arr > self.hi + _TOL))
        if bad.size:
            j = int(bad[0])
            s = self.slots[j]
            raise UserError(f"{what}: slot {s.name} = {arr[j]:.6g} is outside [{s.lo}, {s.hi}] "
                            f"({bad.size} slots out of bounds); reject this report")
        for fam, idx in self.families.items():
            total = float(arr[idx].sum())
            if total > 1 + 1e-6:
                raise UserError(f"{what}: the slots of family {fam} sum to {total:.6g} > 1; "
                                f"reject this report")
        return arr

