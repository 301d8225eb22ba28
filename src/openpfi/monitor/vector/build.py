"""The report layout every client and the server agree on: each mode's slots, in mode order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from openpfi.errors import UserError
from openpfi.monitor.modes import MODE_LIST, SchemaContext
from openpfi.monitor.probes.items import ProbeSuite
from openpfi.monitor.vector.personal import personal_slots
from openpfi.monitor.vector.schema import ReportSchema


def check_groups(groups: Sequence[str]) -> None:
    if len(set(groups)) != len(groups) or any(not g or "." in g for g in groups):
        raise UserError(f"monitor groups {list(groups)!r}: names must be unique, non-empty and "
                        f"contain no '.'")


def build_schema(suites: Mapping[str, ProbeSuite], groups: Sequence[str] = (), bins: int = 10,
                 utility_bins: int = 10, utility_max_loss: float = 8.0,
                 ood_max_nll: float = 8.0, probe_before: bool = False, personal: bool = False) -> ReportSchema:
    """Slots for the given suites (missing suites contribute none) and public groups;
    ``probe_before`` (clients also probe the model they received): the ``own_budget`` slot
    ``adaptation_misalignment.degraded_general`` when there are out-of-domain texts; ``personal``
    (clients also probe their personal models): the model-level modes' slots once more, for that model
    (``vector/personal.py``)."""
    if bins < 1 or utility_bins < 1:
        raise UserError(f"monitor bins ({bins}) and utility_bins ({utility_bins}) must be >= 1")
    if not (math.isfinite(utility_max_loss) and utility_max_loss > 0 and ood_max_nll > 0):
        raise UserError(f"monitor utility_max_loss ({utility_max_loss}) and ood_max_nll "
                        f"({ood_max_nll}) must be positive")
    check_groups(groups)
    ctx = SchemaContext(suites, tuple(groups), bins, utility_bins, utility_max_loss, ood_max_nll, probe_before)
    slots = [s for mode in MODE_LIST for s in mode.slots(ctx)]
    if personal:
        slots += personal_slots(slots)
    probes = tuple(sorted((n, s.root_sha256) for n, s in suites.items()))
    return ReportSchema(tuple(slots), probes)
