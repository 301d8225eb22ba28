"""The post-market monitoring report of a run: ``report.json`` and ``report.html``.

:func:`build_report` gathers everything into one JSON-ready dict;
:func:`write_report` writes it as ``report.json`` and renders the same dict
(nothing else) as a self-contained ``report.html`` (``reporting/html.py``), so
the two always hold the same content.

The report is organised as the post-market monitoring plan of EU AI Act
Art. 72 (system and version, intended purpose, metrics, thresholds,
escalation, evidence log) and maps each metric to the NIST AI RMF 1.0
(NIST AI 100-1, 2023) MEASURE subcategories it serves (``sections.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openpfi.monitor.audit import HEAD_FILE, LOG_FILE, atomic_write_text, jsonable, verify
from openpfi.monitor.detection.bank import DetectorBank
from openpfi.monitor.detection.power import stream_detectability
from openpfi.monitor.modes import MODE_LIST, Mode
from openpfi.monitor.reporting.html import render_html
from openpfi.monitor.reporting.power_section import mode_power, stream_power, switched_off
from openpfi.monitor.reporting.sections import monitoring_plan, nist_rows, privacy_section
from openpfi.monitor.reporting.text import num
from openpfi.monitor.types import Alarm, MetricPoint, StreamName

if TYPE_CHECKING:  # the ledger pulls in torch via algorithms.privacy; the report does not need it
    from openpfi.monitor.privacy.ledger import PrivacyLedger

REPORT_SCHEMA = "openpfi.monitor.report/1"

MAX_PLOTTED_STREAMS = 8
"""Streams drawn per metric chart; all streams are listed in the table."""


def _replay_statistics(rounds: Sequence[Mapping], thresholds: Mapping) -> tuple[DetectorBank | None, dict]:
    """Re-run the detector bank over the rounds to get each stream's statistic per round."""
    if "detector" not in thresholds:
        return None, {}
    bank = DetectorBank.from_config(thresholds)
    stats: dict[tuple[str, int], float | None] = {}
    for r in sorted(rounds, key=lambda r: int(r["round"])):
        pts = {}
        for name, s in r.get("streams", {}).items():
            v, lo, hi = num(s.get("value")), num(s.get("lo")), num(s.get("hi"))
            if v is not None:
                pts[name] = MetricPoint(v, v if lo is None else lo, v if hi is None else hi)
        bank.update(int(r["round"]), pts)
        for name in pts:
            stats[(name, int(r["round"]))] = bank.last_statistics.get(name, 0.0)
        for name, e in r.get("paired_change", {}).items():  # tested item-paired, not by the bank
            stats[(name, int(r["round"]))] = num(e.get("statistic", e.get("t")))
    return bank, stats


def _paired_critical(rounds: Sequence[Mapping]) -> dict[str, float | None]:
    """Stream -> critical value of its paired test (detection/global_change.py), if it had one."""
    return {name: num(e.get("threshold", e.get("critical"))) for r in rounds for name, e in r.get("paired_change", {}).items()}


def _alarm_dict(a: Alarm | Mapping) -> dict:
    return jsonable(asdict(a) if isinstance(a, Alarm) else dict(a))


def _series(rounds: Sequence[Mapping], stats: Mapping, alarmed: set[tuple[str, int]]) -> dict[str, list[dict]]:
    """Stream -> its points ``{round, value, lo, hi, statistic, alarm}`` in round order."""
    series: dict[str, list[dict]] = {}
    for r in sorted(rounds, key=lambda r: int(r["round"])):
        rnd = int(r["round"])
        for name, s in r.get("streams", {}).items():
            series.setdefault(name, []).append({
                "round": rnd, "value": num(s.get("value")), "lo": num(s.get("lo")), "hi": num(s.get("hi")),
                "statistic": stats.get((name, rnd)), "alarm": (name, rnd) in alarmed,
            })
    return series


class _Context:
    """What every mode's section of the report reads."""

    def __init__(self, bank: DetectorBank | None, thresholds: Mapping, paired: Mapping[str, float | None],
                 rounds: Sequence[Mapping[str, Any]], power: Mapping[str, Any]):
        self.bank, self.thresholds, self.paired, self.rounds, self.power = bank, thresholds, paired, rounds, power
        self.det_cfg = bank.config() if bank else {}

    def metric_entry(self, mode: Mode, name: str, metric: str) -> dict:
        bank, paired = self.bank, self.paired
        return {
            "name": f"{mode.id}.{metric}",
            "metric": metric,
            "direction": bank.direction(name) if bank else None,
            "detector": "paired_cusum" if name in paired else (bank.detector if bank else None),
            "threshold": paired[name] if name in paired else (
                bank.threshold_for(name) if bank else num(self.thresholds.get("threshold"))),
            "nist": list(mode.nist),
            "streams": [],
        }

    def stream_entry(self, name: str, points: list[dict]) -> dict:
        bank = self.bank
        ref = next((p for p in points if p["value"] is not None), None)
        shift = None if name in self.paired or bank is None else stream_detectability(
            points, self.det_cfg, bank.threshold_for(name), bank.direction(name))
        return {
            "name": name,
            "group": StreamName.parse(name).group,
            "reference": ref["value"] if ref else None,
            "series": points,
            "alarm_rounds": [p["round"] for p in points if p["alarm"]],
            "detectable": shift,
            "power": stream_power(name, points, self.rounds, self.power, shift),
        }


