"""Render report.json's dict as one self-contained HTML file.

Inline CSS and inline SVG (:mod:`openpfi.monitor.reporting.svg`) only: no
JavaScript, no external stylesheet, font, image or link target, so the file
opens offline and its browser console stays empty. Every figure shown is
read from the report dict, which is written unchanged as report.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from openpfi.monitor.reporting.summary import can_see
from openpfi.monitor.reporting.svg import PALETTE, epsilon_chart, statistic_chart, value_chart
from openpfi.monitor.reporting.text import fmt, interval_text, refusal_judge_text

STATUS_LABEL = {"ok": "no alarm", "alarm": "alarm", "not_measured": "not measured"}
VERDICT_LABEL = {"watching": "watching", "weak": "weak", "blind": "blind at this size"}
DIRECTION_LABEL = {
    "increase": "alarm on an increase",
    "decrease": "alarm on a decrease",
    "both": "alarm on a change either way",
    None: "no detector configured",
}

CSS = """
:root { --ink:#1b1f24; --muted:#5b6470; --line:#d8dde3; --bg:#f5f6f8; --card:#fff;
  --ok:#2e7d32; --alarm:#c62828; --nm:#8a6100; --accent:#1f3a5f; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
header { background:var(--accent); color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#c9d6e8; font-size:13px; }
header .kpis { display:flex; gap:12px; flex-wrap:wrap; margin-top:14px; }
.kpi { background:rgba(255,255,255,.1); border-radius:6px; padding:6px 12px; min-width:120px; }
.kpi b { display:block; font-size:18px; } .kpi span { font-size:12px; color:#c9d6e8; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; font-size:13px; }
nav a { color:var(--accent); margin-right:14px; text-decoration:none; }
main { max-width:1220px; margin:0 auto; padding:18px 32px 40px; }
section { margin:0 0 22px; }
h2 { font-size:18px; margin:24px 0 10px; color:var(--accent); }
h3 { font-size:15px; margin:12px 0 4px; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 18px; }
.mode-panel { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--ok);
  border-radius:8px; padding:12px 18px 16px; margin:0 0 16px; }
.mode-panel.status-alarm { border-left-color:var(--alarm); }
.mode-panel.status-not_measured { border-left-color:var(--nm); background:#fffdf6; }
.mode-panel h2 { margin:4px 0 2px; display:flex; align-items:baseline; gap:10px; flex-wrap:wrap; }
.mode-id { color:var(--muted); font-weight:400; }
.badge { display:inline-block; border-radius:10px; padding:1px 9px; font-size:12px; font-weight:600;
  color:#fff; background:var(--ok); }
.badge.st-alarm { background:var(--alarm); } .badge.st-not_measured { background:var(--nm); }
.badge.v-weak { background:var(--nm); } .badge.v-blind { background:#6b7480; }
.mode-panel.verdict-weak { border-left-color:var(--nm); } .mode-panel.verdict-blind { border-left-color:#6b7480; }
.cansee { margin:6px 0 2px; }
.nist { display:inline-block; border:1px solid var(--line); border-radius:4px; padding:0 6px; margin:0 4px 2px 0;
  font-size:11.5px; color:var(--muted); background:#fafbfc; }
.notmeasured { font-size:15px; color:var(--nm); font-weight:600; margin:10px 0 4px; }
.grid2 { display:grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap:10px 26px; }
figure { margin:6px 0; } figcaption { font-size:12px; color:var(--muted); }
svg.chart { display:block; width:100%; height:auto; background:#fff; } svg.chart.eps { max-width:640px; }
svg .grid { stroke:#eceff3; } svg .axis { stroke:#9aa3ad; }
svg .tick { font-size:10.5px; fill:#5b6470; } svg .ylabel { font-size:11px; fill:#5b6470; }
svg .line { fill:none; stroke-width:2; } svg .line.thin { stroke-width:1.5; }
svg .band { fill-opacity:.16; stroke:none; } svg .errbar { stroke-width:3; stroke-opacity:.35; }
svg .ref { stroke:#6b7480; stroke-dasharray:4 3; } svg .reflabel { font-size:10px; fill:#6b7480; text-anchor:end; }
svg .thr { stroke:#c62828; stroke-dasharray:6 3; stroke-width:1.5; }
svg .thrlabel { font-size:10.5px; fill:#c62828; text-anchor:end; }
.legend { font-size:12px; color:var(--muted); } .legend i { display:inline-block; width:10px; height:10px;
  border-radius:2px; margin:0 4px 0 10px; vertical-align:-1px; }
table { border-collapse:collapse; width:100%; font-size:12.5px; margin:6px 0; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f2f5; font-weight:600; } td.num { text-align:right; font-variant-numeric: tabular-nums; }
tr.alarm td { color:var(--alarm); font-weight:600; }
p.warn { color:var(--alarm); }
.muted { color:var(--muted); } .ok { color:var(--ok); } .bad { color:var(--alarm); font-weight:600; }
.hash { word-break:break-all; }
dl.plan dt { font-weight:600; margin-top:8px; } dl.plan dd { margin:2px 0 0 0; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:14px; }
@media print { nav { display:none; } .mode-panel { break-inside:avoid; } body { background:#fff; } }
"""


def _e(x: Any) -> str:
    return escape("" if x is None else str(x))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """``rows`` hold already-escaped HTML cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _value(x: Any) -> str:
    """Any JSON value as compact escaped text."""
    if x is None or x == "":
        return "<span class='muted'>not stated</span>"
    if isinstance(x, float):
        return fmt(x, 4)
    if isinstance(x, (dict, list)):
        return f"<code>{_e(json.dumps(x, ensure_ascii=False))}</code>"
    return _e(x)


def _metric_block(m: Mapping) -> str:
    shown = m["streams"][:8]
    legend = ""
    if len(m["streams"]) > 1:
        legend = "<div class='legend'>" + "".join(
            f"<i style='background:{PALETTE[i % len(PALETTE)]}'></i>{_e(s['group'] or s['name'])}"
            for i, s in enumerate(shown)
        )
        more = len(m["streams"]) - len(shown)
        legend += f" <span>(+{more} more in the table)</span>" if more > 0 else ""
        legend += "</div>"
    sub = {**m, "streams": shown}
    paired = m.get("detector") in ("paired_cusum", "paired_jackknife")
    caption = (
        f"{DIRECTION_LABEL.get(m.get('direction'), _e(m.get('direction')))}; "
        + (f"statistic: CUSUM of the item-paired change since round 0 beyond its margin, in standard errors "
           f"(a fresh block of public items each round), threshold h = {fmt(m.get('threshold'))}; "
           if paired else f"threshold h = {fmt(m.get('threshold'))}; ")
        + "shaded: ~95% interval (sampling + DP noise)"
    )
    return (
        f"<figure><h3><code>{_e(m['name'])}</code></h3>{value_chart(sub)}{statistic_chart(sub)}"
        f"{legend}<figcaption>{caption}</figcaption></figure>"
    )


def _stream_table(mode: Mapping) -> str:
    rows, classes = [], []
    for m in mode["metrics"]:
        for s in m["streams"]:
            last: Mapping[str, Any] = next((p for p in reversed(s["series"]) if p["value"] is not None), {})
            rows.append(
                [
                    f"<code>{_e(s['name'])}</code>",
                    fmt(s["reference"]),
                    _e(interval_text(last, (s.get("power") or {}).get("span"))) if last else "n/a",
                    fmt(last.get("statistic")),
                    _power_cell(s.get("power")),
                    _e(", ".join(str(r) for r in s["alarm_rounds"]) or "none"),
                ]
            )
            classes.append("alarm" if s["alarm_rounds"] else "")
    for e in mode.get("switched_off", []):
        rows.append([f"<code>{_e(e['stream'])}</code>", "—", "<span class='muted'>switched off</span>", "—",
                     _power_cell(e), "—"])
        classes.append("")
    return _table(["stream", "reference", "latest [95% interval]", "statistic",
                   "change flagged at even odds within 3 rounds (margin) — verdict", "alarm rounds"], rows, classes)


def _power_cell(p: Mapping | None) -> str:
    if not p:
        return "<span class='muted'>n/a</span>"
    margin = f" ({fmt(p.get('margin'))})" if p.get("margin") is not None else ""
    fix = f"<br><span class='muted'>{_e(p['fix'])}</span>" if p.get("fix") else ""
    return f"{fmt(p.get('detectable'))}{margin} — <b>{_e(VERDICT_LABEL.get(p['verdict'], p['verdict']))}</b>{fix}"


def _verdict_badge(mode: Mapping) -> str:
    v = (mode.get("verdict") or {}).get("verdict", "blind")
    return f"<span class='badge v-{_e(v)}'>{_e(VERDICT_LABEL.get(v, v))}</span>"


def _mode_panel(mode: Mapping, refusal_judge: Mapping | None = None) -> str:
    st = mode["status"]
    nist = "".join(f"<span class='nist'>NIST AI RMF {_e(f)}</span>" for f in mode["nist"])
    verdict = mode.get("verdict") or {}
    head = (
        f"<h2>{_e(mode['title'])} <code class='mode-id'>{_e(mode['id'])}</code>{_verdict_badge(mode)}"
        f"<span class='badge st-{st}'>{_e(STATUS_LABEL[st])}</span></h2>"
        f"<div class='muted'>{_e(mode['layer'])} layer — {_e(mode['measures'])}</div><div>{nist}</div>"
        f"<p class='cansee'>{_e(can_see(verdict))}</p>"
    )
    if st == "not_measured":
        why = "; ".join(mode["not_measured_why"])
        body = f"<p class='notmeasured'>Not measured: {_e(why)}</p>"
    else:
        blocks = "".join(_metric_block(m) for m in mode["metrics"])
        alarms = ""
        if mode["alarms"]:
            alarms = "<h3>Alarms</h3>" + _alarm_table(mode["alarms"])
        body = f"<div class='grid2'>{blocks}</div>{_stream_table(mode)}{alarms}"
    if mode["id"] == "alignment_erosion":
        body += f"<p class='refusal-judge'>{_e(refusal_judge_text(refusal_judge))}</p>"
    return (
        f"<section class='mode-panel status-{st} verdict-{_e(verdict.get('verdict', 'blind'))}' "
        f"id='mode-{_e(mode['id'])}' data-mode='{_e(mode['id'])}'>"
        f"{head}{body}</section>"
    )


def _alarm_table(alarms: Sequence[Mapping]) -> str:
    rows = []
    for a in alarms:
        ev = a.get("evidence") or {}
        rows.append(
            [
                _e(a["round"]),
                f"<code>{_e(a.get('mode'))}</code>",
                f"<code>{_e(a['stream'])}</code>",
                _e(a.get("detector")),
                fmt(a.get("magnitude")),
                fmt(a.get("threshold")),
                f"value {fmt(ev.get('value'))}, reference {fmt(ev.get('reference'))}, z {fmt(ev.get('z'))}",
            ]
        )
    heads = ["round", "mode", "stream", "detector", "statistic", "threshold", "evidence"]
    return _table(heads, rows, ["alarm"] * len(rows))


def _client_figures(shared: bool) -> str:
    if shared:
        return ("<p class='warn'><b>Per-client figures are shared with the server in the clear</b> "
                "(<code>privacy.share_client_metrics = true</code>): metrics.jsonl holds each client's raw held-out "
                "and training figures. Use this for research simulations only.</p>")
    return ("<p class='muted'>Per-client figures: none on the server. Client utility reaches it only through the "
            "DP report; each client keeps its own figures in its client store.</p>")


def _privacy(p: Mapping, clients_shared: bool = False) -> str:
    if not p.get("measured"):
        return "<div class='card'><p class='notmeasured'>Not measured: no privacy ledger was given.</p></div>"
    rows = [
        [
            _e(r.get("round")),
            "released" if r.get("released") else "<span class='muted'>withheld (too few clients)</span>",
            _e(r.get("n_clients")),
            fmt(r.get("noise_multiplier")),
            fmt(r.get("l2_max")),
            fmt(r.get("noise_std_sum")),
            fmt(r.get("epsilon_round")),
            fmt(r.get("epsilon_total")),
        ]
        for r in p.get("rounds", [])
    ]
    heads = ["round", "release", "clients", "noise multiplier z", "clip C", "z·C (noise std if unsplit)", "ε round", "ε total"]
    return (
        f"<div class='card'><p><b>ε = {fmt(p.get('epsilon_total'))}</b> spent in total at "
        f"<b>δ = {fmt(p.get('delta'))}</b> ({_e(p.get('accountant'))} accountant, {_e(p.get('adjacency'))} "
        f"adjacency; {_e(p.get('rounds_released'))} rounds released, {_e(p.get('rounds_withheld'))} withheld). "
        f"<span class='nist'>NIST AI RMF MEASURE 2.10</span></p>{_updates_privacy(p)}"
        f"{_client_figures(clients_shared)}{epsilon_chart(p.get('rounds', []))}{_table(heads, rows)}</div>"
    )


def _updates_privacy(p: Mapping) -> str:
    """The adapter updates' own ledger (client-level DP) and both mechanisms together, when the run had it."""
    u, c = p.get("updates"), p.get("combined")
    if not isinstance(u, Mapping) or not isinstance(c, Mapping):
        return "<p class='muted'>The adapter updates carry no DP noise (privacy.update_clip = 0).</p>"
    return (f"<p>The table is the monitor reports'. The adapter updates (client-level DP, "
            f"{_e(u.get('sampling'))}): <b>ε = {fmt(u.get('epsilon_total'))}</b> over "
            f"{_e(u.get('rounds_released'))} rounds; monitor reports and updates together: "
            f"<b>ε = {fmt(c.get('epsilon_total'))}</b> at δ = {fmt(c.get('delta'))} (RDP curves added).</p>")


def _probes(probes: Sequence[Mapping]) -> str:
    if not probes:
        return "<div class='card'><p class='notmeasured'>No probe suites were recorded.</p></div>"
    first = [k for k in ("suite", "name", "version", "sha256") if any(k in p for p in probes)]
    keys = first + sorted({k for p in probes for k in p} - set(first))
    rows = [
        [f"<span class='mono hash'>{_e(p.get(k))}</span>" if k == "sha256" else _value(p.get(k)) for k in keys]
        for p in probes
    ]
    return f"<div class='card'>{_table(keys, rows)}</div>"


def _not_measured(items: Sequence[Mapping]) -> str:
    if not items:
        return "<div class='card'><p class='ok'>Everything planned was measured.</p></div>"
    rows = [[f"<code>{_e(x.get('mode') or '')}</code>", _e(x.get("what")), _e(x.get("why"))] for x in items]
    return f"<div class='card'>{_table(['mode', 'what', 'why'], rows)}</div>"


def _plan(plan: Mapping) -> str:
    parts = []
    for sec in plan["sections"]:
        c = sec["content"]
        if sec["id"] == "evidence_log":
            c = {k: v for k, v in c.items() if v is not None}
        if isinstance(c, list) and c and isinstance(c[0], str):
            body = "<ol>" + "".join(f"<li>{_e(x)}</li>" for x in c) + "</ol>"
        elif isinstance(c, list):
            body = _table(
                ["mode", "metrics", "status"],
                [[f"<code>{_e(x['mode'])}</code>", _e(", ".join(x["metrics"]) or "—"), _e(x["status"])] for x in c],
            )
        elif isinstance(c, dict):
            body = _table(["item", "value"], [[_e(k), _value(v)] for k, v in c.items()])
        else:
            body = _e(c)
        parts.append(f"<dt>{_e(sec['title'])}</dt><dd>{body}</dd>")
    return (
        f"<div class='card'><p class='muted'>{_e(plan['legal_basis'])}</p><dl class='plan'>{''.join(parts)}</dl></div>"
    )


def _nist(rows: Sequence[Mapping]) -> str:
    body = [
        [
            f"<code>{_e(r['metric'])}</code>",
            "".join(f"<span class='nist'>{_e(f)}</span>" for f in r["functions"]),
            _e("; ".join(r["descriptions"])),
        ]
        for r in rows
    ]
    return f"<div class='card'>{_table(['metric', 'MEASURE function', 'what it serves'], body)}</div>"


def _evidence(ev: Mapping) -> str:
    status = (
        "<span class='ok'>chain verified</span>"
        if ev["verified"]
        else f"<span class='bad'>NOT VERIFIED: {_e(ev['problem'])}</span>"
    )
    return (
        f"<div class='card'><p><code>{_e(ev['file'])}</code> — {_e(ev['entries'])} entries, {status}. "
        f"Head (<code>{_e(ev['head_file'])}</code>) hash: <span class='mono hash'>{_e(ev['head_hash'] or 'n/a')}"
        "</span></p><p class='muted'>Each entry carries the SHA-256 of the previous one; check with "
        "<code>openpfi audit verify RUN_DIR</code>. Keep a copy of the head hash outside the run folder.</p></div>"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page as one string."""
    sysd = report.get("system", {})
    s = report["summary"]
    title = f"{sysd.get('name') or 'openpfi run'} {sysd.get('version') or ''}".strip()
    ev = report["evidence_log"]
    kpis = [
        (str(s["rounds"]), "rounds monitored"),
        (str(s["alarms"]), "alarms"),
        (f"{len(s.get('modes_watching', []))} / {len(report['modes'])}", "modes watching"),
        (fmt(s.get("epsilon_total")), f"privacy ε (δ = {fmt(s.get('delta'))})"),
        ("verified" if ev["verified"] else "NOT verified", "evidence log"),
    ]
    kpi_html = "".join(f"<div class='kpi'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in kpis)
    overview = _table(
        ["mode", "verdict", "what it can see", "status", "alarms"],
        [
            [
                f"<a href='#mode-{_e(m['id'])}'>{_e(m['title'])}</a> <code class='muted'>{_e(m['id'])}</code>",
                _verdict_badge(m),
                _e(can_see(m.get("verdict") or {})),
                f"<span class='badge st-{m['status']}'>{_e(STATUS_LABEL[m['status']])}</span>",
                _e(len(m["alarms"])),
            ]
            for m in report["modes"]
        ],
    )
    det = report.get("detector") or {}
    cal = det.get("calibration") or {}
    det_text = (
        f"Detector <b>{_e(det.get('detector', 'none'))}</b>, drift k = {fmt(det.get('drift_k'))}, thresholds "
        f"h = {fmt(det.get('threshold'))} (one-sided) / {fmt(det.get('threshold_two_sided'))} (two-sided)"
    )
    if cal:
        det_text += (
            f", calibrated by Monte Carlo ({_e(cal.get('n_sim'))} null simulations) so the chance of any false "
            f"alarm over {_e(cal.get('horizon_rounds'))} rounds is at most {fmt(cal.get('target_false_alarm_rate'))} "
            f"per run, split over {_e(cal.get('streams'))} streams (Bonferroni)"
        )
    det_text += (". Values are standardised by their uncertainty, which includes the DP noise. The global model's "
                 "streams (<code>global_*</code>), scored by the server on public items (one block of them a round), "
                 "are tested instead item-paired against round 0: each round's change beyond the metric's materiality "
                 "margin, in jackknife standard errors, feeds a CUSUM whose threshold holds their own part of the "
                 "run's false-alarm budget (<code>monitor.global_test_share</code>, split evenly over them; the "
                 "streams above share the rest). A mode is <b>watching</b> when one of its streams flags 1.5 times "
                 "its margin within 3 rounds at even odds, <b>weak</b> when it flags only larger changes, "
                 "<b>blind at this size</b> when not even a change across the metric's whole range would be "
                 "flagged.")
    sections = [
        ("overview", "Overview", f"<div class='card'>{overview}<p class='muted'>{det_text}</p></div>"),
        ("modes", "Silent-failure modes", "".join(_mode_panel(m, report.get("refusal_judge")) for m in report["modes"])),
        (
            "alarms",
            "Alarms",
            f"<div class='card'>{_alarm_table(report['alarms'])}</div>"
            if report["alarms"]
            else "<div class='card'><p class='ok'>No alarm was raised.</p></div>",
        ),
        ("privacy", "Privacy budget spent", _privacy(report["privacy"], bool(sysd.get("client_metrics_shared")))),
        ("probes", "Probe suites (versions and SHA-256)", _probes(report["probes"])),
        ("not-measured", "Not measured, and why", _not_measured(report["not_measured"])),
        ("plan", "Post-market monitoring plan (EU AI Act Art. 72)", _plan(report["monitoring_plan"])),
        ("nist", "NIST AI RMF MEASURE functions served", _nist(report["nist_ai_rmf"])),
        ("evidence", "Evidence log", _evidence(ev)),
    ]
    nav = "".join(f"<a href='#{sid}'>{_e(t.split(' (')[0])}</a>" for sid, t, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{_e(t)}</h2>{html}</section>" for sid, t, html in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Post-market monitoring report — {_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Post-market monitoring report — {_e(title)}</h1>"
        f"<div class='sub'>run <code>{_e(report.get('run'))}</code> · model {_e(sysd.get('model') or 'n/a')} · "
        f"generated {_e(report.get('generated_at'))} · last round {_e(s.get('last_round'))}</div>"
        f"<div class='kpis'>{kpi_html}</div></header><nav>{nav}</nav><main>{body}</main>"
        "<footer>Generated by openpfi. This file is self-contained (no scripts, no network); "
        "report.json holds the same content.</footer></body></html>\n"
    )
