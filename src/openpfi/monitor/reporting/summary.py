"""The monitor's summary for the terminal (``openpfi run`` prints it at the end of a monitored run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openpfi.monitor.reporting.text import fmt, refusal_judge_text


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
                latest = f"{s['name']} = {fmt(last['value'])} [{fmt(last['lo'])}, {fmt(last['hi'])}]"
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
        Text(f"privacy: epsilon {fmt(s.get('epsilon_total'))} at delta {fmt(s.get('delta'))}"),
        Text(refusal_judge_text(report.get("refusal_judge"))),
        Text(
            f"evidence: {ev['file']} {ev['entries']} entries, head {ev['head_hash'] or 'n/a'}, "
            + ("verified" if ev["verified"] else f"NOT VERIFIED: {ev['problem']}"),
            style="" if ev["verified"] else "bold red",
        ),
    ]
    return Group(t, *lines)
