"""Text the report, its HTML page and the CLI summary share: numbers, the refusal-judge paragraph."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def num(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def refusal_judge_text(rj: Mapping[str, Any] | None) -> str:
    """One paragraph on how far the refusal judge can be trusted (HTML panel and CLI summary)."""
    if not rj:
        return "Refusal judge: not validated in this run (the run started before the round-0 check existed)."
    d = rj.get("detector") or {}
    ins = d.get("in_sample") or {}
    text = (
        f"Refusal judge validation. Keyword detector on {d.get('n')} held-out labelled texts: precision "
        f"{fmt(d.get('precision'))}, recall {fmt(d.get('recall'))} (in sample, on the {ins.get('n')} texts its "
        f"patterns were written from: precision {fmt(ins.get('precision'))}, recall {fmt(ins.get('recall'))})."
    )
    j = rj.get("judge_vs_detector")
    if not j:
        return text + f" The likelihood judge was not checked against generated answers ({rj.get('why', 'n/a')})."
    return text + (
        f" Likelihood judge vs the detector on the starting model's greedy answers (at most {rj.get('max_new_tokens')} "
        f"new tokens) to {rj.get('prompts')} held-out prompts: agreement {fmt(j.get('agreement'))}, precision "
        f"{fmt(j.get('precision'))}, recall {fmt(j.get('recall'))}; refusals: judge {j.get('tp', 0) + j.get('fp', 0)}, "
        f"detector {j.get('tp', 0) + j.get('fn', 0)} of {j.get('n')}."
    )


def fmt(x: Any, digits: int = 3) -> str:
    f = num(x)
    return "n/a" if f is None else f"{f:.{digits}g}"


def interval_text(point: Mapping[str, Any], span: float | None) -> str:
    """``value [lo, hi]``, or a plain statement when the interval covers (nearly) the metric's whole range:
    the DP noise then hides the value, and a number (often a bound it was clipped to) would mislead."""
    lo, hi = num(point.get("lo")), num(point.get("hi"))
    if span and lo is not None and hi is not None and hi - lo >= 0.95 * span:
        return f"unknown: the noise covers the range [{fmt(lo)}, {fmt(hi)}]"
    return f"{fmt(point.get('value'))} [{fmt(lo)}, {fmt(hi)}]"
