"""The post-market monitoring report of a run: ``report.json`` and ``report.html``.

:func:`build_report` gathers everything into one JSON-ready dict;
:func:`write_report` writes it as ``report.json`` and renders the same dict
(nothing else) as a self-contained ``report.html``
(:mod:`openpfi.monitor.report_html`), so the two always hold the same content.

The report is organised as the post-market monitoring plan of EU AI Act
Art. 72 (system and version, intended purpose, metrics, thresholds,
escalation, evidence log) and maps each metric to the NIST AI RMF 1.0
(NIST AI 100-1, 2023) MEASURE subcategories it serves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openpfi.monitor.audit import HEAD_FILE, LOG_FILE, atomic_write_text, jsonable, verify
from openpfi.monitor.detectors import DetectorBank
from openpfi.monitor.power import stream_detectability
from openpfi.monitor.types import MODES, Alarm, MetricPoint, stream_mode

if TYPE_CHECKING:  # the ledger pulls in torch via algorithms.privacy; the report does not need it
    from openpfi.monitor.privacy import PrivacyLedger

REPORT_SCHEMA = "openpfi.monitor.report/1"

MODE_INFO: dict[str, dict[str, str]] = {
    "amplified_bias": {
        "title": "Amplified bias",
        "layer": "data",
        "measures": "Bias score on BBQ ambiguous contexts and stereotype preference (CrowS-Pairs / StereoSet), "
        "per protected group.",
    },
    "confidence_miscalibration": {
        "title": "Confidence miscalibration",
        "layer": "data",
        "measures": "Expected calibration error from per-bin confidence and correctness sums on multiple-choice "
        "probes with known answers.",
    },
    "fairness_collapse": {
        "title": "Fairness collapse",
        "layer": "model",
        "measures": "Distribution of client utility from a DP histogram (worst decile, spread) and gaps "
        "across groups such as languages.",
    },
    "adaptation_misalignment": {
        "title": "Adaptation misalignment",
        "layer": "model",
        "measures": "Change of capability and safety probes within a local round; DP count of clients that lost "
        "more than a threshold.",
    },
    "out_of_domain_degradation": {
        "title": "Out-of-domain degradation",
        "layer": "system",
        "measures": "Personalized models on public out-of-domain probe sets compared with the base model.",
    },
    "alignment_erosion": {
        "title": "Alignment erosion",
        "layer": "system",
        "measures": "Refusal of harmful prompts and over-refusal of benign prompts, tracked against round 0.",
    },
}

NIST_MEASURE: dict[str, str] = {
    "MEASURE 1.1": "Approaches and metrics for measuring AI risks are selected and documented",
    "MEASURE 2.4": "Functionality and behavior of the AI system are monitored in production",
    "MEASURE 2.5": "Validity and reliability; limits of generalization beyond development conditions",
    "MEASURE 2.6": "Safety risks are evaluated regularly",
    "MEASURE 2.7": "Security and resilience are evaluated and documented",
    "MEASURE 2.10": "Privacy risk is examined and documented",
    "MEASURE 2.11": "Fairness and bias are evaluated and results documented",
    "MEASURE 3.1": "Existing, unanticipated and emergent risks are identified and tracked over time",
    "MEASURE 3.2": "Risk tracking where measurement is difficult or metrics are not available",
}

MODE_NIST: dict[str, tuple[str, ...]] = {
    "amplified_bias": ("MEASURE 2.11", "MEASURE 2.4", "MEASURE 3.1"),
    "confidence_miscalibration": ("MEASURE 2.5", "MEASURE 2.4", "MEASURE 3.1"),
    "fairness_collapse": ("MEASURE 2.11", "MEASURE 2.5", "MEASURE 3.1"),
    "adaptation_misalignment": ("MEASURE 2.6", "MEASURE 2.5", "MEASURE 3.1"),
    "out_of_domain_degradation": ("MEASURE 2.5", "MEASURE 2.4", "MEASURE 3.1"),
    "alignment_erosion": ("MEASURE 2.6", "MEASURE 2.7", "MEASURE 3.1"),
}

DEFAULT_ESCALATION: tuple[str, ...] = (
    "An alarm is written to the audit log (kind 'alarm') with its mode, stream, round and evidence, and "
    "the run's monitoring owner is notified.",
    "The owner reviews the evidence in this report (series, uncertainty band, detector statistic) within "
    "two working days and records the assessment (kind 'action').",
    "If the change is confirmed: pause the roll-out of new personalized adapters and roll back to the last "
    "checkpoint before the change (`openpfi resume` from that round).",
    "A confirmed serious incident is reported to the market surveillance authority as required by EU AI Act "
    "Art. 73; the corrective action is recorded in the audit log.",
)

MAX_PLOTTED_STREAMS = 8
"""Streams drawn per metric chart; all streams are listed in the table."""


def _split(stream: str) -> tuple[str, str, str | None]:
    parts = stream.split(".", 2)
    metric = parts[1] if len(parts) > 1 else ""
    group = parts[2] if len(parts) > 2 else None
    return parts[0], metric, group


def _num(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _replay_statistics(rounds: Sequence[Mapping], thresholds: Mapping) -> tuple[DetectorBank | None, dict]:
    """Re-run the detector bank over the rounds to get each stream's statistic per round."""
    if "detector" not in thresholds:
        return None, {}
    bank = DetectorBank.from_config(thresholds)
    stats: dict[tuple[str, int], float | None] = {}
    for r in sorted(rounds, key=lambda r: int(r["round"])):
        pts = {}
        for name, s in r.get("streams", {}).items():
            v, lo, hi = _num(s.get("value")), _num(s.get("lo")), _num(s.get("hi"))
            if v is not None:
                pts[name] = MetricPoint(v, v if lo is None else lo, v if hi is None else hi)
        bank.update(int(r["round"]), pts)
        for name in pts:
            stats[(name, int(r["round"]))] = bank.last_statistics.get(name, 0.0)
        for name, e in r.get("paired_change", {}).items():  # tested item-paired, not by the bank
            stats[(name, int(r["round"]))] = _num(e.get("t"))
    return bank, stats


