"""Every stream's detectable change next to its margin, and each mode's verdict, for the report.

The plans come from the run's start (``assembly/monitor_power.py``: ``{"paired": ..., "clients": ...}``);
the run's own observations sharpen them: a paired stream takes the larger of its planned error and the
median jackknife error it had, a client stream the median std of its points after the first once it
has at least ``MIN_OBSERVED`` of them (fewer noisy intervals would swing a verdict by chance: each
client report carries fresh DP noise, so below that the planned std stands).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from openpfi.monitor.detection.client_power import ClientPlan, client_detectable
from openpfi.monitor.detection.cusum import interval_std
from openpfi.monitor.detection.paired_power import PairedPlan, paired_detectable
from openpfi.monitor.detection.verdicts import mode_verdict, verdict
from openpfi.monitor.modes import metric_of
from openpfi.monitor.types import MetricPoint

MIN_OBSERVED = 3
"""Points after the first that a client stream needs before its observed std replaces the planned one."""


def _observed_std(points: Sequence[Mapping[str, Any]]) -> float | None:
    stds = [interval_std(MetricPoint(p["value"], p["lo"], p["hi"]), 1e-9) for p in points
            if p.get("value") is not None and p.get("lo") is not None and p.get("hi") is not None]
    return statistics.median(stds[1:]) if len(stds) > MIN_OBSERVED else None


def _observed_se(name: str, rounds: Sequence[Mapping[str, Any]]) -> float:
    ses = [e["se"] for r in rounds if int(r["round"]) >= 1
           for k, e in r.get("paired_change", {}).items() if k == name and e.get("se") is not None]
    return statistics.median(ses) if ses else 0.0


def stream_power(name: str, points: Sequence[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]],
                 plans: Mapping[str, Any], shift: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """``{stream, kind, detectable, margin, verdict, fix, ...}`` of one stream. Without a plan (a report
    built without the run's plans), a change-detector stream's observed ``shift``
    (``power.stream_detectability``) against its metric's margin; None when there is neither."""
    paired = (plans.get("paired") or {}).get(name)
    if paired is not None:
        return {"stream": name, "kind": "paired",
                **paired_detectable(PairedPlan.from_dict(paired), _observed_se(name, rounds))}
    client = (plans.get("clients") or {}).get(name)
    if client is not None:
        return {"stream": name, "kind": "clients", **client_detectable(ClientPlan.from_dict(client), _observed_std(points))}
    metric = metric_of(name)
    if shift is None or metric is None:
        return None
    d = shift["shift"]
    return {"stream": name, "kind": "clients", "detectable": d, "margin": metric.margin,
            "verdict": verdict(d, metric.margin, metric.hi - metric.lo if not metric.scale_hi else math.inf),
            "fix": None}


def switched_off(plans: Mapping[str, Any], off: Sequence[str]) -> list[dict[str, Any]]:
    """The power entries of the paired streams switched off at the start (blind at this size)."""
    return [{"stream": k, "kind": "paired", **paired_detectable(PairedPlan.from_dict(plans["off"][k]))}
            for k in off if k in (plans.get("off") or {})]


def mode_power(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A mode's verdict from its streams' power entries (``verdicts.mode_verdict``)."""
    return mode_verdict(entries)


def planned_power(plans: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Mode -> its verdict (``mode_verdict``) and its streams' power entries, from the plans alone (a config
    before any round: ``openpfi monitor plan``). The same functions as the report, without observed errors."""
    from openpfi.monitor.modes import MODES
    from openpfi.monitor.types import StreamName

    entries = [e for e in (stream_power(k, [], [], plans) for k in [*plans.get("paired", {}), *plans.get("clients", {})])
               if e is not None]
    entries += switched_off(plans, list(plans.get("off") or {}))
    out = {}
    for mode in MODES:
        mine = [e for e in entries if StreamName.parse(e["stream"]).mode == mode]
        out[mode] = {**mode_power(mine), "streams": mine}
    return out
