"""Server-side evaluation of the global or base model on the public probe suites.

The probes are public, so the server may run them on models it holds (the base model and
the aggregated global model; never a client's personalized model). To make the figures
comparable with ``derive_metrics``, the server's model is treated as one noiseless client:
its results are encoded with the same ``encode_report`` and derived with the same
``derive_metrics`` (n = 1, sigma = 0). Streams that describe clients rather than a model
(``fairness_collapse``: client utility; ``adaptation_misalignment``: within-round change)
are left out; the model-level modes add the streams only a model the server holds can give
(``Mode.model_extras``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from openpfi.monitor.modes import BY_ID, MODE_LIST, MODEL_MODES, metric_of
from openpfi.monitor.probes.items import ProbeSuite
from openpfi.monitor.probes.run import ProbeResults, run_probes
from openpfi.monitor.types import MetricPoint, Scorer, StreamName
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.encode import encode_report
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.monitor.vector.sums import Z95, sampling_var


def evaluate_public(scorer: Scorer, suites: Mapping[str, ProbeSuite], *, batch: int = 32,
                    ood_max_nll: float = 8.0) -> dict[str, float]:
    """Stream name -> value of ``scorer``'s model on ``suites`` (e.g. the ``base_model``
    argument of ``derive_metrics``). ``ood_max_nll`` must match the clients' schema."""
    return values_of(run_probes(scorer, suites, batch=batch), ood_max_nll=ood_max_nll)


def values_of(res: ProbeResults, *, ood_max_nll: float = 8.0) -> dict[str, float]:
    """:func:`evaluate_public` of per-item outcomes already scored (on ``res.suites``)."""
    return model_values(res, build_schema(res.suites, groups=(), ood_max_nll=ood_max_nll))


def model_values(res: ProbeResults, schema: ReportSchema) -> dict[str, float]:
    """Stream name -> value of one model's per-item outcomes ``res`` (suites of ``schema`` or
    samples of them), derived as for one noiseless client, plus each model-level mode's extras."""
    vec = encode_report(schema, res, None, 0.0, None)
    points = derive_metrics(schema, vec, 1, 0.0, minimum_clients=1)
    out = {k: p.value for k, p in points.items() if StreamName.parse(k).mode in MODEL_MODES}
    for mode in MODE_LIST:
        if mode.model_level:
            out |= mode.model_extras(res)
    return out


def items_behind(stream: str, suites: Mapping[str, ProbeSuite]) -> int:
    """How many probe items a model-level stream averages over (for its sampling interval)."""
    name = StreamName.parse(stream)
    mode = BY_ID.get(name.mode)
    return mode.items_behind(name, suites) if mode is not None else 1


def public_points(scorer: Scorer, suites: Mapping[str, ProbeSuite], *, batch: int = 256,
                  ood_max_nll: float = 8.0, base_model: Mapping[str, float] | None = None,
                  reference: Mapping[str, MetricPoint] | None = None) -> dict[str, MetricPoint]:
    """MetricPoints of ``scorer``'s model on public ``suites``, with item-sampling intervals.

    The model is one known model (no clients, no DP noise), so the only uncertainty is
    which probe items were drawn: a stream averaging m items of values in [lo, hi] gets
    value +- 1.96 sqrt(``sums.sampling_var``(value, lo, hi, m)): the Bhatia-Davis bound at
    the Agresti-Coull adjusted mean, which keeps a rate of 0 or 1 from getting a zero-width
    interval.
    Changes against ``base_model`` (exact) keep the level's interval; changes against
    ``reference`` points add the reference's variance.
    """
    return points_of(run_probes(scorer, suites, batch=batch), ood_max_nll=ood_max_nll, base_model=base_model,
                     reference=reference)


def points_of(res: ProbeResults, *, ood_max_nll: float = 8.0, base_model: Mapping[str, float] | None = None,
              reference: Mapping[str, MetricPoint] | None = None) -> dict[str, MetricPoint]:
    """:func:`public_points` of per-item outcomes already scored (``res.suites``)."""
    suites = res.suites
    schema = build_schema(suites, groups=(), ood_max_nll=ood_max_nll)
    vec = encode_report(schema, res, None, 0.0, None)
    raw = derive_metrics(schema, vec, 1, 0.0, reference, base_model, minimum_clients=1)
    out: dict[str, MetricPoint] = {}
    half: dict[str, float] = {}
    names = {k: StreamName.parse(k) for k in raw}
    metrics = {k: metric_of(n) for k, n in names.items()}
    def is_change(key: str) -> bool:
        m = metrics[key]
        return m is not None and bool(m.change_of)

    for key in sorted(raw, key=is_change):  # levels first
        name, metric = names[key], metrics[key]
        if name.mode not in MODEL_MODES:
            continue
        v = raw[key].value
        if metric is not None and metric.change_of:
            level = str(StreamName(name.mode, metric.change_of, name.group))
            h = half.get(level, 0.0)
            ref = (reference or {}).get(level)
            if ref is not None:
                h = math.hypot(h, (ref.hi - ref.lo) / 2)
            mx = ood_max_nll if metric.scale_hi else 1.0
            out[key] = MetricPoint(v, max(v - h, -mx), min(v + h, mx), 1)
            continue
        lo = metric.lo if metric is not None else 0.0
        hi = ood_max_nll if metric is not None and metric.scale_hi else (metric.hi if metric is not None else 1.0)
        h = Z95 * math.sqrt(sampling_var(v, lo, hi, max(items_behind(key, suites), 1)))
        half[key] = h
        out[key] = MetricPoint(v, max(v - h, lo), min(v + h, hi), 1)
    return out