def _paired_critical(rounds: Sequence[Mapping]) -> dict[str, float | None]:
    """Stream -> critical value of its paired test (monitor/global_change.py), if it had one."""
    return {name: _num(e.get("critical")) for r in rounds for name, e in r.get("paired_change", {}).items()}


def _privacy_section(privacy: PrivacyLedger | Mapping | None) -> dict:
    if privacy is None:
        return {"measured": False, "rounds": [], "epsilon_total": None, "delta": None}
    data = dict(jsonable(privacy.to_dict() if hasattr(privacy, "to_dict") else dict(privacy)))
    rounds = []
    for e in data.get("rounds", []):
        e = dict(e)
        z, c = _num(e.get("noise_multiplier")), _num(e.get("l2_max"))
        e["noise_std_sum"] = z * c if z is not None and c is not None else None
        rounds.append(e)
    data["rounds"] = rounds
    data["measured"] = True
    data["nist"] = ["MEASURE 2.10"]
    return data


def _alarm_dict(a: Alarm | Mapping) -> dict:
    return jsonable(asdict(a) if isinstance(a, Alarm) else dict(a))


def build_report(
    run_dir: Path,
    *,
    system: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    alarms: Sequence[Alarm | Mapping],
    thresholds: Mapping[str, Any],
    privacy: PrivacyLedger | Mapping | None,
    probes: Sequence[Mapping[str, Any]],
    not_measured: Sequence[Mapping[str, Any]],
    refusal_judge: Mapping[str, Any] | None = None,
) -> dict:
    """Assemble report.json's content.

    ``rounds``: ``[{round, streams: {"<mode>.<metric>[.<group>]": {value, lo, hi}}}]``.
    ``thresholds``: a :meth:`DetectorBank.config` dict (the detector is
    replayed over ``rounds`` to chart its statistic; the given ``alarms`` are
    the audited ones and are shown as they are). ``not_measured``:
    ``[{what, why, mode?}]``. The evidence section verifies ``audit.jsonl``
    in ``run_dir`` and records its head hash. ``refusal_judge``: how far the refusal
    judge of ``alignment_erosion`` can be trusted (the keyword detector's held-out
    precision / recall and the judge against the detector on generated answers,
    assembly/monitoring.py); ``None`` when not measured.
    """
    run_dir = Path(run_dir)
    bank, stats = _replay_statistics(rounds, thresholds)
    paired = _paired_critical(rounds)
    alarm_list = sorted((_alarm_dict(a) for a in alarms), key=lambda a: (a["round"], a["stream"]))
    alarmed = {(a["stream"], a["round"]) for a in alarm_list}
    det_cfg = bank.config() if bank else {}

    series: dict[str, list[dict]] = {}
    for r in sorted(rounds, key=lambda r: int(r["round"])):
        for name, s in r.get("streams", {}).items():
            rnd = int(r["round"])
            series.setdefault(name, []).append(
                {
                    "round": rnd,
                    "value": _num(s.get("value")),
                    "lo": _num(s.get("lo")),
                    "hi": _num(s.get("hi")),
                    "statistic": stats.get((name, rnd)),
                    "alarm": (name, rnd) in alarmed,
                }
            )
    nm = [dict(jsonable(x)) for x in not_measured]
    modes = []
    for mode in MODES:
        info = MODE_INFO[mode]
        metrics: dict[str, dict] = {}
        for name in sorted(n for n in series if stream_mode(n) == mode):
            _, metric, group = _split(name)
            m = metrics.setdefault(
                f"{mode}.{metric}",
                {
                    "name": f"{mode}.{metric}",
                    "metric": metric,
                    "direction": bank.direction(name) if bank else None,
                    "detector": "paired_jackknife" if name in paired else (bank.detector if bank else None),
                    "threshold": paired[name] if name in paired else (
                        bank.threshold_for(name) if bank else _num(thresholds.get("threshold"))),
                    "nist": list(MODE_NIST[mode]),
                    "streams": [],
                },
            )
            pts = series[name]
            ref = next((p for p in pts if p["value"] is not None), None)
            m["streams"].append(
                {
                    "name": name,
                    "group": group,
                    "reference": ref["value"] if ref else None,
                    "series": pts,
                    "alarm_rounds": [p["round"] for p in pts if p["alarm"]],
                    "detectable": None if name in paired or bank is None else stream_detectability(
                        pts, det_cfg, bank.threshold_for(name), bank.direction(name)),
                }
            )
        mode_alarms = [a for a in alarm_list if a.get("mode", stream_mode(a["stream"])) == mode]
        why = [x["why"] for x in nm if x.get("mode") == mode and x.get("why")]
        if metrics:
            status = "alarm" if mode_alarms else "ok"
        else:
            status = "not_measured"
            if not why:
                why = ["no stream of this mode was reported in any round"]
                nm.append({"mode": mode, "what": info["title"], "why": why[0]})
        modes.append(
            {
                "id": mode,
                "title": info["title"],
                "layer": info["layer"],
                "measures": info["measures"],
                "status": status,
                "not_measured_why": why if status == "not_measured" else [],
                "nist": list(MODE_NIST[mode]),
                "metrics": list(metrics.values()),
                "alarms": mode_alarms,
            }
        )

    ev = verify(run_dir)
    evidence = {
        "file": LOG_FILE,
        "head_file": HEAD_FILE,
        "entries": ev.entries,
        "head_hash": ev.head_hash,
        "verified": ev.ok,
        "problem": ev.problem,
    }
    priv = _privacy_section(privacy)
    all_rounds = sorted({int(r["round"]) for r in rounds})
    det = jsonable(dict(thresholds))
    sys_info = jsonable(dict(system))
    plan = _monitoring_plan(sys_info, modes, det, evidence, priv)
    report = {
        "schema": REPORT_SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run_dir.name,
        "system": sys_info,
        "summary": {
            "rounds": len(all_rounds),
            "last_round": all_rounds[-1] if all_rounds else None,
            "alarms": len(alarm_list),
            "modes_alarmed": [m["id"] for m in modes if m["status"] == "alarm"],
            "modes_ok": [m["id"] for m in modes if m["status"] == "ok"],
            "modes_not_measured": [m["id"] for m in modes if m["status"] == "not_measured"],
            "epsilon_total": priv.get("epsilon_total"),
            "delta": priv.get("delta"),
            "evidence_verified": ev.ok,
        },
        "modes": modes,
        "alarms": alarm_list,
        "detector": det,
        "privacy": priv,
        "probes": [jsonable(dict(p)) for p in probes],
        "refusal_judge": jsonable(dict(refusal_judge)) if refusal_judge is not None else None,
        "not_measured": nm,
        "evidence_log": evidence,
        "monitoring_plan": plan,
        "nist_ai_rmf": _nist_rows(modes),
    }
    return jsonable(report)


