"""The six silent-failure modes, one module each (``base.py`` says what a mode owns).

==========================  ======  ===========================================================
mode                        layer   module
==========================  ======  ===========================================================
amplified_bias              data    ``amplified_bias.py``: BBQ, CrowS-Pairs (+ continuous lean)
confidence_miscalibration   data    ``confidence_miscalibration.py``: ECE on multiple choice
fairness_collapse           model   ``fairness_collapse.py``: DP histogram of client utility
adaptation_misalignment     model   ``adaptation_misalignment.py``: change within a local round
out_of_domain_degradation   system  ``out_of_domain_degradation.py``: NLL on public texts
alignment_erosion           system  ``alignment_erosion.py``: refusal / over-refusal
==========================  ======  ===========================================================

``MODE_LIST`` fixes their order: the order of the report vector's slots, of the streams and of the
report's panels.
"""

from __future__ import annotations

from openpfi.monitor.modes import (
    adaptation_misalignment,
    alignment_erosion,
    amplified_bias,
    confidence_miscalibration,
    fairness_collapse,
    out_of_domain_degradation,
)
from openpfi.monitor.modes.base import DeriveContext, Direction, EncodeContext, Metric, Mode, SchemaContext
from openpfi.monitor.types import StreamName

MODE_LIST: tuple[Mode, ...] = (
    amplified_bias.MODE,
    confidence_miscalibration.MODE,
    fairness_collapse.MODE,
    adaptation_misalignment.MODE,
    out_of_domain_degradation.MODE,
    alignment_erosion.MODE,
)
MODES: tuple[str, ...] = tuple(m.id for m in MODE_LIST)
BY_ID: dict[str, Mode] = {m.id: m for m in MODE_LIST}
MODEL_MODES: tuple[str, ...] = tuple(m.id for m in MODE_LIST if m.model_level)
"""Modes whose streams describe one model (so the server can score them on a model it holds)."""

__all__ = ["BY_ID", "MODES", "MODEL_MODES", "MODE_LIST", "DeriveContext", "Direction", "EncodeContext", "Metric",
           "Mode", "SchemaContext", "default_margins", "direction", "directions", "metric_of"]


def _name(stream: StreamName | str) -> StreamName:
    return stream if isinstance(stream, StreamName) else StreamName.parse(stream)


def metric_of(stream: StreamName | str) -> Metric | None:
    """The :class:`Metric` of a stream (None for a mode or metric no module declares)."""
    name = _name(stream)
    mode = BY_ID.get(name.mode)
    return mode.metric(name.metric) if mode is not None else None


def direction(stream: StreamName | str) -> Direction:
    """The bad direction of a stream: its metric's, else its mode's, else ``both``."""
    name = _name(stream)
    mode = BY_ID.get(name.mode)
    return mode.direction_of(name.metric) if mode is not None else "both"


def directions() -> dict[str, str]:
    """The table a detector bank keeps (and writes into the report): mode -> its default direction,
    ``<mode>.<metric>`` -> a metric's own where it differs."""
    out: dict[str, str] = {m.id: m.direction for m in MODE_LIST}
    for m in MODE_LIST:
        out |= {f"{m.id}.{k}": x.direction for k, x in m.metrics.items() if x.direction != m.direction}
    return out


def default_margins() -> dict[str, float]:
    """``monitor.server_margins`` key -> default margin of every metric of a model-level mode (those the
    server can score on the global model)."""
    return {(x.margin_key or k): x.margin for m in MODE_LIST if m.model_level for k, x in m.metrics.items()
            if x.margin is not None}
