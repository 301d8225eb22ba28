"""Inline SVG charts for the monitor report: plain strings, no JavaScript, no fonts.

One figure per metric: the value of each stream with its ~95% uncertainty
band (sampling + DP noise) and the round-0 reference, and under it the
detector statistic against its threshold ``h``; alarms are red markers on
both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from openpfi.monitor.reporting.text import fmt

PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
)  # fmt: skip
"""Okabe & Ito (2008) colour-blind-safe palette."""
ALARM = "#C62828"
WIDTH = 560
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 14, 10, 26


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


class _Scale:
    def __init__(self, x0: float, x1: float, y0: float, y1: float, height: int) -> None:
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if not (y1 > y0):
            pad = abs(y0) * 0.1 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        else:
            pad = (y1 - y0) * 0.08
            y0, y1 = y0 - pad, y1 + pad
        self.x0, self.x1, self.y0, self.y1, self.height = x0, x1, y0, y1, height

    def x(self, v: float) -> float:
        return MARGIN_L + (v - self.x0) / (self.x1 - self.x0) * (WIDTH - MARGIN_L - MARGIN_R)

    def y(self, v: float) -> float:
        return MARGIN_T + (self.y1 - v) / (self.y1 - self.y0) * (self.height - MARGIN_T - MARGIN_B)


def _axes(s: _Scale, rounds: Sequence[int], ylabel: str) -> list[str]:
    out = []
    bottom = s.height - MARGIN_B
    for t in nice_ticks(s.y0, s.y1):
        y = s.y(t)
        out.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{MARGIN_L - 6}" y="{y + 3.5:.1f}" class="tick" text-anchor="end">{fmt(t)}</text>')
    step = max(1, math.ceil(len(rounds) / 12))
    for r in rounds[::step]:
        x = s.x(r)
        out.append(f'<text x="{x:.1f}" y="{bottom + 15}" class="tick" text-anchor="middle">{r}</text>')
    out.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{bottom}" y2="{bottom}" class="axis"/>')
    mid = (MARGIN_T + bottom) / 2
    out.append(
        f'<text x="12" y="{mid:.1f}" class="ylabel" text-anchor="middle" '
        f'transform="rotate(-90 12 {mid:.1f})">{escape(ylabel)}</text>'
    )
    return out


def _path(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def _svg(height: int, label: str, body: list[str], cls: str = "chart") -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def value_chart(metric: dict, height: int = 190) -> str:
    """Values, bands, reference line (single stream) and alarm markers of one metric's streams."""
    streams = metric["streams"]
    pts = [p for s in streams for p in s["series"] if p["value"] is not None]
    if not pts:
        return '<p class="muted">No finite values.</p>'
    ys = [v for p in pts for v in (p["value"], p["lo"], p["hi"]) if v is not None]
    refs = [s["reference"] for s in streams if s["reference"] is not None]
    ys += refs[:1] if len(streams) == 1 else []
    rounds = sorted({p["round"] for p in pts})
    s = _Scale(rounds[0], rounds[-1], min(ys), max(ys), height)
    body = _axes(s, rounds, metric["metric"])
    for i, st in enumerate(streams):
        colour = PALETTE[i % len(PALETTE)]
        ser = [p for p in st["series"] if p["value"] is not None]
        band = [p for p in ser if p["lo"] is not None and p["hi"] is not None]
        if len(band) >= 2:
            upper = [(s.x(p["round"]), s.y(p["hi"])) for p in band]
            lower = [(s.x(p["round"]), s.y(p["lo"])) for p in reversed(band)]
            body.append(f'<path d="{_path(upper + lower)} Z" fill="{colour}" class="band"/>')
        elif len(band) == 1:
            p = band[0]
            body.append(
                f'<line x1="{s.x(p["round"]):.1f}" x2="{s.x(p["round"]):.1f}" y1="{s.y(p["lo"]):.1f}" '
                f'y2="{s.y(p["hi"]):.1f}" stroke="{colour}" class="errbar"/>'
            )
        if len(streams) == 1 and st["reference"] is not None:
            y = s.y(st["reference"])
            body.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{y:.1f}" y2="{y:.1f}" class="ref"/>')
            body.append(f'<text x="{WIDTH - MARGIN_R - 2}" y="{y - 4:.1f}" class="reflabel">reference</text>')
        line = [(s.x(p["round"]), s.y(p["value"])) for p in ser]
        body.append(f'<path d="{_path(line)}" stroke="{colour}" class="line"/>')
        for (x, y), p in zip(line, ser, strict=True):
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{colour}"/>')
            if p["alarm"]:
                body.append(_alarm_marker(x, y, f"alarm: {st['name']} round {p['round']}"))
    return _svg(height, f"{metric['name']} per round with 95% intervals", body)


def _alarm_marker(x: float, y: float, label: str) -> str:
    return (
        f'<g class="alarm-marker"><title>{escape(label)}</title>'
        f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 7:.1f} L{x - 7:.1f},{y:.1f} Z" '
        f'fill="{ALARM}" stroke="#fff" stroke-width="1.5"/></g>'
    )


def statistic_chart(metric: dict, height: int = 110) -> str:
    """Detector statistic of each stream against the metric's threshold ``h``."""
    h = metric.get("threshold")
    streams = metric["streams"]
    pts = [p for st in streams for p in st["series"] if p.get("statistic") is not None]
    if not pts:
        return ""
    ys = [p["statistic"] for p in pts] + ([h] if h is not None else []) + [0.0]
    rounds = sorted({p["round"] for p in pts})
    s = _Scale(rounds[0], rounds[-1], 0.0, max(ys) * 1.05 or 1.0, height)
    body = _axes(s, rounds, "statistic")
    if h is not None:
        y = s.y(h)
        body.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{y:.1f}" y2="{y:.1f}" class="thr"/>')
        body.append(f'<text x="{WIDTH - MARGIN_R - 2}" y="{y - 4:.1f}" class="thrlabel">threshold h = {fmt(h)}</text>')
    for i, st in enumerate(streams):
        colour = PALETTE[i % len(PALETTE)]
        ser = [p for p in st["series"] if p.get("statistic") is not None]
        line = [(s.x(p["round"]), s.y(p["statistic"])) for p in ser]
        body.append(f'<path d="{_path(line)}" stroke="{colour}" class="line thin"/>')
        for (x, y), p in zip(line, ser, strict=True):
            if p["alarm"]:
                body.append(_alarm_marker(x, y, f"alarm: {st['name']} round {p['round']}"))
    return _svg(height, f"detector statistic of {metric['name']} against threshold", body)


def epsilon_chart(rounds: Sequence[dict], height: int = 150) -> str:
    """Cumulative epsilon per round (released rounds as dots, withheld as hollow)."""
    pts: list[tuple[int, float, bool]] = [
        (int(r["round"]), float(r["epsilon_total"]), bool(r.get("released")))
        for r in rounds
        if r.get("epsilon_total") is not None
    ]
    if not pts:
        return ""
    s = _Scale(pts[0][0], pts[-1][0], 0.0, max(e for _, e, _ in pts) or 1.0, height)
    body = _axes(s, [r for r, _, _ in pts], "epsilon spent")
    line = [(s.x(r), s.y(e)) for r, e, _ in pts]
    body.append(f'<path d="{_path(line)}" stroke="{PALETTE[0]}" class="line"/>')
    for (x, y), (_, _, rel) in zip(line, pts, strict=True):
        fill = PALETTE[0] if rel else "#fff"
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{fill}" stroke="{PALETTE[0]}"/>')
    return _svg(height, "cumulative privacy budget (epsilon) per round", body, cls="chart eps")