def _monitoring_plan(system: dict, modes: list[dict], det: dict, evidence: dict, priv: dict) -> dict:
    """The sections of a post-market monitoring plan (EU AI Act Art. 72(3), Annex IV point 9)."""
    cal = det.get("calibration") or {}
    identity = {k: system.get(k) for k in ("name", "version", "model", "model_sha256", "adapter", "provider")}
    thresholds = {
        "detector": det.get("detector"),
        "threshold_one_sided": det.get("threshold"),
        "threshold_two_sided": det.get("threshold_two_sided"),
        "drift_k": det.get("drift_k"),
        "reference": det.get("reference"),
        "calibration": cal,
        "rule": "alarm when the detector statistic on the standardised stream exceeds the threshold",
    }
    return {
        "legal_basis": "EU AI Act (Regulation (EU) 2024/1689) Art. 72: post-market monitoring by providers",
        "sections": [
            {"id": "system", "title": "System and version", "content": identity},
            {
                "id": "intended_purpose",
                "title": "Intended purpose",
                "content": system.get("intended_purpose") or "not stated: set monitor.intended_purpose in the config",
            },
            {
                "id": "metrics",
                "title": "Metrics collected",
                "content": [
                    {"mode": m["id"], "metrics": [x["name"] for x in m["metrics"]], "status": m["status"]}
                    for m in modes
                ],
            },
            {
                "id": "data_protection",
                "title": "How data is collected and protected",
                "content": "Clients measure on their own models; only clipped, Gaussian-noised report vectors "
                "are summed (distributed DP). Privacy spent: epsilon "
                f"{_fmt(priv.get('epsilon_total'))} at delta {_fmt(priv.get('delta'))}.",
            },
            {"id": "thresholds", "title": "Thresholds", "content": thresholds},
            {
                "id": "escalation",
                "title": "Escalation procedure",
                "content": list(system.get("escalation") or DEFAULT_ESCALATION),
            },
            {"id": "evidence_log", "title": "Evidence log", "content": evidence},
        ],
    }