def _mode_entry(mode: Mode, series: Mapping[str, list[dict]], ctx: _Context, alarms: list[dict],
                nm: list[dict]) -> dict:
    """One mode's section; appends to ``nm`` when the mode has no stream and no stated reason."""
    metrics: dict[str, dict] = {}
    for name in sorted(n for n in series if StreamName.parse(n).mode == mode.id):
        metric = StreamName.parse(name).scoped_metric
        entry = metrics.setdefault(f"{mode.id}.{metric}", ctx.metric_entry(mode, name, metric))
        entry["streams"].append(ctx.stream_entry(name, series[name]))
    powers = [s["power"] for m in metrics.values() for s in m["streams"] if s["power"] is not None]
    powers += [e for e in switched_off(ctx.power, list(ctx.power.get("off") or {}))
               if StreamName.parse(e["stream"]).mode == mode.id]
    mode_alarms = [a for a in alarms if a.get("mode", StreamName.parse(a["stream"]).mode) == mode.id]
    why = [x["why"] for x in nm if x.get("mode") == mode.id and x.get("why")]
    if metrics:
        status = "alarm" if mode_alarms else "ok"
    else:
        status = "not_measured"
        if not why:
            why = ["no stream of this mode was reported in any round"]
            nm.append({"mode": mode.id, "what": mode.title, "why": why[0]})
    return {
        "id": mode.id, "title": mode.title, "layer": mode.layer, "measures": mode.measures, "status": status,
        "not_measured_why": why if status == "not_measured" else [], "nist": list(mode.nist),
        "metrics": list(metrics.values()), "alarms": mode_alarms, "verdict": mode_power(powers),
        "switched_off": [e for e in powers if e["stream"] in (ctx.power.get("off") or {})],
    }


def _evidence(run_dir: Path) -> dict:
    ev = verify(run_dir)
    return {"file": LOG_FILE, "head_file": HEAD_FILE, "entries": ev.entries, "head_hash": ev.head_hash,
            "verified": ev.ok, "problem": ev.problem}


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
    power: Mapping[str, Any] | None = None,
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
    assembly/monitor_round0.py); ``None`` when not measured. ``power``: the run's power plans
    (assembly/monitor_power.py): every stream's detectable change and each mode's verdict.
    """
    run_dir = Path(run_dir)
    bank, stats = _replay_statistics(rounds, thresholds)
    alarm_list = sorted((_alarm_dict(a) for a in alarms), key=lambda a: (a["round"], a["stream"]))
    series = _series(rounds, stats, {(a["stream"], a["round"]) for a in alarm_list})
    ctx = _Context(bank, thresholds, _paired_critical(rounds), rounds, power or {})
    nm = [dict(jsonable(x)) for x in not_measured]
    modes = [_mode_entry(mode, series, ctx, alarm_list, nm) for mode in MODE_LIST]
    evidence = _evidence(run_dir)
    priv = privacy_section(privacy)
    all_rounds = sorted({int(r["round"]) for r in rounds if int(r["round"]) >= 1})  # round 0: the references
    det = jsonable(dict(thresholds))
    sys_info = jsonable(dict(system))
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
            "modes_watching": [m["id"] for m in modes if m["verdict"]["verdict"] == "watching"],
            "verdicts": {m["id"]: m["verdict"]["verdict"] for m in modes},
            "epsilon_total": priv.get("epsilon_total"),
            "delta": priv.get("delta"),
            "evidence_verified": evidence["verified"],
        },
        "modes": modes,
        "alarms": alarm_list,
        "detector": det,
        "privacy": priv,
        "probes": [jsonable(dict(p)) for p in probes],
        "refusal_judge": jsonable(dict(refusal_judge)) if refusal_judge is not None else None,
        "not_measured": nm,
        "evidence_log": evidence,
        "monitoring_plan": monitoring_plan(sys_info, modes, det, evidence, priv),
        "nist_ai_rmf": nist_rows(modes),
    }
    return jsonable(report)


def write_report(run_dir: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and the self-contained ``report.html`` (atomically)."""
    run_dir = Path(run_dir)
    jpath, hpath = run_dir / "report.json", run_dir / "report.html"
    atomic_write_text(jpath, json.dumps(report, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    atomic_write_text(hpath, render_html(report))
    return jpath, hpath
