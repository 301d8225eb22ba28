"""`openpfi bench align`'s analysis: hypervolumes and the checks, from the run summaries.

Each run summary holds the final round's public held-out figures (``pref_acc_<m>`` per
objective m, refusal rates), the per-round drift and bytes, its method, seed and
preference p. The checks, measured rather than assumed:

- **upload**: FMGDA's bytes up per round over FIRM's (M adapters against one);
- **steering** (FIRM and scalarization, per seed and objective m): over the preferences,
  whether ``pref_acc_m`` is monotone in ``p_m`` (no pair with ``p_m`` larger and accuracy
  smaller), its rank correlation with ``p_m``, and the span ``max - min`` of FIRM's accuracy
  relative to scalarization's span at the same seed;
- **dominance**: the preferences at which FIRM's accuracy point is dominated by one of
  scalarization's points of the same seed;
- **drift**: per (p, seed) pair, FIRM's drift against scalarization's (mean over rounds, and
  round by round), for the disagreement share and the cosine dispersion
  (algorithms/drift.py); for M = 2 also against scalarization's drift at FIRM's own mean
  weight (the same trade-off), interpolated over p;
- refusal and over-refusal against the base model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from openpfi.algorithms.drift import dominates, hypervolume, hypervolume_2d, pareto_front

DRIFT_KEYS = ("drift_disagreement", "drift_cosine_dispersion")
"""Drift metrics compared; the first is the headline (the spread of the clients' updates)."""


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank correlation (average ranks for ties); NaN with fewer than 3 points or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")

    def ranks(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        return np.array([np.mean(np.nonzero(np.sort(a) == t)[0]) for t in a])

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def monotone(p: Sequence[float], acc: Sequence[float]) -> bool:
    """No pair of runs where ``p`` is larger and ``acc`` smaller."""
    return not any(p[i] < p[j] and acc[i] > acc[j] for i in range(len(p)) for j in range(len(p)))


def _acc(run: dict[str, Any], objectives: Sequence[str]) -> tuple[float, ...]:
    return tuple(float(run[f"pref_acc_{m}"]) for m in objectives)


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def _per_round(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Mean over runs of each round's value (rounds a run lacks are left out)."""
    lists = [r.get(f"{key}_rounds") or [] for r in rows]
    depth = max((len(v) for v in lists), default=0)
    return [float(np.mean([v[i] for v in lists if len(v) > i])) for i in range(depth)]


def method_summary(rows: list[dict[str, Any]], seeds: Sequence[int], objectives: Sequence[str]) -> dict[str, Any]:
    hv_acc, hv_ref = [], []
    for seed in seeds:
        pts = [r for r in rows if r["seed"] == seed]
        hv_acc.append(hypervolume([_acc(r, objectives) for r in pts], [0.5] * len(objectives)))
        hv_ref.append(hypervolume_2d([(r["refusal_rate"], 1 - r["over_refusal_rate"]) for r in pts], (0.0, 0.0)))
    keys = (*(f"pref_acc_{m}" for m in objectives), "refusal_rate", "over_refusal_rate", "bytes_up",
            *DRIFT_KEYS, "drift_lambda_spread", "round_seconds")
    return {"runs": len(rows), "hv_acc": float(np.mean(hv_acc)), "hv_acc_sd": float(np.std(hv_acc)),
            "hv_refusal": float(np.mean(hv_ref)), "hv_refusal_sd": float(np.std(hv_ref)),
            **{k: _mean(rows, k) for k in keys}, **{f"{k}_per_round": _per_round(rows, k) for k in DRIFT_KEYS}}


def steering(runs: list[dict[str, Any]], method: str, seed: int, objectives: Sequence[str],
             reference: str = "scalarized") -> dict[str, Any]:
    """Per objective: monotone in p_m, rank correlation, span and span relative to ``reference``'s."""
    out: dict[str, Any] = {}
    for k, m in enumerate(objectives):
        def curve(meth: str, k: int = k, m: str = m) -> tuple[list[float], list[float]]:
            pts = [r for r in runs if r["method"] == meth and r["seed"] == seed and r["preference"] is not None]
            return [float(r["preference"][k]) for r in pts], [float(r[f"pref_acc_{m}"]) for r in pts]

        p, acc = curve(method)
        if not acc:
            continue
        _, ref_acc = curve(reference)
        span = max(acc) - min(acc)
        ref_span = max(ref_acc) - min(ref_acc) if ref_acc else float("nan")
        out[m] = {"monotone": monotone(p, acc), "spearman": spearman(p, acc), "span": span,
                  "span_vs_reference": span / ref_span if ref_span > 0 else None,
                  "values": [a for _, a in sorted(zip(p, acc, strict=True))]}
    return out


def dominated_preferences(runs: list[dict[str, Any]], seed: int, objectives: Sequence[str],
                          method: str = "firm", other: str = "scalarized") -> list[list[float]]:
    """The preferences at which ``method``'s point is dominated by one of ``other``'s (same seed)."""
    mine = [r for r in runs if r["method"] == method and r["seed"] == seed]
    theirs = [_acc(r, objectives) for r in runs if r["method"] == other and r["seed"] == seed]
    return [r["preference"] for r in mine if any(dominates(q, _acc(r, objectives)) for q in theirs)]


def drift_comparison(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """FIRM against scalarization at the same (p, seed): mean difference, pairs lower, round by round."""
    pairs = [(f, s) for f in runs if f["method"] == "firm" for s in runs
             if s["method"] == "scalarized" and s["seed"] == f["seed"] and s["preference"] == f["preference"]]
    pairs = [(f, s) for f, s in pairs if f.get(key) is not None and s.get(key) is not None]
    diffs = [f[key] - s[key] for f, s in pairs]
    rounds = min((min(len(f.get(f"{key}_rounds") or []), len(s.get(f"{key}_rounds") or [])) for f, s in pairs),
                 default=0)
    return {"pairs": len(pairs), "firm_lower": int(sum(d < 0 for d in diffs)),
            "mean_difference": float(np.mean(diffs)) if diffs else None,
            "firm_lower_by_round": [int(sum(f[f"{key}_rounds"][i] < s[f"{key}_rounds"][i] for f, s in pairs))
                                    for i in range(rounds)]}


def drift_at_matched_weights(runs: list[dict[str, Any]], key: str, objective: str) -> dict[str, Any]:
    """FIRM against scalarization at the same trade-off rather than the same p (M = 2).

    Drift depends on where on the front a run trains, and FIRM's mean weight
    ``lambda_<objective>`` differs from p. Scalarization's drift at FIRM's mean weight is read
    off the same seed's scalarization runs by linear interpolation over ``p_<objective>``.
    """
    lower, diffs = 0, []
    for f in (r for r in runs if r["method"] == "firm" and r.get(key) is not None):
        lam = f.get(f"lambda_{objective}_mean")
        curve = sorted((float(s["preference"][0]), float(s[key])) for s in runs
                       if s["method"] == "scalarized" and s["seed"] == f["seed"] and s.get(key) is not None)
        if lam is None or len(curve) < 2:
            continue
        ref = float(np.interp(lam, [c[0] for c in curve], [c[1] for c in curve]))
        diffs.append(f[key] - ref)
        lower += int(f[key] < ref)
    return {"pairs": len(diffs), "firm_lower": lower, "mean_difference": float(np.mean(diffs)) if diffs else None}


def analyse(runs: list[dict[str, Any]], base: dict[str, Any], seeds: Sequence[int], objectives: Sequence[str],
            methods: Sequence[str]) -> dict[str, Any]:
    """Hypervolumes, checks and the per-method table from the run summaries."""
    per_method = {m: method_summary([r for r in runs if r["method"] == m], seeds, objectives) for m in methods}
    for seed in seeds:  # which methods' points make up the joint front (accuracy axes)
        pts = [r for r in runs if r["seed"] == seed]
        for i in pareto_front([_acc(r, objectives) for r in pts]):
            entry = per_method[pts[i]["method"]]
            entry["on_joint_front"] = entry.get("on_joint_front", 0) + 1
    checks: dict[str, Any] = {"objectives": len(objectives)}
    firm, fmgda = per_method.get("firm"), per_method.get("fmgda")
    if firm and fmgda and firm["bytes_up"]:
        checks["upload_ratio_fmgda_over_firm"] = fmgda["bytes_up"] / firm["bytes_up"]
    checks["drift"] = {key: drift_comparison(runs, key) for key in DRIFT_KEYS}
    if len(objectives) == 2:
        checks["drift_matched_weights"] = {key: drift_at_matched_weights(runs, key, objectives[0]) for key in DRIFT_KEYS}
    checks["steering"] = {m: {str(s): steering(runs, m, s, objectives) for s in seeds}
                          for m in ("firm", "scalarized") if m in methods}
    checks["firm_dominated_at"] = {str(s): dominated_preferences(runs, s, objectives) for s in seeds}
    checks["refusal_vs_base"] = {
        m: {"refusal_rate": v["refusal_rate"], "over_refusal_rate": v["over_refusal_rate"],
            "refusal_gain": (v["refusal_rate"] or 0) - (base.get("refusal_rate") or 0),
            "over_refusal_rise": (v["over_refusal_rate"] or 0) - (base.get("over_refusal_rate") or 0)}
        for m, v in per_method.items()
    }
    return {"per_method": per_method, "checks": checks}