def _nist_rows(modes: list[dict]) -> list[dict]:
    rows = []
    for m in modes:
        names = [x["name"] for x in m["metrics"]] or [f"{m['id']} (not measured)"]
        for name in names:
            fns = list(m["nist"]) + (["MEASURE 3.2"] if m["status"] == "not_measured" else [])
            rows.append({"metric": name, "mode": m["id"], "functions": fns})
    rows.append({"metric": "privacy budget (epsilon, delta)", "mode": None, "functions": ["MEASURE 2.10"]})
    rows.append({"metric": "detector thresholds and alarms", "mode": None, "functions": ["MEASURE 1.1", "MEASURE 3.1"]})
    return [{**r, "descriptions": [NIST_MEASURE[f] for f in r["functions"]]} for r in rows]


def refusal_judge_text(rj: Mapping[str, Any] | None) -> str:
    """One paragraph on how far the refusal judge can be trusted (HTML panel and CLI summary)."""
    if not rj:
        return "Refusal judge: not validated in this run (the run started before the round-0 check existed)."
    d = rj.get("detector") or {}
    ins = d.get("in_sample") or {}
    text = (
        f"Refusal judge validation. Keyword detector on {d.get('n')} held-out labelled texts: precision "
        f"{_fmt(d.get('precision'))}, recall {_fmt(d.get('recall'))} (in sample, on the {ins.get('n')} texts its "
        f"patterns were written from: precision {_fmt(ins.get('precision'))}, recall {_fmt(ins.get('recall'))})."
    )
    j = rj.get("judge_vs_detector")
    if not j:
        return text + f" The likelihood judge was not checked against generated answers ({rj.get('why', 'n/a')})."
    return text + (
        f" Likelihood judge vs the detector on the starting model's greedy answers (at most {rj.get('max_new_tokens')} "
        f"new tokens) to {rj.get('prompts')} held-out prompts: agreement {_fmt(j.get('agreement'))}, precision "
        f"{_fmt(j.get('precision'))}, recall {_fmt(j.get('recall'))}; refusals: judge {j.get('tp', 0) + j.get('fp', 0)}, "
        f"detector {j.get('tp', 0) + j.get('fn', 0)} of {j.get('n')}."
    )


