"""The report's sections beside the modes: privacy spent, the post-market monitoring plan (EU AI Act
Art. 72) and the NIST AI RMF rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from openpfi.monitor.audit import jsonable
from openpfi.monitor.reporting.text import fmt, num

if TYPE_CHECKING:  # the ledger pulls in torch via algorithms.privacy; the report does not need it
    from openpfi.monitor.privacy.ledger import PrivacyLedger

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


def privacy_section(privacy: PrivacyLedger | Mapping | None) -> dict:
    if privacy is None:
        return {"measured": False, "rounds": [], "epsilon_total": None, "delta": None}
    data = dict(jsonable(privacy.to_dict() if hasattr(privacy, "to_dict") else dict(privacy)))
    rounds = []
    for e in data.get("rounds", []):
        e = dict(e)
        z, c = num(e.get("noise_multiplier")), num(e.get("l2_max"))
        e["noise_std_sum"] = z * c if z is not None and c is not None else None
        rounds.append(e)
    data["rounds"] = rounds
    data["measured"] = True
    data["nist"] = ["MEASURE 2.10"]
    return data


def monitoring_plan(system: dict, modes: list[dict], det: dict, evidence: dict, priv: dict) -> dict:
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
                f"{fmt(priv.get('epsilon_total'))} at delta {fmt(priv.get('delta'))}.",
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


def nist_rows(modes: list[dict]) -> list[dict]:
    rows = []
    for m in modes:
        names = [x["name"] for x in m["metrics"]] or [f"{m['id']} (not measured)"]
        for name in names:
            fns = list(m["nist"]) + (["MEASURE 3.2"] if m["status"] == "not_measured" else [])
            rows.append({"metric": name, "mode": m["id"], "functions": fns})
    rows.append({"metric": "privacy budget (epsilon, delta)", "mode": None, "functions": ["MEASURE 2.10"]})
    rows.append({"metric": "detector thresholds and alarms", "mode": None, "functions": ["MEASURE 1.1", "MEASURE 3.1"]})
    return [{**r, "descriptions": [NIST_MEASURE[f] for f in r["functions"]]} for r in rows]
