"""A client's report vector: each mode's values for its slots, validated against their bounds."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from openpfi.errors import UserError
from openpfi.monitor.modes import MODE_LIST, EncodeContext
from openpfi.monitor.probes.run import ProbeResults
from openpfi.monitor.vector.personal import personal_values
from openpfi.monitor.vector.schema import ReportSchema


def client_values(schema: ReportSchema, after: ProbeResults, before: ProbeResults | None,
                  utility_loss: float, group: str | None,
                  thresholds: Mapping[str, float] | None = None) -> dict[str, float]:
    """Slot name -> value for one client (each mode's ``encode``; ``monitor/modes``)."""
    ctx = EncodeContext(schema, after, before, utility_loss, group, dict(thresholds or {}))
    values: dict[str, float] = {}
    for mode in MODE_LIST:
        values |= mode.encode(ctx)
    return values


def encode_report(schema: ReportSchema, after: ProbeResults, before: ProbeResults | None,
                  utility_loss: float, group: str | None = None,
                  thresholds: Mapping[str, float] | None = None, personal: ProbeResults | None = None) -> np.ndarray:
    """The client's report vector (float64, ``len(schema)``), validated against its bounds.

    ``after``: probes of the model after local training; ``before``: of the model received at the
    start of the round (None: adaptation slots are 0 and ``measured`` is 0); ``utility_loss``:
    held-out loss; ``group``: public group or None; ``personal``: probes of the client's personal
    model, for a schema with the personal section (``vector/personal.py``).
    """
    probes = tuple(sorted((n, s.root_sha256) for n, s in after.suites.items()))
    if probes != schema.probes:
        raise UserError("probe results were computed on other probe suites than the report "
                        "schema; build the schema from the same suites (load_suites)")
    if before is not None and before.suites is not after.suites and any(
            n not in after.suites or s.sha256 != after.suites[n].sha256 for n, s in before.suites.items()):
        raise UserError("before- and after-training probes used different suites; "
                        "run both with the same suites (the before run may use fewer of them)")
    values = client_values(schema, after, before, utility_loss, group, thresholds)
    if personal is not None:
        values |= personal_values(client_values(schema, personal, None, utility_loss, group, thresholds))
    missing = [s.name for s in schema.slots if s.name not in values]
    if missing:
        raise UserError(f"report schema slot {missing[0]} has no value ({len(missing)} "
                        f"missing); rebuild the schema with build_schema(suites)")
    return schema.validate(np.array([values[s.name] for s in schema.slots]), "encoded report")
