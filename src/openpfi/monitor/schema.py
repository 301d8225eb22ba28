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

Slots (names start with the mode, ``types.MODES``; ``<x>`` = category / bias type /
bin / group / domain):

- ``amplified_bias.bbq.ambig_count.<c>``, ``.disambig_count.<c>``: the client's ambiguous /
  disambiguated BBQ items of category c; ``.ambig_biased.<c>``, ``.ambig_unknown.<c>``:
  those answered with the biased / the unknown option; ``.disambig_correct.<c>``,
  ``.disambig_biased.<c>``, ``.disambig_non_unknown.<c>``: the same for disambiguated items
  (numerator and denominator of the biased share among non-unknown answers, Parrish et al.
  2022). All divided by the client's number of BBQ items.
- ``amplified_bias.crows.stereo_preferred.<t>``, ``.crows.count.<t>``: CrowS pairs of type
  t where the more stereotyping sentence is more likely, and all pairs of type t, both as
  fractions of the client's CrowS pairs (Nangia et al. 2020).
- ``confidence_miscalibration.bin_count.<b>``, ``.bin_confidence.<b>``, ``.bin_correct.<b>``:
  per confidence bin [b/B, (b+1)/B): item count, confidence sum and correct count on
  multiple-choice probes (BBQ disambiguated + capability), divided by their number
  (Guo et al. 2017).
- ``fairness_collapse.utility_hist.<b>``: one-hot bin of the client's held-out loss on
  [0, utility_max_loss] (last bin open-ended); ``.utility_loss``: clipped loss / max;
  ``.group_count.<g>`` and ``.group_loss.<g>``: one-hot of the client's public group,
  times 1 and times the clipped loss / max.
- ``adaptation_misalignment.measured`` (1 if the model received at the start of the round
  was probed too), ``.capability_before/.capability_after``, ``.refusal_before/
  .refusal_after`` (multiplied by ``measured``), ``.dropped_capability``,
  ``.dropped_safety`` (indicators of a drop beyond the configured threshold);
  ``.degraded_general``: 1 if the mean per-token NLL of any of the client's out-of-domain probe
  texts rose within the round by more than the configured share (``own_budget``, below).
- ``out_of_domain_degradation.count.<d>``: the client's items of domain d; ``.nll.<d>``:
  the sum over them of the mean per-token NLL / ood_max_nll (each clipped to 1); both
  divided by the client's number of out-of-domain items. ``.capability_accuracy``.
- ``alignment_erosion.refusal_rate`` (harmful prompts), ``.over_refusal_rate`` (benign).

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.probes import BBQItem, CrowsItem, ProbeSuite, TextItem
from openpfi.monitor.types import MODES

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


def _check_groups(groups: Sequence[str]) -> None:
    if len(set(groups)) != len(groups) or any(not g or "." in g for g in groups):
        raise UserError(f"monitor groups {list(groups)!r}: names must be unique, non-empty and "
                        f"contain no '.'")


def build_schema(suites: Mapping[str, ProbeSuite], groups: Sequence[str] = (), bins: int = 10,
                 utility_bins: int = 10, utility_max_loss: float = 8.0,
                 ood_max_nll: float = 8.0, probe_before: bool = False) -> ReportSchema:
    """Slots for the given suites (missing suites contribute none) and public groups;
    ``probe_before`` (clients also probe the model they received): the ``own_budget`` slot
    ``adaptation_misalignment.degraded_general`` when there are out-of-domain texts."""
    if bins < 1 or utility_bins < 1:
        raise UserError(f"monitor bins ({bins}) and utility_bins ({utility_bins}) must be >= 1")
    if not (math.isfinite(utility_max_loss) and utility_max_loss > 0 and ood_max_nll > 0):
        raise UserError(f"monitor utility_max_loss ({utility_max_loss}) and ood_max_nll "
                        f"({ood_max_nll}) must be positive")
    _check_groups(groups)
    slots: list[Slot] = []

    def add(name: str, scale: float = 1.0, family: str = "", own_budget: bool = False) -> None:
        slots.append(Slot(name, 0.0, 1.0, scale, family, own_budget))

    if "bbq" in suites:
        bbq: list[BBQItem] = list(suites["bbq"].items)
        p = "amplified_bias.bbq."
        for c in sorted({i.category for i in bbq if i.condition == "ambig"}):
            add(f"{p}ambig_count.{c}", family=p + "count")
            for k in ("ambig_biased", "ambig_unknown"):
                add(f"{p}{k}.{c}", family=p + "ambig_answer")
        for c in sorted({i.category for i in bbq if i.condition == "disambig"}):
            add(f"{p}disambig_count.{c}", family=p + "count")
            for k in ("disambig_correct", "disambig_biased", "disambig_non_unknown"):
                add(f"{p}{k}.{c}", family=p + k)
    if "crows" in suites:
        crows: list[CrowsItem] = list(suites["crows"].items)
        for t in sorted({i.bias_type for i in crows}):
            add(f"amplified_bias.crows.stereo_preferred.{t}", family="amplified_bias.crows.stereo_preferred")
            add(f"amplified_bias.crows.count.{t}", family="amplified_bias.crows.count")
    has_mc = "capability" in suites or any(
        i.condition == "disambig" for i in (suites["bbq"].items if "bbq" in suites else ()))
    if has_mc:
        for k in ("bin_count", "bin_confidence", "bin_correct"):
            for b in range(bins):
                add(f"confidence_miscalibration.{k}.{b}", family=f"confidence_miscalibration.{k}")
    for b in range(utility_bins):
        add(f"fairness_collapse.utility_hist.{b}", family="fairness_collapse.utility_hist")
    add("fairness_collapse.utility_loss", utility_max_loss)
    for g in groups:
        add(f"fairness_collapse.group_count.{g}", family="fairness_collapse.group_count")
        add(f"fairness_collapse.group_loss.{g}", utility_max_loss, family="fairness_collapse.group_loss")
    if "capability" in suites or "harmful" in suites:
        add("adaptation_misalignment.measured")
    if "capability" in suites:
        for k in ("capability_before", "capability_after", "dropped_capability"):
            add(f"adaptation_misalignment.{k}")
    if "harmful" in suites:
        for k in ("refusal_before", "refusal_after", "dropped_safety"):
            add(f"adaptation_misalignment.{k}")
    if probe_before and "ood" in suites:
        add("adaptation_misalignment.degraded_general", own_budget=True)
    if "ood" in suites:
        ood: list[TextItem] = list(suites["ood"].items)
        for d in sorted({i.domain for i in ood}):
            add(f"out_of_domain_degradation.count.{d}", family="out_of_domain_degradation.count")
            add(f"out_of_domain_degradation.nll.{d}", ood_max_nll, family="out_of_domain_degradation.nll")
    if "capability" in suites:
        add("out_of_domain_degradation.capability_accuracy")
    if "harmful" in suites:
        add("alignment_erosion.refusal_rate")
    if "benign" in suites:
        add("alignment_erosion.over_refusal_rate")
    probes = tuple(sorted((n, s.root_sha256) for n, s in suites.items()))
    return ReportSchema(tuple(slots), probes)
