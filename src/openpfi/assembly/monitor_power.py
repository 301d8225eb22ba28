"""The power analysis of a run's monitor from its config alone: what each stream rests on (``PairedPlan``
for the paired tests of the global model, ``ClientPlan`` for the client-report streams), planned before
the first round. The same plans, with a run's observed errors, give the report's detectable changes and
verdicts (``monitor/reporting/power_section.py``); ``openpfi monitor plan`` prints them without training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from openpfi.assembly.monitor_detection import Tests, pool_sizes
from openpfi.assembly.monitor_plan import MonitorPlan
from openpfi.monitor.detection.client_power import ClientPlan
from openpfi.monitor.detection.cusum import interval_std
from openpfi.monitor.modes import metric_of
from openpfi.monitor.types import MetricPoint, StreamName, global_name
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.schema import ReportSchema
from openpfi.strategies.monitor_server import MonitorServerSettings


def _synthetic(schema: ReportSchema, n: int) -> np.ndarray:
    """The sum of ``n`` plausible reports: 0.5 in every slot, families spread evenly."""
    x = np.full(len(schema), 0.5)
    for idx in schema.families.values():
        x[idx] = 1.0 / idx.size
    return n * x


def _span(stream: str, plan: MonitorPlan) -> float:
    metric = metric_of(stream)
    if metric is None:
        return 1.0
    if not metric.scale_hi:
        return metric.hi - metric.lo
    top = plan.cfg.monitor.utility_max_loss if StreamName.parse(stream).mode == "fairness_collapse" else \
        plan.cfg.monitor.ood_max_nll
    return top - (metric.lo if metric.lo > -top else -top)


def _margin(stream: str, base: Mapping[str, float]) -> float | None:
    metric = metric_of(stream)
    if metric is None or metric.margin is None:
        return None
    if metric.relative:
        level = base.get(str(StreamName.parse(stream)))
        return metric.margin * abs(level) if level else None
    return metric.margin


def client_plans(plan: MonitorPlan, schema: ReportSchema, settings: MonitorServerSettings, tests: Tests,
                 base_model: Mapping[str, float]) -> dict[str, ClientPlan]:
    """Stream -> its ClientPlan at the run's clients per round and noise (a synthetic round's intervals with
    and without the DP noise give the two parts of its std)."""
    n = settings.n_expected
    exact = {"adaptation_misalignment.measured": float(n)} if settings.measured_exact else None
    ref = {f"alignment_erosion.{k}": MetricPoint(0.5, 0.4, 0.6) for k in ("refusal_rate", "over_refusal_rate")}
    s = _synthetic(schema, n)
    noisy_std: dict[str, float] = {}
    clean_std: dict[str, float] = {}
    noisy = derive_metrics(schema, s, n, settings.noise_std_sum, ref, base_model, minimum_clients=1, exact=exact,
                           own_noise_std=settings.own_noise_std_sum, stds=noisy_std)
    clean = derive_metrics(schema, s, n, 0.0, ref, base_model, minimum_clients=1, exact=exact, stds=clean_std)
    bank, cfg = tests.bank, plan.cfg
    out = {}
    for k, p in sorted(noisy.items()):  # unclipped stds where the estimator has one, else the interval's
        total = noisy_std.get(k, interval_std(p, 1e-9))
        samp = clean_std.get(k, interval_std(clean[k], 1e-9) if k in clean else 0.0)
        out[k] = ClientPlan(
            margin=_margin(k, base_model), direction=bank.direction(k), span=_span(k, plan), sampling_std=samp,
            dp_std=float(np.sqrt(max(total**2 - samp**2, 0.0))), clients=n, noise_multiplier=plan.noise_multiplier,
            detector=bank.detector, threshold=bank.threshold_for(k), drift_k=bank.drift_k,
            rounds=cfg.federation.rounds, delta=cfg.privacy.delta)
    return out


def power_plans(plan: MonitorPlan, schema: ReportSchema, settings: MonitorServerSettings, tests: Tests,
                setup: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's power plans as JSON: ``{"paired": {global stream: PairedPlan}, "clients": {stream: ClientPlan}}``."""
    sizes = pool_sizes()
    paired: dict[str, dict[str, Any]] = {}
    if tests.change_test is not None:
        paired |= {global_name(k): p.to_dict() for k, p in tests.change_test.power_plans(sizes).items()}
    if tests.group_test is not None and tests.group_test.streams:
        paired[global_name(tests.group_test.streams[0])] = tests.group_test.power_plan().to_dict()
    clients = {k: p.to_dict() for k, p in client_plans(plan, schema, settings, tests, setup["base_model"]).items()}
    return {"paired": paired, "clients": clients, "off": {k: p.to_dict() for k, p in tests.off.items()}}
