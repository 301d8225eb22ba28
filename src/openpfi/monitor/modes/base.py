"""What a failure mode is to the monitor: one :class:`Mode` per module of this package.

A mode owns every place it appears in:

- ``slots(ctx)``: its coordinates of the client's report vector (``vector/schema.py``), from the
  public probe suites and settings;
- ``encode(ctx)``: a client's values for those coordinates from its own probe outcomes;
- ``derive(sums, ctx)``: the server's streams from the noisy sum of the reports
  (``vector/sums.py`` holds the estimators and their intervals);
- ``metrics``: each metric's bad direction, materiality margin and natural range, which suites a
  model-level stream rests on, whether the server tests it item-paired on the global model;
- ``model_extras`` (model-level modes): streams only a model the server holds can give (continuous
  statistics read from per-item probabilities), and ``items_behind``: how many public items a
  model-level stream averages;
- its title, layer, description and NIST AI RMF functions (the report).

Adding a seventh mode is one new module with a ``MODE`` and one line in ``modes/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from openpfi.monitor.probes.items import ProbeSuite
    from openpfi.monitor.probes.run import ProbeResults
    from openpfi.monitor.types import MetricPoint, StreamName
    from openpfi.monitor.vector.schema import ReportSchema, Slot
    from openpfi.monitor.vector.sums import Sums

Direction = Literal["increase", "decrease", "both"]
Paired = Literal["overall", "per_group", "no"]


@dataclass(frozen=True)
class Metric:
    """How the streams of one metric are judged."""

    direction: Direction
    """The bad change."""
    margin: float | None = None
    """Smallest material change, in the metric's units (a share of the round-0 value when ``relative``)."""
    margin_key: str = ""
    """The key of ``monitor.server_margins`` that overrides the margin ('' : the metric's name)."""
    relative: bool = False
    lo: float = 0.0
    hi: float = 1.0
    """The metric's natural range (a change larger than ``hi - lo`` cannot happen)."""
    scale_hi: bool = False
    """The range's top is the slot's scale instead of ``hi`` (a loss clipped at ``monitor.ood_max_nll`` or
    ``monitor.utility_max_loss``)."""
    change_of: str = ""
    """For a change stream (``*_change``): the level metric it is the change of."""
    suites: tuple[str, ...] = ()
    """The suites a model-level stream of this metric is computed from (the paired test's units)."""
    paired: Paired = "no"
    """Tested item-paired on the global model: the overall stream, or one stream per group."""
    binary: bool = False
    """Each item contributes a 0/1 outcome (a rate, an accuracy): the power analysis of the paired test
    uses the binomial variance at the alternative."""


@dataclass(frozen=True)
class SchemaContext:
    """The public things the report layout is built from."""

    suites: Mapping[str, ProbeSuite]
    groups: Sequence[str] = ()
    bins: int = 10
    utility_bins: int = 10
    utility_max_loss: float = 8.0
    ood_max_nll: float = 8.0
    probe_before: bool = False


@dataclass(frozen=True)
class EncodeContext:
    """One client's inputs to its report."""

    schema: ReportSchema
    after: ProbeResults
    before: ProbeResults | None
    utility_loss: float
    group: str | None
    thresholds: Mapping[str, float]


@dataclass(frozen=True)
class DeriveContext:
    """What the server derives against: the round-0 points (alignment) and the base model's values (ood)."""

    reference: Mapping[str, MetricPoint] = field(default_factory=dict)
    base_model: Mapping[str, float] = field(default_factory=dict)


def no_extras(res: ProbeResults) -> dict[str, float]:
    return {}


def one_item(name: StreamName, suites: Mapping[str, ProbeSuite]) -> int:
    return 1


@dataclass(frozen=True)
class Mode:
    """One silent-failure mode (module docstring)."""

    id: str
    title: str
    layer: str
    measures: str
    nist: tuple[str, ...]
    direction: Direction
    """The bad direction of its streams unless ``metrics`` says otherwise."""
    metrics: Mapping[str, Metric]
    slots: Callable[[SchemaContext], list[Slot]]
    encode: Callable[[EncodeContext], dict[str, float]]
    derive: Callable[[Sums, DeriveContext], None]
    model_level: bool = False
    """Its streams describe one model, so the server can score them on the global model."""
    model_extras: Callable[[ProbeResults], dict[str, float]] = no_extras
    items_behind: Callable[[StreamName, Mapping[str, ProbeSuite]], int] = one_item

    def metric(self, name: str) -> Metric | None:
        return self.metrics.get(name)

    def direction_of(self, metric: str) -> Direction:
        m = self.metrics.get(metric)
        return m.direction if m is not None else self.direction
