"""What a stream, and a mode, can see: *watching*, *weak* or *blind*, from the stream's detectable change.

A stream is *watching* when the change it flags within ``DETECTION_ROUNDS`` rounds of onset at even
odds is at most ``WATCH_FACTOR`` times its materiality margin; *weak* when it flags only larger changes
(the report says how large, in the metric's units); *blind* when not even a change across the metric's
whole range would be flagged, or nothing was measured at all. A mode takes the best verdict of its
streams (``mode_verdict``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

WATCH_FACTOR = 1.5
VERDICTS = ("watching", "weak", "blind")
"""Best first."""


def verdict(detectable: float | None, margin: float | None, span: float) -> str:
    """The verdict of one stream (module docstring)."""
    if detectable is None or not math.isfinite(detectable) or detectable > span:
        return "blind"
    if margin is not None and detectable <= WATCH_FACTOR * margin * (1 + 1e-9):
        return "watching"
    return "weak"


def mode_verdict(streams: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{verdict, stream, detectable, margin, fix}`` of a mode from its streams' power entries
    (``{stream, verdict, detectable, margin, fix}``): the best verdict, and among streams with it the one
    with the smallest detectable change relative to its margin; ``blind`` with no stream."""
    entries = list(streams)
    if not entries:
        return {"verdict": "blind", "stream": None, "detectable": None, "margin": None,
                "fix": "no stream of this mode is measured"}

    def key(e: Mapping[str, Any]) -> tuple[int, float]:
        d, m = e.get("detectable"), e.get("margin")
        ratio = d / m if d is not None and m else math.inf
        return VERDICTS.index(e["verdict"]), ratio

    best = min(entries, key=key)
    return {"verdict": best["verdict"], "stream": best["stream"], "detectable": best.get("detectable"),
            "margin": best.get("margin"), "fix": best.get("fix"),
            "watching": sorted(e["stream"] for e in entries if e["verdict"] == "watching")}
