"""The monitor's summary for the terminal: ``openpfi run`` / ``resume`` / ``report`` print it at the end of
a monitored run. One row per mode: its verdict (what it could see), its alarms, and the stream that
decides the verdict with its detectable change against its margin, or what would make it watching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openpfi.monitor.reporting.text import fmt, interval_text, refusal_judge_text

VERDICT_STYLE = {"watching": "green", "weak": "yellow", "blind": "bold red"}


def can_see(verdict: Mapping[str, Any]) -> str:
    """One sentence on what a mode's verdict rests on (``report.json`` ``modes[].verdict``)."""
    v, stream = verdict.get("verdict"), verdict.get("stream")
    d, m = verdict.get("detectable"), verdict.get("margin")
    if stream is None:
        return str(verdict.get("fix") or "nothing measured")
    size = f"{fmt(d)} (margin {fmt(m)})" if m is not None else fmt(d)
    if v == "watching":
        return f"{stream} flags a change of {size} within 3 rounds at even odds"
    if v == "weak":
        return f"only changes larger than {size} on {stream}; {verdict.get('fix') or ''}".rstrip("; ")
    return f"blind at this size: {stream} would need a change of {size}; {verdict.get('fix') or ''}".rstrip("; ")


def _latest(report: Mapping[str, Any], stream: str | None) -> str:
    for m in report["modes"]:
        for x in m["metrics"]:
            for s in x["streams"]:
                if s["name"] == stream:
                    last = next((p for p in reversed(s["series"]) if p["value"] is not None), None)
                    if last:
                        return f"{interval_text(last, (s.get('power') or {}).get('span'))} r{last['round']}"
    return ""


def print_summary(report: Mapping[str, Any]) -> Any:
    """A rich renderable (one row per mode, then privacy, refusal judge and evidence lines) for the CLI."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = report["summary"]
    watching = s.get("modes_watching", [])
    t = Table(title=f"openpfi monitor — {report.get('system', {}).get('name', report.get('run', ''))}: "
                    f"{len(watching)} / {len(report['modes'])} modes watching, {s['rounds']} rounds monitored")
    t.add_column("mode", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    for col, width in (("alarms", None), ("what it can see", 70), ("latest", None)):
        t.add_column(col, overflow="fold", max_width=width)
    for m in report["modes"]:
        verdict = m.get("verdict") or {"verdict": "blind", "stream": None, "fix": "no power analysis in this report"}
        first = ", ".join(f"r{a['round']} {a['stream']}" for a in m["alarms"][:2])
        t.add_row(
            m["id"],
            Text(verdict["verdict"], style=VERDICT_STYLE.get(verdict["verdict"], "")),
            Text(f"{len(m['alarms'])} {first}".strip(), style="bold red" if m["alarms"] else ""),
            can_see(verdict),
            _latest(report, verdict.get("stream")),
        )
    ev = report["evidence_log"]
    lines = [
        Text(f"privacy: epsilon {fmt(s.get('epsilon_total'))} at delta {fmt(s.get('delta'))}"),
        Text(refusal_judge_text(report.get("refusal_judge"))),
        Text(
            f"evidence: {ev['file']} {ev['entries']} entries, head {ev['head_hash'] or 'n/a'}, "
            + ("verified" if ev["verified"] else f"NOT VERIFIED: {ev['problem']}"),
            style="" if ev["verified"] else "bold red",
        ),
    ]
    return Group(t, *lines)