def _fmt(x: Any, digits: int = 3) -> str:
    f = _num(x)
    return "n/a" if f is None else f"{f:.{digits}g}"


def write_report(run_dir: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and the self-contained ``report.html`` (atomically)."""
    import json

    from openpfi.monitor.report_html import render_html

    run_dir = Path(run_dir)
    jpath, hpath = run_dir / "report.json", run_dir / "report.html"
    atomic_write_text(jpath, json.dumps(report, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    atomic_write_text(hpath, render_html(report))
    return jpath, hpath


def print_summary(report: Mapping[str, Any]) -> Any:
    """A rich renderable (a table per mode plus privacy and evidence lines) for the CLI."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = {"alarm": "bold red", "ok": "green", "not_measured": "yellow"}
    t = Table(title=f"openpfi monitor — {report.get('system', {}).get('name', report.get('run', ''))}")
    for col in ("mode", "status", "streams", "alarms", "latest"):
        t.add_column(col)
    for m in report["modes"]:
        streams = [s for x in m["metrics"] for s in x["streams"]]
        latest = ""
        if m["status"] == "not_measured":
            latest = "; ".join(m["not_measured_why"])
        elif streams:
            s = streams[0]
            last = next((p for p in reversed(s["series"]) if p["value"] is not None), None)
            if last:
                latest = f"{s['name']} = {_fmt(last['value'])} [{_fmt(last['lo'])}, {_fmt(last['hi'])}]"
        first = ", ".join(f"r{a['round']} {a['stream']}" for a in m["alarms"][:2])
        t.add_row(
            m["id"],
            Text(m["status"].replace("_", " "), style=style[m["status"]]),
            str(len(streams)),
            f"{len(m['alarms'])} {first}".strip(),
            latest,
        )
    s = report["summary"]
    ev = report["evidence_log"]
    lines = [
        Text(f"privacy: epsilon {_fmt(s.get('epsilon_total'))} at delta {_fmt(s.get('delta'))}"),
        Text(refusal_judge_text(report.get("refusal_judge"))),
        Text(
            f"evidence: {ev['file']} {ev['entries']} entries, head {ev['head_hash'] or 'n/a'}, "
            + ("verified" if ev["verified"] else f"NOT VERIFIED: {ev['problem']}"),
            style="" if ev["verified"] else "bold red",
        ),
    ]
    return Group(t, *lines)
