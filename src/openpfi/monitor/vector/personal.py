"""The personal-model section of the report vector: with personalization on, a client also probes the
model it uses itself (its personal model), and reports the model-level modes' slots of that model too.

Those slots are the model-level modes' own, renamed ``<mode>.<rest>`` -> ``<mode>.personal.<rest>`` (families
too), so they sit in the same clipped report, summed and noised with the rest; no mode reads them by its own
names. The server derives them with the same estimators on the sub-vector, renamed back, and names the
streams ``<mode>.personal_<metric>`` (``StreamName`` scope ``personal``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from openpfi.monitor.modes import MODEL_MODES
from openpfi.monitor.types import MetricPoint, StreamName
from openpfi.monitor.vector.schema import ReportSchema, Slot

SECTION = "personal"


def personal_name(name: str) -> str:
    """``alignment_erosion.refusal_rate`` -> ``alignment_erosion.personal.refusal_rate``."""
    mode, _, rest = name.partition(".")
    return f"{mode}.{SECTION}.{rest}"


def is_personal(name: str) -> bool:
    return name.split(".", 2)[1:2] == [SECTION]


def base_name(name: str) -> str:
    """The inverse of :func:`personal_name`."""
    mode, _, rest = name.partition(".")
    return f"{mode}.{rest.removeprefix(SECTION + '.')}"


def personal_slots(slots: Sequence[Slot]) -> list[Slot]:
    """Copies of the model-level modes' slots, renamed into the personal section."""
    return [Slot(personal_name(s.name), s.lo, s.hi, s.scale, personal_name(s.family) if s.family else "", s.own_budget)
            for s in slots if s.name.partition(".")[0] in MODEL_MODES and not s.own_budget]


def personal_values(values: Mapping[str, float]) -> dict[str, float]:
    """A client's values of the model-level modes (of its personal model), renamed into the section."""
    return {personal_name(k): v for k, v in values.items() if k.partition(".")[0] in MODEL_MODES}


def section(schema: ReportSchema) -> tuple[ReportSchema, np.ndarray] | None:
    """(the personal slots as a schema of their own, base names; their positions in ``schema``), or None."""
    idx = [i for i, s in enumerate(schema.slots) if is_personal(s.name)]
    if not idx:
        return None
    slots = tuple(Slot(base_name(s.name), s.lo, s.hi, s.scale, base_name(s.family) if s.family else "")
                  for s in (schema.slots[i] for i in idx))
    return ReportSchema(slots, schema.probes), np.array(idx)


def personal_points(points: Mapping[str, MetricPoint]) -> dict[str, MetricPoint]:
    """Streams derived from the section, renamed to the personal scope (model-level modes only)."""
    return {str(StreamName.parse(k).scoped("personal")): p for k, p in points.items()
            if StreamName.parse(k).mode in MODEL_MODES}


def personal_stds(stds: Mapping[str, float]) -> dict[str, float]:
    """The same renaming for the streams' unclipped stds."""
    return {str(StreamName.parse(k).scoped("personal")): v for k, v in stds.items()
            if StreamName.parse(k).mode in MODEL_MODES}
